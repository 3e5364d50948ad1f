//! The handlers: extract, call the domain, shape the answer.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;

use super::error::{PicaError, PicaErrorBody};
use super::extract::{ConnectionId, PicaJson, VaultCaller};
use super::parse::{parse_catalog_query, parse_create, parse_list, parse_patch};
use super::wire::{ConnectionPage, ConnectionRow, Connector, ConnectorPage, ListParams, row};
use crate::api::AppState;

/// List connections of the secret's environment, newest first.
#[utoipa::path(get, path = "/v1/vault/connections", tag = "vault",
    params(ListParams),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "A page of connections", body = ConnectionPage),
        (status = 400, description = "Invalid filter or paging", body = PicaErrorBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn list_connections(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    RawQuery(query): RawQuery,
) -> Result<Json<ConnectionPage>, PicaError> {
    let (filter, offset, limit, page) = parse_list(query.as_deref())?;
    let (rows, total) = state
        .services
        .integrations
        .list(environment, &filter, offset, limit)
        .await?;
    Ok(Json(ConnectionPage {
        rows: rows.into_iter().map(|c| row(&state, c)).collect(),
        total,
        pages: total.div_ceil(limit as u64),
        page,
    }))
}

/// Store a credential for a platform. The credential is sealed and never returned.
#[utoipa::path(post, path = "/v1/vault/connections", tag = "vault",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "{platform, identity, identityType, name?, tags?, active?, credentials: {...}}"),
    security(("pica_secret" = [])),
    responses(
        (status = 201, description = "The new connection", body = ConnectionRow),
        (status = 400, description = "Invalid or missing field; `fields` names it", body = PicaErrorBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 413, description = "Body too large", body = PicaErrorBody),
        (status = 415, description = "Body is not application/json", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn create_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    audit: crate::api::audit::AuditSlot,
    PicaJson(body): PicaJson,
) -> Result<(StatusCode, Json<ConnectionRow>), PicaError> {
    let request = parse_create(&body)?;
    let created = state
        .services
        .integrations
        .create(environment, request)
        .await?;
    audit.target(created.id.clone());
    Ok((StatusCode::CREATED, Json(row(&state, created))))
}

/// One connection of the secret's environment.
#[utoipa::path(get, path = "/v1/vault/connections/{id}", tag = "vault",
    params(("id" = String, Path, description = "Connection id (UUID)")),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "The connection", body = ConnectionRow),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 404, description = "No such connection in this environment", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn get_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    ConnectionId(id): ConnectionId,
) -> Result<Json<ConnectionRow>, PicaError> {
    let c = state.services.integrations.get(environment, &id).await?;
    Ok(Json(row(&state, c)))
}

/// Replace `tags`, or change `name` or `active`; bumps `version`.
#[utoipa::path(patch, path = "/v1/vault/connections/{id}", tag = "vault",
    params(("id" = String, Path, description = "Connection id (UUID)")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "{tags?, name?, active?}"),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "The updated connection", body = ConnectionRow),
        (status = 400, description = "Invalid field", body = PicaErrorBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 404, description = "No such connection in this environment", body = PicaErrorBody),
        (status = 409, description = "Changed meanwhile; retry", body = PicaErrorBody),
        (status = 415, description = "Body is not application/json", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn patch_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    ConnectionId(id): ConnectionId,
    PicaJson(body): PicaJson,
) -> Result<Json<ConnectionRow>, PicaError> {
    let patch = parse_patch(&body)?;
    let c = state
        .services
        .integrations
        .patch(environment, &id, patch)
        .await?;
    Ok(Json(row(&state, c)))
}

/// Delete a connection and its sealed credential.
#[utoipa::path(delete, path = "/v1/vault/connections/{id}", tag = "vault",
    params(("id" = String, Path, description = "Connection id (UUID)")),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "Deleted; empty body"),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 404, description = "No such connection in this environment", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn delete_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    ConnectionId(id): ConnectionId,
) -> Result<StatusCode, PicaError> {
    state.services.integrations.delete(environment, &id).await?;
    Ok(StatusCode::OK)
}

/// The connector catalog, filtered and paged as Pica's is.
#[utoipa::path(get, path = "/v1/available-connectors", tag = "vault",
    params(
        ("platform" = Option<String>, Query, description = "A platform key"),
        ("key" = Option<String>, Query, description = "A connector key, like api::stripe::v1"),
        ("name" = Option<String>, Query, description = "Part of the name, in any case"),
        ("category" = Option<String>, Query, description = "A category, in any case"),
        ("authkit" = Option<bool>, Query, description = "Only platforms an end user can (true) or cannot (false) link through a connect session"),
        ("limit" = Option<u64>, Query, description = "Rows per page (default 100, at most 1000)"),
        ("page" = Option<u64>, Query, description = "From 1"),
    ),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "A page of the platforms connections can be made for", body = ConnectorPage),
        (status = 400, description = "Invalid filter or paging", body = PicaErrorBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn available_connectors(
    State(state): State<AppState>,
    _caller: VaultCaller,
    RawQuery(query): RawQuery,
) -> Result<Json<ConnectorPage>, PicaError> {
    let (filter, offset, limit, page) = parse_catalog_query(query.as_deref())?;
    let catalog = state.services.integrations.catalog();
    let found: Vec<_> = catalog.find(&filter).collect();
    let total = found.len() as u64;
    let rows = found
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|p| Connector {
            id: uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_URL,
                format!("switchboard:connector:{}", p.key).as_bytes(),
            )
            .to_string(),
            key: p.connector_key(),
            platform: p.key.clone(),
            platform_version: p.version.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            category: p.category.clone(),
            image: p.image.clone(),
            tags: vec![p.category.clone()],
            oauth: p.auth.is_oauth2(),
            status: "GA",
            version: p.version.clone(),
            active: true,
            auth_method: p.auth.kind(),
            authkit: p.linkable(),
        })
        .collect();
    Ok(Json(ConnectorPage {
        rows,
        total,
        pages: total.div_ceil(limit as u64),
        page,
    }))
}
