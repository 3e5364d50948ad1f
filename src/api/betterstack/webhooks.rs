//! Webhook endpoints and their deliveries, under `/api/v1/` (global token): the wire
//! types, reading requests and the handlers over
//! [`Webhooks`](crate::domain::webhook::Webhooks).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ConnectionId, GlobalToken, JsonObject};
use super::handlers::filtered_pagination;
use super::parse::parse_list_query;
use super::wire::Pagination;
use crate::api::AppState;
use crate::api::audit::AuditSlot;
use crate::domain::echo::echo;
use crate::domain::time::Timestamp;
use crate::domain::webhook::{
    Attempt, Delivery, DeliveryFilter, DeliveryState, Endpoint, EventType, WebhookError,
};

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { field, message } => Self::invalid(field, message),
            WebhookError::NotFound => Self::NotFound,
            WebhookError::Configured => Self::Conflict(e.to_string()),
            WebhookError::Store(e) => e.into(),
        }
    }
}

/// A webhook endpoint, JSON:API style like the connections.
#[derive(Serialize, ToSchema)]
pub struct EndpointResource {
    #[schema(example = "wh_3kTMd0bF8vQ2nX7pL1sR")]
    id: String,
    #[serde(rename = "type")]
    #[schema(example = "webhook_endpoint")]
    kind: &'static str,
    attributes: EndpointAttributes,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointAttributes {
    #[schema(example = "https://hooks.example.com/switchboard")]
    url: String,
    /// Event types delivered; `["*"]`: every type.
    #[schema(example = json!(["data_connection.created", "data_connection.expiring"]))]
    events: Vec<&'static str>,
    /// `config` (`[[webhooks]]`, changed in the configuration) or `api`.
    source: &'static str,
    created_at: String,
    /// The signing secret (`whsec_...`): in the answer to create only.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn endpoint_resource(e: Endpoint, secret: Option<String>) -> EndpointResource {
    EndpointResource {
        id: e.id,
        kind: "webhook_endpoint",
        attributes: EndpointAttributes {
            url: e.url.to_string(),
            events: e.events.names(),
            source: e.source.as_str(),
            created_at: e.created_at.to_iso8601_millis(),
            secret,
        },
    }
}

#[derive(Serialize, ToSchema)]
pub struct EndpointEnvelope {
    data: EndpointResource,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    data: Vec<EndpointResource>,
}

/// `POST /api/v1/webhooks`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateEndpointBody {
    /// http(s) URL the events are POSTed to.
    #[schema(example = "https://hooks.example.com/switchboard")]
    url: String,
    /// Event types, families (`integration.*`) or `*`; omitted: every type.
    events: Option<Vec<String>>,
}

/// One delivery of one event to one endpoint.
#[derive(Serialize, ToSchema)]
pub struct DeliveryResource {
    id: String,
    #[serde(rename = "type")]
    #[schema(example = "webhook_delivery")]
    kind: &'static str,
    attributes: DeliveryAttributes,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryAttributes {
    /// The `webhook-id` every attempt carries.
    #[schema(example = "msg_2Wq8dC0zX5rTn1Yb7KfLh3Ue")]
    event_id: String,
    #[schema(example = "data_connection.created")]
    event_type: String,
    endpoint_id: String,
    /// pending | delivered | failed (given up after the horizon)
    state: &'static str,
    attempts: i64,
    next_attempt_at: Option<String>,
    /// The endpoint's last HTTP status; null: it did not answer.
    last_status: Option<i64>,
    last_error: Option<String>,
    last_attempt_at: Option<String>,
    delivered_at: Option<String>,
    created_at: String,
    /// Every attempt, oldest first: on `GET /api/v1/webhook-deliveries/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_log: Option<Vec<AttemptWire>>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptWire {
    at: String,
    status: Option<u16>,
    latency_ms: i64,
    error: Option<String>,
}

fn delivery_resource(d: Delivery, attempts: Option<Vec<Attempt>>) -> DeliveryResource {
    let iso = |t: Option<Timestamp>| t.map(Timestamp::to_iso8601_millis);
    DeliveryResource {
        id: d.id.to_string(),
        kind: "webhook_delivery",
        attributes: DeliveryAttributes {
            event_id: d.event_id,
            event_type: d.event_type,
            endpoint_id: d.endpoint_id,
            state: d.state.as_str(),
            attempts: d.attempts,
            next_attempt_at: iso(d.next_attempt_at),
            last_status: d.last_status,
            last_error: d.last_error,
            last_attempt_at: iso(d.last_attempt_at),
            delivered_at: iso(d.delivered_at),
            created_at: d.created_at.to_iso8601_millis(),
            attempt_log: attempts.map(|list| {
                list.into_iter()
                    .map(|a| AttemptWire {
                        at: a.at.to_iso8601_millis(),
                        status: a.status,
                        latency_ms: a.latency_ms,
                        error: a.error,
                    })
                    .collect()
            }),
        },
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryEnvelope {
    data: DeliveryResource,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    data: Vec<DeliveryResource>,
    pagination: Pagination,
}

/// Query parameters of the delivery listing (documentation; parsed by hand).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeliveryParams {
    /// pending | delivered | failed
    state: Option<String>,
    endpoint_id: Option<String>,
    /// e.g. `data_connection.created`
    event_type: Option<String>,
    /// From 1.
    page: Option<u64>,
    /// Default 50, at most 250.
    per_page: Option<u64>,
}

fn parse_create(body: &serde_json::Map<String, Value>) -> Result<(String, Vec<String>), ApiError> {
    let mut url = None;
    let mut events = Vec::new();
    for (name, value) in body {
        match (name.as_str(), value) {
            ("url", Value::String(s)) => url = Some(s.clone()),
            ("url", _) => return Err(ApiError::invalid("url", "url must be a string")),
            ("events", Value::Null) => {}
            ("events", Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => events.push(s.clone()),
                        _ => {
                            return Err(ApiError::invalid(
                                "events",
                                "events must be a list of event type names",
                            ));
                        }
                    }
                }
            }
            ("events", _) => {
                return Err(ApiError::invalid(
                    "events",
                    "events must be a list of event type names",
                ));
            }
            (other, _) => {
                return Err(ApiError::invalid(
                    "body",
                    format!(
                        "'{}' is not a field of a webhook endpoint; use url and events",
                        echo(other)
                    ),
                ));
            }
        }
    }
    let url = url.ok_or_else(|| ApiError::invalid("url", "url is required"))?;
    Ok((url, events))
}

fn parse_delivery_filter(query: Option<&str>) -> Result<DeliveryFilter, ApiError> {
    let mut filter = DeliveryFilter::default();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_ref() {
            "state" => {
                filter.state = Some(DeliveryState::parse(value).ok_or_else(|| {
                    ApiError::invalid(
                        "state",
                        format!(
                            "state must be pending, delivered or failed, got '{}'",
                            echo(value)
                        ),
                    )
                })?);
            }
            "endpoint_id" => filter.endpoint_id = Some(value.to_owned()),
            "event_type" => {
                filter.event_type = Some(EventType::parse(value).ok_or_else(|| {
                    ApiError::invalid(
                        "event_type",
                        format!("'{}' is not an event type", echo(value)),
                    )
                })?);
            }
            _ => {}
        }
    }
    Ok(filter)
}

/// List webhook endpoints: the configured ones and those made through the API.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "Every endpoint, oldest first", body = EndpointList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn list_webhook_endpoints(
    State(state): State<AppState>,
    _caller: GlobalToken,
) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = state.services.webhooks.list().await?;
    Ok(Json(EndpointList {
        data: endpoints
            .into_iter()
            .map(|e| endpoint_resource(e, None))
            .collect(),
    }))
}

/// Add a webhook endpoint. The response is the only one that contains its signing secret.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks",
    request_body(content = CreateEndpointBody, content_type = "application/json"),
    security(("bearer_token" = [])),
    responses(
        (status = 201, description = "The endpoint, with its secret", body = EndpointEnvelope),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid url or events; `invalid_attributes` names it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn create_webhook_endpoint(
    State(state): State<AppState>,
    _caller: GlobalToken,
    audit: AuditSlot,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<EndpointEnvelope>), ApiError> {
    let (url, events) = parse_create(&body)?;
    let (endpoint, secret) = state.services.webhooks.create(&url, &events).await?;
    audit.target(endpoint.id.clone());
    let data = endpoint_resource(endpoint, Some(secret.expose_secret().to_owned()));
    Ok((StatusCode::CREATED, Json(EndpointEnvelope { data })))
}

/// Remove an endpoint made through the API, with its pending deliveries.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    security(("bearer_token" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is in the configuration ([[webhooks]])", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn delete_webhook_endpoint(
    State(state): State<AppState>,
    _caller: GlobalToken,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.services.webhooks.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List deliveries, newest first: what was sent where, and what is still retried or was
/// given up.
#[utoipa::path(get, path = "/api/v1/webhook-deliveries", tag = "webhooks",
    params(DeliveryParams),
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 422, description = "Invalid filter or page; `invalid_attributes` names it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn list_webhook_deliveries(
    State(state): State<AppState>,
    _caller: GlobalToken,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryList>, ApiError> {
    let page = parse_list_query(query.as_deref())?;
    let filter = parse_delivery_filter(query.as_deref())?;
    let (deliveries, total) = match page.offset() {
        Some(offset) => {
            state
                .services
                .webhooks
                .deliveries(&filter, offset, page.limit())
                .await?
        }
        None => (Vec::new(), 0),
    };
    Ok(Json(DeliveryList {
        data: deliveries
            .into_iter()
            .map(|d| delivery_resource(d, None))
            .collect(),
        pagination: filtered_pagination(
            &state,
            "/api/v1/webhook-deliveries",
            query.as_deref(),
            page,
            total,
        ),
    }))
}

/// One delivery with every attempt (when, the status, how long it took, the error).
#[utoipa::path(get, path = "/api/v1/webhook-deliveries/{id}", tag = "webhooks",
    params(("id" = i64, Path, description = "Delivery id")),
    security(("bearer_token" = [])),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryEnvelope),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Not a global token", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = ErrorBody),
    ))]
pub(super) async fn get_webhook_delivery(
    State(state): State<AppState>,
    _caller: GlobalToken,
    ConnectionId(id): ConnectionId,
) -> Result<Json<DeliveryEnvelope>, ApiError> {
    let (delivery, attempts) = state.services.webhooks.delivery(id).await?;
    Ok(Json(DeliveryEnvelope {
        data: delivery_resource(delivery, Some(attempts)),
    }))
}
