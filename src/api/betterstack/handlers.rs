//! The handlers: extract, call the domain, shape the answer.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::extract::{ConnectionId, GlobalToken, JsonObject, OptionalJsonObject};
use super::parse::{
    DEFAULT_PER_PAGE, parse_audit_filter, parse_create_checked, parse_list_query, parse_rotate,
    parse_update,
};
use super::wire::{
    AuditEventList, AuditParams, ConnectionEnvelope, ConnectionList, CreateConnectionBody,
    ListParams, Pagination, View, resource,
};
use crate::api::AppState;
use crate::api::audit::AuditSlot;
use crate::domain::pagination::{PageLinks, PageRequest};

fn page_link(state: &AppState, page: u64, size: u64) -> String {
    link_to(state, "/api/v1/connections?", page, size)
}

/// A page's link: `path_and_query` ends with `?` or `&`.
fn link_to(state: &AppState, path_and_query: &str, page: u64, size: u64) -> String {
    let base = &state.services.public_url;
    if size == DEFAULT_PER_PAGE {
        format!("{base}{path_and_query}page={page}")
    } else {
        format!("{base}{path_and_query}page={page}&per_page={size}")
    }
}

pub(super) fn pagination(
    links: PageLinks,
    size: u64,
    link: impl Fn(u64, u64) -> String,
) -> Pagination {
    Pagination {
        first: link(links.first, size),
        last: link(links.last, size),
        prev: links.prev.map(|p| link(p, size)),
        next: links.next.map(|p| link(p, size)),
    }
}

/// A filtered listing's page links (at `path`), keeping the filters of `query`.
pub(super) fn filtered_pagination(
    state: &AppState,
    path: &str,
    query: Option<&str>,
    page: PageRequest,
    total: u64,
) -> Pagination {
    let kept: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .filter(|(k, _)| k != "page" && k != "per_page"),
        )
        .finish();
    let prefix = if kept.is_empty() {
        format!("{path}?")
    } else {
        format!("{path}?{kept}&")
    };
    pagination(PageLinks::new(page, total), page.size, |p, size| {
        link_to(state, &prefix, p, size)
    })
}

/// List connections, oldest first.
#[utoipa::path(get, path = "/api/v1/connections", tag = "connections",
    params(ListParams),
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "A page of connections", body = ConnectionList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 422, description = "Invalid page or per_page", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn list_connections(
    State(state): State<AppState>,
    _caller: GlobalToken,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let page = parse_list_query(query.as_deref())?;
    let (rows, total) = state.services.data_connections.list(page);
    let pagination = pagination(PageLinks::new(page, total), page.size, |p, size| {
        page_link(&state, p, size)
    });
    let data = rows
        .iter()
        .map(|c| resource(&state, c, View::ListItem))
        .collect();
    Ok(Json(ConnectionList { data, pagination }).into_response())
}

/// Create a connection. The response is the only one that ever contains the password.
#[utoipa::path(post, path = "/api/v1/connections", tag = "connections",
    request_body(content = CreateConnectionBody, content_type = "application/json"),
    security(("bearer_token" = [])),
    responses(
        (status = 201, description = "The new connection, with its password", body = ConnectionEnvelope),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid field; `invalid_attributes` names it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn create_connection(
    State(state): State<AppState>,
    GlobalToken(caller): GlobalToken,
    audit: AuditSlot,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let service = &state.services.data_connections;
    let request = parse_create_checked(&body, |draft| {
        service.check_fields(
            draft.data_region.as_deref(),
            &draft.teams,
            draft.valid_until,
            draft.note.as_deref(),
        )
    })?;
    let created = service.create(&caller, request).await?;
    audit.target(created.connection.id.to_string());
    let data = resource(
        &state,
        &created.connection,
        View::Created(&created.password),
    );
    Ok((StatusCode::CREATED, Json(ConnectionEnvelope { data })).into_response())
}

/// Get one connection, with its sample query and data sources.
#[utoipa::path(get, path = "/api/v1/connections/{id}", tag = "connections",
    params(("id" = i64, Path, description = "Connection id")),
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "The connection", body = ConnectionEnvelope),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn get_connection(
    State(state): State<AppState>,
    _caller: GlobalToken,
    ConnectionId(id): ConnectionId,
) -> Result<Response, ApiError> {
    let connection = state.services.data_connections.get(id).await?;
    Ok(Json(ConnectionEnvelope {
        data: resource(&state, &connection, View::Detail),
    })
    .into_response())
}

/// Delete a connection; its credentials stop working at once.
#[utoipa::path(delete, path = "/api/v1/connections/{id}", tag = "connections",
    params(("id" = i64, Path, description = "Connection id")),
    security(("bearer_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn delete_connection(
    State(state): State<AppState>,
    _caller: GlobalToken,
    ConnectionId(id): ConnectionId,
) -> Result<StatusCode, ApiError> {
    state.services.data_connections.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change a connection in place: `note`, `valid_until` (later or sooner, not past; null:
/// never expires) and `ip_allowlist`. Every gateway follows within a second. Team and
/// region are fixed for life (422 naming the field).
#[utoipa::path(patch, path = "/api/v1/connections/{id}", tag = "connections",
    params(("id" = i64, Path, description = "Connection id")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "{note?, valid_until?, ip_allowlist?}"),
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "The connection as it is now", body = ConnectionEnvelope),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid or unchangeable field; `invalid_attributes` names it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn update_connection(
    State(state): State<AppState>,
    _caller: GlobalToken,
    ConnectionId(id): ConnectionId,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let update = parse_update(&body)?;
    let connection = state.services.data_connections.update(id, update).await?;
    Ok(Json(ConnectionEnvelope {
        data: resource(&state, &connection, View::Detail),
    })
    .into_response())
}

/// Give a connection a new password, returned once as create returns it. The old one
/// keeps working for `overlap_seconds` (default 0, at most 604800), then stops.
#[utoipa::path(post, path = "/api/v1/connections/{id}/rotate-password", tag = "connections",
    params(("id" = i64, Path, description = "Connection id")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "Optional: {overlap_seconds}"),
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "The connection with its new password", body = ConnectionEnvelope),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid overlap_seconds", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn rotate_password(
    State(state): State<AppState>,
    _caller: GlobalToken,
    ConnectionId(id): ConnectionId,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Response, ApiError> {
    let overlap = parse_rotate(body.as_ref())?;
    let rotated = state
        .services
        .data_connections
        .rotate_password(id, overlap)
        .await?;
    let data = resource(
        &state,
        &rotated.connection,
        View::Created(&rotated.password),
    );
    Ok(Json(ConnectionEnvelope { data }).into_response())
}

/// The audit log, newest first: every change made through the API, the console or the
/// command line, and every refused authentication.
#[utoipa::path(get, path = "/api/v1/audit-events", tag = "audit",
    params(AuditParams),
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "A page of events", body = AuditEventList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 422, description = "Invalid filter or page; `invalid_attributes` names it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn list_audit_events(
    State(state): State<AppState>,
    _caller: GlobalToken,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditEventList>, ApiError> {
    let page = parse_list_query(query.as_deref())?;
    let filter = parse_audit_filter(query.as_deref())?;
    let (events, total) = match page.offset() {
        Some(offset) => {
            state
                .services
                .audit
                .list(&filter, offset, page.limit())
                .await?
        }
        None => (Vec::new(), 0),
    };
    Ok(Json(AuditEventList {
        data: events.into_iter().map(Into::into).collect(),
        pagination: filtered_pagination(
            &state,
            "/api/v1/audit-events",
            query.as_deref(),
            page,
            total,
        ),
    }))
}
