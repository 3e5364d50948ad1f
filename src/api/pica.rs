//! The Pica "vault connections" dialect: wire types, its error body, and thin handlers
//! over [`Integrations`](crate::domain::integration::Integrations).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, BodyError};
use crate::domain::integration::{
    CreateIntegration, Environment, IdentityType, IntegrationConnection, IntegrationError,
    ListFilter, MAX_LIST_LIMIT, Patch, iso_micros,
};

pub const SECRET_HEADER: &str = "x-pica-secret";
const DEFAULT_LIMIT: i64 = 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(get_connection, patch_connection, delete_connection))
        .routes(routes!(available_connectors))
}

/// The passthrough, apart: its bodies stream to the platform, outside the API body limit.
pub fn passthrough_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(passthrough))
}

/// `{"message": "...", "code": 400, "fields": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct PicaErrorBody {
    message: String,
    code: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PicaError {
    #[error("missing or invalid x-pica-secret")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Invalid {
        message: String,
        fields: Vec<String>,
    },
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("conflict")]
    Conflict,
    #[error("{0}")]
    Refused(&'static str),
    #[error("platform unreachable")]
    BadGateway(&'static str),
    /// The connection's OAuth2 token expired and cannot be refreshed now.
    #[error("{0}")]
    TokenRefresh(String),
    #[error("platform timeout")]
    GatewayTimeout,
    #[error("internal error")]
    Internal,
}

impl PicaError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            fields: vec![field.to_owned()],
        }
    }
}

impl IntoResponse for PicaError {
    fn into_response(self) -> Response {
        let (status, message, fields) = match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Missing or invalid x-pica-secret header: send a sk_test_... or sk_live_... secret"
                    .into(),
                vec![],
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "Connection not found".into(), vec![]),
            Self::Invalid { message, fields } => (StatusCode::BAD_REQUEST, message, fields),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json".into(),
                vec![],
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body is too large".into(),
                vec![],
            ),
            Self::Conflict => (
                StatusCode::CONFLICT,
                "The connection changed meanwhile; read it again and retry".into(),
                vec![],
            ),
            Self::Refused(why) => (StatusCode::FORBIDDEN, why.into(), vec![]),
            Self::BadGateway(why) => (StatusCode::BAD_GATEWAY, why.into(), vec![]),
            Self::TokenRefresh(why) => (
                StatusCode::BAD_GATEWAY,
                format!("The connection's access token expired and could not be refreshed: {why}"),
                vec![],
            ),
            Self::GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "The platform did not answer in time".into(),
                vec![],
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error".into(),
                vec![],
            ),
        };
        (
            status,
            Json(PicaErrorBody {
                message,
                code: status.as_u16(),
                fields,
            }),
        )
            .into_response()
    }
}

impl From<IntegrationError> for PicaError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::Invalid { fields, message } => Self::Invalid { message, fields },
            IntegrationError::NotFound => Self::NotFound,
            IntegrationError::Conflict => Self::Conflict,
            IntegrationError::Inactive => Self::Refused("The connection is not active"),
            IntegrationError::Failed => Self::Refused(
                "The connection has failed: replace its credentials (PATCH credentials) to use it again",
            ),
            IntegrationError::RefreshFailing(why) => Self::TokenRefresh(why),
            IntegrationError::Store(e) => {
                tracing::error!(error = ?e, "store failure");
                Self::Internal
            }
        }
    }
}

/// A header's value, trimmed; `None` when absent, empty or not text.
fn header_text(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A caller holding a vault secret: the environment it may see.
pub struct VaultCaller(pub Environment);

impl FromRequestParts<AppState> for VaultCaller {
    type Rejection = PicaError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PicaError> {
        let secret = header_text(&parts.headers, SECRET_HEADER).ok_or(PicaError::Unauthorized)?;
        state
            .services
            .vault_secrets
            .authenticate(&secret)
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "vault secret lookup failed");
                PicaError::Internal
            })?
            .map(Self)
            .ok_or(PicaError::Unauthorized)
    }
}

pub struct PicaJson(pub Map<String, Value>);

impl FromRequest<AppState> for PicaJson {
    type Rejection = PicaError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PicaError> {
        super::json_object(req, state)
            .await
            .map(Self)
            .map_err(|e| match e {
                BodyError::NotJson => PicaError::UnsupportedMediaType,
                BodyError::TooLarge => PicaError::PayloadTooLarge,
                BodyError::Malformed(detail) => {
                    PicaError::invalid("body", format!("Malformed JSON in request body: {detail}"))
                }
            })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRow {
    id: String,
    platform_version: String,
    name: Option<String>,
    #[serde(rename = "type")]
    #[schema(example = "api")]
    kind: &'static str,
    key: String,
    environment: &'static str,
    platform: String,
    identity: String,
    identity_type: &'static str,
    description: String,
    state: &'static str,
    tags: Vec<String>,
    version: String,
    active: bool,
    #[schema(example = "2025-07-19T16:19:29.702632Z")]
    created_at: String,
    /// Switchboard's own: how the credential has fared (not in Pica's API).
    health: HealthView,
}

/// Refresh attempts and the last error of a connection; times in ISO 8601.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// Token requests made for this connection (OAuth2), successful or not.
    refresh_attempts: i64,
    /// Failed refreshes since the last success or the last new credential.
    consecutive_failures: i64,
    last_error: Option<String>,
    last_error_at: Option<String>,
    last_refresh_at: Option<String>,
    /// When the OAuth2 access token expires.
    access_token_expires_at: Option<String>,
    /// When the token will be refreshed next (ahead of expiry, or a retry).
    next_refresh_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionPage {
    rows: Vec<ConnectionRow>,
    total: u64,
    pages: u64,
    page: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connector {
    platform: String,
    name: String,
    description: String,
    auth_method: &'static str,
    version: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectorPage {
    rows: Vec<Connector>,
    total: u64,
    pages: u64,
    page: u64,
}

fn row(state: &AppState, c: IntegrationConnection) -> ConnectionRow {
    let description = state
        .services
        .integrations
        .platform(&c.platform)
        .map(|p| p.description.clone())
        .unwrap_or_default();
    let next_refresh_at = state
        .services
        .integrations
        .oauth()
        .next_refresh_at(&c)
        .map(iso_micros);
    let h = &c.health;
    let health = HealthView {
        refresh_attempts: h.refresh_attempts,
        consecutive_failures: h.consecutive_failures,
        last_error: h.last_error.clone(),
        last_error_at: h.last_error_at.map(iso_micros),
        last_refresh_at: h.last_refresh_at.map(iso_micros),
        access_token_expires_at: h.expires_at.map(iso_micros),
        next_refresh_at,
    };
    ConnectionRow {
        health,
        created_at: c.created_at_iso(),
        id: c.id,
        platform_version: c.platform_version,
        name: c.name,
        kind: "api",
        key: c.key,
        environment: c.environment.as_str(),
        platform: c.platform,
        identity: c.identity,
        identity_type: c.identity_type.as_str(),
        description,
        state: c.state.as_str(),
        tags: c.tags,
        version: c.version,
        active: c.active,
    }
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListParams {
    /// Comma-separated connection keys (`keys` is accepted too).
    key: Option<String>,
    platformVersion: Option<String>,
    name: Option<String>,
    /// user | team | organization | project
    identityType: Option<String>,
    identity: Option<String>,
    platform: Option<String>,
    /// Comma-separated; a row must carry every one.
    tags: Option<String>,
    /// Default true.
    active: Option<bool>,
    /// Default 20, at most 1000.
    limit: Option<i64>,
    /// From 1; default 1.
    page: Option<i64>,
    /// An offset, instead of `page`.
    skip: Option<i64>,
}

fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The filter, offset, limit and reported page of a list call.
fn parse_list(query: Option<&str>) -> Result<(ListFilter, i64, i64, u64), PicaError> {
    let mut filter = ListFilter {
        active: true,
        ..ListFilter::default()
    };
    let mut limit = DEFAULT_LIMIT;
    let mut page: Option<i64> = None;
    let mut skip: Option<i64> = None;
    let int = |name: &str, v: &str, min: i64| {
        v.parse::<i64>().ok().filter(|n| *n >= min).ok_or_else(|| {
            PicaError::invalid(
                name,
                format!("{name} must be an integer of at least {min}, got '{v}'"),
            )
        })
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.as_ref() {
            "key" | "keys" => filter.keys.extend(comma_list(v)),
            "platformVersion" => filter.platform_version = Some(v.to_owned()),
            "name" => filter.name = Some(v.to_owned()),
            "identityType" => {
                filter.identity_type = Some(IdentityType::parse(v).ok_or_else(|| {
                    PicaError::invalid(
                        "identityType",
                        format!(
                            "identityType must be user, team, organization or project, got '{v}'"
                        ),
                    )
                })?)
            }
            "identity" => filter.identity = Some(v.to_owned()),
            "platform" => filter.platform = Some(v.to_owned()),
            "tags" => filter.tags.extend(comma_list(v)),
            "active" => {
                filter.active = match v {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(PicaError::invalid(
                            "active",
                            format!("active must be true or false, got '{v}'"),
                        ));
                    }
                }
            }
            "limit" => {
                limit = int("limit", v, 1)?;
                if limit > MAX_LIST_LIMIT {
                    return Err(PicaError::invalid(
                        "limit",
                        format!("limit must be at most {MAX_LIST_LIMIT}"),
                    ));
                }
            }
            "page" => page = Some(int("page", v, 1)?),
            "skip" => skip = Some(int("skip", v, 0)?),
            _ => {}
        }
    }
    let (offset, reported_page) = match (skip, page) {
        (Some(skip), _) => (skip, (skip / limit + 1) as u64),
        (None, Some(page)) => (page.saturating_sub(1).saturating_mul(limit), page as u64),
        (None, None) => (0, 1),
    };
    Ok((filter, offset, limit, reported_page))
}

/// List connections of the secret's environment, newest first.
#[utoipa::path(get, path = "/v1/vault/connections", tag = "vault",
    params(ListParams),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "A page of connections", body = ConnectionPage),
        (status = 400, description = "Invalid filter or paging", body = PicaErrorBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
    ))]
async fn list_connections(
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

fn credential_map(map: &Map<String, Value>) -> Result<BTreeMap<String, SecretString>, PicaError> {
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), SecretString::from(s.clone()))),
            Value::Number(n) => Ok((k.clone(), SecretString::from(n.to_string()))),
            _ => Err(PicaError::invalid(
                &format!("credentials.{k}"),
                format!("credentials.{k} must be a string"),
            )),
        })
        .collect()
}

fn parse_create(body: &Map<String, Value>) -> Result<CreateIntegration, PicaError> {
    let text = |name: &str| -> Result<Option<String>, PicaError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(PicaError::invalid(name, format!("{name} must be a string"))),
        }
    };
    let required = |name: &str| {
        text(name)?.ok_or_else(|| PicaError::invalid(name, format!("{name} is required")))
    };
    let identity_type = required("identityType")?;
    let tags = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|t| t.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| PicaError::invalid("tags", "tags must be an array of strings"))?,
    };
    let active = match body.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(PicaError::invalid("active", "active must be a boolean")),
    };
    let credentials = match body.get("credentials") {
        Some(Value::Object(map)) => credential_map(map)?,
        None | Some(Value::Null) => {
            return Err(PicaError::invalid("credentials", "credentials is required"));
        }
        Some(_) => {
            return Err(PicaError::invalid(
                "credentials",
                "credentials must be an object",
            ));
        }
    };
    Ok(CreateIntegration {
        platform: required("platform")?,
        identity: required("identity")?,
        identity_type: IdentityType::parse(&identity_type).ok_or_else(|| {
            PicaError::invalid(
                "identityType",
                "identityType must be user, team, organization or project",
            )
        })?,
        name: text("name")?,
        tags,
        active,
        credentials,
    })
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
    ))]
async fn create_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    PicaJson(body): PicaJson,
) -> Result<(StatusCode, Json<ConnectionRow>), PicaError> {
    let request = parse_create(&body)?;
    let created = state
        .services
        .integrations
        .create(environment, request)
        .await?;
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
    ))]
async fn get_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    Path(id): Path<String>,
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
    ))]
async fn patch_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    Path(id): Path<String>,
    PicaJson(body): PicaJson,
) -> Result<Json<ConnectionRow>, PicaError> {
    let mut patch = Patch::default();
    for (k, v) in &body {
        match (k.as_str(), v) {
            ("tags", Value::Array(items)) => {
                patch.tags = Some(
                    items
                        .iter()
                        .map(|t| t.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            PicaError::invalid("tags", "tags must be an array of strings")
                        })?,
                )
            }
            ("name", Value::String(n)) => patch.name = Some(Some(n.clone())),
            ("name", Value::Null) => patch.name = Some(None),
            ("active", Value::Bool(a)) => patch.active = Some(*a),
            ("credentials", Value::Object(map)) => patch.credentials = Some(credential_map(map)?),
            ("tags" | "name" | "active", _) => {
                return Err(PicaError::invalid(k, format!("{k} has the wrong type")));
            }
            _ => {
                return Err(PicaError::invalid(
                    k,
                    format!("{k} cannot be changed; use tags, name or active"),
                ));
            }
        }
    }
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
    ))]
async fn delete_connection(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, PicaError> {
    state.services.integrations.delete(environment, &id).await?;
    Ok(StatusCode::OK)
}

/// The connector catalog.
#[utoipa::path(get, path = "/v1/available-connectors", tag = "vault",
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "Every platform connections can be made for", body = ConnectorPage),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
    ))]
async fn available_connectors(
    State(state): State<AppState>,
    _caller: VaultCaller,
) -> Json<ConnectorPage> {
    let rows: Vec<Connector> = state
        .services
        .integrations
        .catalog()
        .platforms()
        .iter()
        .map(|p| Connector {
            platform: p.key.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            auth_method: p.auth.kind(),
            version: p.version.clone(),
        })
        .collect();
    let total = rows.len() as u64;
    Json(ConnectorPage {
        rows,
        total,
        pages: 1,
        page: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_by_page_or_skip() {
        let (_, offset, limit, page) = parse_list(Some("limit=50&page=3")).unwrap();
        assert_eq!((offset, limit, page), (100, 50, 3));
        let (_, offset, _, page) = parse_list(Some("limit=50&skip=120")).unwrap();
        assert_eq!((offset, page), (120, 3));
        let (f, offset, limit, page) = parse_list(None).unwrap();
        assert_eq!((offset, limit, page, f.active), (0, 20, 1, true));
        for bad in [
            "limit=0",
            "limit=1001",
            "page=0",
            "skip=-1",
            "active=yes",
            "identityType=robot",
            "limit=x",
        ] {
            assert!(parse_list(Some(bad)).is_err(), "{bad}");
        }
        let (f, ..) = parse_list(Some("keys=a,b&key=c&tags=x,%20y&active=false")).unwrap();
        assert_eq!(f.keys, ["a", "b", "c"]);
        assert_eq!(f.tags, ["x", "y"]);
        assert!(!f.active);
    }
}

/// Call the connection's platform: `{path}` is appended to the platform's base URL and the
/// stored credential is injected; the platform's status, headers and body come back.
#[utoipa::path(method(get, post, put, patch, delete), path = "/v1/passthrough/{*path}", tag = "vault",
    params(
        ("path" = String, Path, description = "Path on the platform's API"),
        ("x-pica-connection-key" = String, Header, description = "The connection's key"),
    ),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "Whatever the platform answered, status and body unchanged"),
        (status = 400, description = "Missing connection key, or a path outside the platform", body = PicaErrorBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 403, description = "Inactive or failed connection, or a private address", body = PicaErrorBody),
        (status = 404, description = "No such connection in this environment", body = PicaErrorBody),
        (status = 502, description = "Platform unreachable, or an expired OAuth2 token that cannot be refreshed now", body = PicaErrorBody),
        (status = 504, description = "Platform too slow", body = PicaErrorBody),
    ))]
async fn passthrough(
    State(state): State<AppState>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, PicaError> {
    use crate::net::outbound::OutboundError;
    use crate::passthrough::{CONNECTION_KEY_HEADER, ForwardError, PassthroughError};
    let secret = header_text(request.headers(), SECRET_HEADER).ok_or(PicaError::Unauthorized)?;
    let key = header_text(request.headers(), CONNECTION_KEY_HEADER).ok_or_else(|| {
        PicaError::invalid(
            CONNECTION_KEY_HEADER,
            "the x-pica-connection-key header is required",
        )
    })?;
    state
        .services
        .passthrough
        .forward(&secret, &key, &path, query.as_deref(), request)
        .await
        .map_err(|e| match e {
            ForwardError::Unauthorized => PicaError::Unauthorized,
            ForwardError::Connection(e) => e.into(),
            ForwardError::ClientBody => {
                PicaError::invalid("body", "the request body could not be read")
            }
            ForwardError::Platform(PassthroughError::OutsidePlatform) => {
                PicaError::invalid("path", "the path would leave the platform's API")
            }
            ForwardError::Platform(PassthroughError::Outbound(OutboundError::PrivateAddress)) => PicaError::Refused(
                "The platform resolves to a private address; set allow_private_network to allow it",
            ),
            ForwardError::Platform(PassthroughError::Outbound(OutboundError::Unreachable)) => {
                PicaError::BadGateway("The platform is unreachable")
            }
            ForwardError::Platform(PassthroughError::Outbound(OutboundError::Timeout)) => PicaError::GatewayTimeout,
        })
}
