//! The Better Stack Telemetry "connections" dialect: wire types, its error body, and thin
//! handlers over [`DataConnections`](crate::domain::data_connection::DataConnections).

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, BodyError};
use crate::domain::allowlist::{AllowEntry, IpAllowlist};
use crate::domain::data_connection::{
    ClientType, CreateDataConnection, DataConnection, DataConnectionError, TeamSelector,
};
use crate::domain::pagination::{PageLinks, PageRequest};
use crate::domain::time::Timestamp;
use crate::domain::token::{Principal, TokenScope};

pub const DEFAULT_PER_PAGE: u64 = 50;
pub const MAX_PER_PAGE: u64 = 250;
const NOT_FOUND_MESSAGE: &str = "Resource with the provided ID was not found";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(get_connection, delete_connection))
}

// ---------------------------------------------------------------------------------------
// Errors

/// `{"errors": "...", "invalid_attributes": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    errors: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    invalid_attributes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API token")]
    Unauthorized,
    #[error("team token used on a global endpoint")]
    Forbidden,
    #[error("resource not found")]
    NotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("{message}")]
    Invalid {
        message: String,
        fields: Vec<&'static str>,
    },
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            fields: vec![field],
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (errors, invalid_attributes) = match self {
            Self::Unauthorized => (
                "Invalid or missing API token. Send `Authorization: Bearer $TOKEN`.".into(),
                vec![],
            ),
            Self::Forbidden => (
                "This endpoint requires a global API token, not a team token.".into(),
                vec![],
            ),
            Self::NotFound => (NOT_FOUND_MESSAGE.into(), vec![]),
            Self::RouteNotFound => ("Not found".into(), vec![]),
            Self::Invalid { message, fields } => {
                (message, fields.into_iter().map(String::from).collect())
            }
            Self::MalformedBody(detail) => {
                (format!("Malformed JSON in request body: {detail}"), vec![])
            }
            Self::PayloadTooLarge => ("Request body is too large".into(), vec![]),
            Self::UnsupportedMediaType => ("Content-Type must be application/json".into(), vec![]),
            // The cause was logged where it happened; the client learns nothing internal.
            Self::Internal => ("Internal server error".into(), vec![]),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                errors,
                invalid_attributes,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<DataConnectionError> for ApiError {
    fn from(e: DataConnectionError) -> Self {
        match e {
            DataConnectionError::Invalid { field, message } => Self::invalid(field, message),
            DataConnectionError::NotFound => Self::NotFound,
            DataConnectionError::Store(e) => {
                tracing::error!(error = ?e, "store failure");
                Self::Internal
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Extractors

/// A caller holding a global API token.
pub struct GlobalToken(pub Principal);

impl FromRequestParts<AppState> for GlobalToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let principal = state
            .services
            .tokens
            .authenticate(token)
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "token lookup failed");
                ApiError::Internal
            })?
            .ok_or(ApiError::Unauthorized)?;
        match principal.scope {
            TokenScope::Global => Ok(Self(principal)),
            TokenScope::Team(_) => Err(ApiError::Forbidden),
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A JSON object body, with every failure mapped to this dialect's error body.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        super::json_object(req, state)
            .await
            .map(Self)
            .map_err(|e| match e {
                BodyError::NotJson => ApiError::UnsupportedMediaType,
                BodyError::TooLarge => ApiError::PayloadTooLarge,
                BodyError::Malformed(detail) => ApiError::MalformedBody(detail),
            })
    }
}

// ---------------------------------------------------------------------------------------
// Wire types

/// A secret shown to its owner exactly once; redacted from `Debug`.
pub struct RevealedSecret(SecretString);

impl Serialize for RevealedSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedBy {
    id: i64,
    email: String,
}

#[derive(Serialize, ToSchema)]
pub struct DataSourceEntry {
    source_name: String,
    source_id: i64,
    team_name: String,
    /// Table expressions to use in `FROM` through the gateway.
    data_sources: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionAttributes {
    id: i64,
    #[schema(example = "clickhouse")]
    client_type: &'static str,
    note: Option<String>,
    #[schema(example = "2025-11-07T13:20:55.652Z")]
    created_at: String,
    valid_until: Option<String>,
    host: String,
    port: u16,
    username: String,
    /// Present only in the create response.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    password: Option<RevealedSecret>,
    #[schema(example = "eu-nbg-2")]
    data_region: String,
    ip_allowlist: Vec<String>,
    team_ids: Vec<i64>,
    team_names: Vec<String>,
    created_by: Option<CreatedBy>,
    /// Present on create and get.
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_query: Option<String>,
    /// Present on create and get.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_sources: Option<Vec<DataSourceEntry>>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionResource {
    /// The id as a string, JSON:API style.
    id: String,
    #[serde(rename = "type")]
    #[schema(example = "connection")]
    kind: &'static str,
    attributes: ConnectionAttributes,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionEnvelope {
    data: ConnectionResource,
}

#[derive(Serialize, ToSchema)]
pub struct Pagination {
    first: String,
    last: String,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionList {
    data: Vec<ConnectionResource>,
    pagination: Pagination,
}

/// Body of `POST /api/v1/connections` (documentation; parsing is field by field so each
/// error can name its field).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateConnectionBody {
    /// Only `clickhouse`.
    client_type: String,
    /// Team names; not together with `team_ids`.
    team_names: Option<Vec<String>>,
    /// Team ids; not together with `team_names`.
    team_ids: Option<Vec<i64>>,
    /// A configured region name (or id).
    data_region: Option<String>,
    /// IPv4/IPv6 addresses or CIDR ranges.
    ip_allowlist: Option<Vec<String>>,
    /// ISO 8601 timestamp.
    valid_until: Option<String>,
    note: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Page number, from 1.
    page: Option<u64>,
    /// Items per page: default 50, at most 250 (larger values are capped).
    per_page: Option<u64>,
}

/// Which optional views of a connection a response carries.
enum View<'a> {
    ListItem,
    Detail,
    Created(&'a SecretString),
}

fn resource(state: &AppState, c: DataConnection, view: View<'_>) -> ConnectionResource {
    let service = &state.services.data_connections;
    let teams = service.teams_of(&c);
    let (sample_query, data_sources, password) = match view {
        View::ListItem => (None, None, None),
        View::Detail | View::Created(_) => {
            let password = match &view {
                View::Created(p) => Some(*p),
                _ => None,
            };
            let sources = service
                .data_sources(&c)
                .into_iter()
                .map(|g| DataSourceEntry {
                    source_name: g.source_name,
                    source_id: g.source_id,
                    team_name: g.team_name,
                    data_sources: g.tables,
                })
                .collect();
            (
                Some(service.sample_query(&c, password.map(|p| p.expose_secret()))),
                Some(sources),
                password.map(|p| RevealedSecret(p.clone())),
            )
        }
    };
    let team_ids = teams.iter().map(|t| t.id).collect();
    let team_names = teams.iter().map(|t| t.name.clone()).collect();
    ConnectionResource {
        id: c.id.to_string(),
        kind: "connection",
        attributes: ConnectionAttributes {
            id: c.id,
            client_type: c.client_type.as_str(),
            note: c.note,
            created_at: c.created_at.to_iso8601_millis(),
            valid_until: c.valid_until.map(Timestamp::to_iso8601_millis),
            host: c.host,
            port: c.port,
            username: c.username,
            password,
            data_region: c.region_id,
            ip_allowlist: c.ip_allowlist.to_strings(),
            team_ids,
            team_names,
            created_by: c.created_by.map(|u| CreatedBy {
                id: u.id,
                email: u.email,
            }),
            sample_query,
            data_sources,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Input parsing: each failure names its field.

fn parse_list_query(query: Option<&str>) -> Result<PageRequest, ApiError> {
    let mut number = 1;
    let mut size = DEFAULT_PER_PAGE;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.trim();
        match key.as_ref() {
            "page" if !value.is_empty() => {
                number = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "page",
                            format!("page must be a positive integer, got '{value}'"),
                        )
                    })?;
            }
            "per_page" if !value.is_empty() => {
                size = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "per_page",
                            format!("per_page must be an integer from 1 to {MAX_PER_PAGE}, got '{value}'"),
                        )
                    })?
                    .min(MAX_PER_PAGE);
            }
            _ => {}
        }
    }
    Ok(PageRequest { number, size })
}

/// Collects every field error of a body, so one response lists them all.
#[derive(Default)]
struct FieldErrors {
    messages: Vec<String>,
    fields: Vec<&'static str>,
}

impl FieldErrors {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.messages.push(message.into());
        if !self.fields.contains(&field) {
            self.fields.push(field);
        }
    }

    fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, ApiError> {
        if self.messages.is_empty() {
            Ok(value())
        } else {
            Err(ApiError::Invalid {
                message: self.messages.join("; "),
                fields: self.fields,
            })
        }
    }
}

/// A present, non-null field.
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

fn string_field(
    body: &Map<String, Value>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<String> {
    match field(body, name)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.add(name, format!("{name} must be a string"));
            None
        }
    }
}

fn string_array(
    body: &Map<String, Value>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<Vec<String>> {
    let items = field(body, name)?;
    let parsed = items.as_array().and_then(|a| {
        a.iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
    });
    if parsed.is_none() {
        errors.add(name, format!("{name} must be an array of strings"));
    }
    parsed
}

fn parse_create(body: &Map<String, Value>) -> Result<CreateDataConnection, ApiError> {
    let mut errors = FieldErrors::default();

    let client_type = match field(body, "client_type") {
        None => {
            errors.add("client_type", "client_type is required; use \"clickhouse\"");
            None
        }
        Some(Value::String(s)) => {
            let parsed = ClientType::parse(s);
            if parsed.is_none() {
                errors.add(
                    "client_type",
                    format!("client_type '{s}' is not supported; the only supported value is \"clickhouse\""),
                );
            }
            parsed
        }
        Some(_) => {
            errors.add("client_type", "client_type must be a string");
            None
        }
    };

    let team_names = string_array(body, "team_names", &mut errors);
    let team_ids = field(body, "team_ids").and_then(|v| {
        let parsed = v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>());
        if parsed.is_none() {
            errors.add("team_ids", "team_ids must be an array of integers");
        }
        parsed
    });
    let teams = match (team_names, team_ids) {
        (Some(_), Some(_)) => {
            errors
                .messages
                .push("Cannot specify both team_names and team_ids".into());
            errors.fields.extend(["team_names", "team_ids"]);
            TeamSelector::Unspecified
        }
        (Some(names), None) => TeamSelector::Names(names),
        (None, Some(ids)) => TeamSelector::Ids(ids),
        (None, None) => TeamSelector::Unspecified,
    };

    let data_region = string_field(body, "data_region", &mut errors);

    let mut allow_entries = Vec::new();
    for entry in string_array(body, "ip_allowlist", &mut errors).unwrap_or_default() {
        match entry.parse::<AllowEntry>() {
            Ok(e) => allow_entries.push(e),
            Err(e) => errors.add("ip_allowlist", format!("ip_allowlist: {e}")),
        }
    }

    let valid_until = string_field(body, "valid_until", &mut errors).and_then(|s| {
        let parsed = Timestamp::parse_iso8601(&s);
        if parsed.is_none() {
            errors.add(
                "valid_until",
                format!(
                    "valid_until: '{s}' is not an ISO 8601 timestamp like 2025-12-02T00:00:00Z"
                ),
            );
        }
        parsed
    });

    let note = string_field(body, "note", &mut errors);

    errors.into_result(|| CreateDataConnection {
        client_type: client_type.expect("checked: no errors means client_type parsed"),
        teams,
        data_region,
        ip_allowlist: IpAllowlist::new(allow_entries),
        valid_until,
        note,
    })
}

/// Ids in paths are integers; anything else names no resource.
fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| ApiError::NotFound)
}

fn page_link(state: &AppState, page: u64, size: u64) -> String {
    let base = &state.services.public_url;
    if size == DEFAULT_PER_PAGE {
        format!("{base}/api/v1/connections?page={page}")
    } else {
        format!("{base}/api/v1/connections?page={page}&per_page={size}")
    }
}

// ---------------------------------------------------------------------------------------
// Handlers

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
    ))]
async fn list_connections(
    State(state): State<AppState>,
    _caller: GlobalToken,
    RawQuery(query): RawQuery,
) -> Result<Json<ConnectionList>, ApiError> {
    let page = parse_list_query(query.as_deref())?;
    let (rows, total) = state.services.data_connections.list(page).await?;
    let links = PageLinks::new(page, total);
    let pagination = Pagination {
        first: page_link(&state, links.first, page.size),
        last: page_link(&state, links.last, page.size),
        prev: links.prev.map(|p| page_link(&state, p, page.size)),
        next: links.next.map(|p| page_link(&state, p, page.size)),
    };
    let data = rows
        .into_iter()
        .map(|c| resource(&state, c, View::ListItem))
        .collect();
    Ok(Json(ConnectionList { data, pagination }))
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
    ))]
async fn create_connection(
    State(state): State<AppState>,
    GlobalToken(caller): GlobalToken,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<ConnectionEnvelope>), ApiError> {
    let request = parse_create(&body)?;
    let created = state
        .services
        .data_connections
        .create(&caller, request)
        .await?;
    let data = resource(&state, created.connection, View::Created(&created.password));
    Ok((StatusCode::CREATED, Json(ConnectionEnvelope { data })))
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
    ))]
async fn get_connection(
    State(state): State<AppState>,
    _caller: GlobalToken,
    Path(id): Path<String>,
) -> Result<Json<ConnectionEnvelope>, ApiError> {
    let connection = state.services.data_connections.get(parse_id(&id)?).await?;
    Ok(Json(ConnectionEnvelope {
        data: resource(&state, connection, View::Detail),
    }))
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
    ))]
async fn delete_connection(
    State(state): State<AppState>,
    _caller: GlobalToken,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .services
        .data_connections
        .delete(parse_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn invalid_fields(v: Value) -> Vec<&'static str> {
        match parse_create(&body(v)) {
            Err(ApiError::Invalid { fields, .. }) => fields,
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(invalid_fields(json!({})), ["client_type"]);
        assert_eq!(
            invalid_fields(json!({"client_type": "mysql"})),
            ["client_type"]
        );
        assert_eq!(invalid_fields(json!({"client_type": 1})), ["client_type"]);
        assert_eq!(
            invalid_fields(
                json!({"client_type": "clickhouse", "team_names": ["a"], "team_ids": [1]})
            ),
            ["team_names", "team_ids"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "team_ids": ["1"]})),
            ["team_ids"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "team_names": "a"})),
            ["team_names"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "ip_allowlist": ["10.0.0.1/33"]})),
            ["ip_allowlist"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "ip_allowlist": "10.0.0.1"})),
            ["ip_allowlist"]
        );
        assert_eq!(
            invalid_fields(
                json!({"client_type": "clickhouse", "valid_until": "2025-13-45T00:00:00Z"})
            ),
            ["valid_until"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "note": 5})),
            ["note"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "data_region": []})),
            ["data_region"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "x", "note": 5, "valid_until": "no"})),
            ["client_type", "valid_until", "note"]
        );
    }

    #[test]
    fn nulls_are_absent_fields() {
        let parsed = parse_create(&body(json!({
            "client_type": "clickhouse", "note": null, "team_ids": null, "team_names": ["A"],
            "ip_allowlist": null, "valid_until": null, "data_region": null
        })))
        .unwrap();
        assert_eq!(parsed.teams, TeamSelector::Names(vec!["A".into()]));
        assert!(parsed.note.is_none() && parsed.valid_until.is_none());
    }

    #[test]
    fn list_query_rules() {
        let p = |q: &str| parse_list_query(Some(q));
        assert_eq!(
            p("").unwrap(),
            PageRequest {
                number: 1,
                size: 50
            }
        );
        assert_eq!(
            p("page=3&per_page=1").unwrap(),
            PageRequest { number: 3, size: 1 }
        );
        assert_eq!(p("per_page=251").unwrap().size, 250);
        assert_eq!(p("per_page=250").unwrap().size, 250);
        for bad in [
            "per_page=0",
            "per_page=abc",
            "page=0",
            "page=-1",
            "page=abc",
            "per_page=1.5",
        ] {
            assert!(matches!(p(bad), Err(ApiError::Invalid { .. })), "{bad}");
        }
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }
}
