//! The control-plane HTTP API: one router per dialect, merged with health checks and the
//! OpenAPI document generated from the same handlers.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use url::Url;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ApiSettings;
use crate::domain::data_connection::DataConnections;
use crate::domain::integration::{Integrations, VaultSecrets};
use crate::domain::ports::Health;
use crate::domain::token::ApiTokens;

pub mod betterstack;
pub mod pica;

pub struct AppServices {
    /// The store's health, for `/readyz`.
    pub health: Arc<dyn Health>,
    pub tokens: ApiTokens,
    pub data_connections: DataConnections,
    pub vault_secrets: VaultSecrets,
    pub integrations: Arc<Integrations>,
    pub passthrough: Arc<crate::passthrough::Passthrough>,
    /// Base of absolute links in responses, without a trailing slash.
    pub public_url: String,
}

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<AppServices>,
    openapi_json: Arc<OnceLock<String>>,
}

impl AppServices {
    pub fn public_base(url: &Url) -> String {
        url.as_str().trim_end_matches('/').to_owned()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "Data connections (Better Stack dialect) and integration connections (Pica dialect)."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "connections", description = "ClickHouse data connections (Better Stack dialect)"),
        (name = "vault", description = "Integration connections (Pica dialect)"),
        (name = "operations", description = "Health and service documents"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "pica_secret",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::new(pica::SECRET_HEADER),
            )),
        );
    }
}

/// The complete API router with its middleware.
pub fn router(services: Arc<AppServices>, settings: &ApiSettings) -> Router {
    let state = AppState {
        services,
        openapi_json: Arc::new(OnceLock::new()),
    };
    // API bodies are bounded; the passthrough, merged after, streams bodies of any size.
    let body_limits = ServiceBuilder::new()
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            settings.max_body_bytes,
            reject_declared_oversize,
        ));
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(betterstack::router())
        .merge(pica::router())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_document))
        .routes(routes!(prometheus_metrics))
        .layer(body_limits)
        .merge(pica::passthrough_router())
        .split_for_parts();
    // axum spells a catch-all segment `{*name}`; OpenAPI knows only `{name}`.
    let mut openapi = openapi;
    openapi.paths.paths = std::mem::take(&mut openapi.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    state
        .openapi_json
        .set(
            openapi
                .to_pretty_json()
                .expect("the OpenAPI document serialises"),
        )
        .expect("set once");

    // Outermost first: the request id exists before the span that records it; the span
    // wraps everything so panics and timeouts are logged inside it; the id is copied to the
    // response after the inner layers ran; the timeout bounds the handler and body reading.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The path only: query strings may carry credentials.
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CatchPanicLayer::custom(|_| betterstack::ApiError::Internal.into_response()))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ));

    router
        .fallback(not_found)
        .with_state(state)
        .layer(middleware)
}

/// Refuses a body whose declared length is over the limit before reading any of it, so a
/// client that sent `Expect: 100-continue` gets a clean 413 instead of a reset. Chunked
/// bodies are cut off by `DefaultBodyLimit` as they are read.
async fn reject_declared_oversize(
    State(limit): State<usize>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return betterstack::ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// Why a request body is not a JSON object; each dialect words it in its own error body.
pub enum BodyError {
    NotJson,
    TooLarge,
    Malformed(String),
}

/// Reads a JSON object body: `application/json` (or `+json`) content type, within the
/// body limit, well-formed, an object.
pub async fn json_object(
    req: axum::extract::Request,
    state: &AppState,
) -> Result<serde_json::Map<String, serde_json::Value>, BodyError> {
    use axum::extract::FromRequest;
    use axum::extract::rejection::BytesRejection;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(BodyError::NotJson);
    }
    let bytes = bytes::Bytes::from_request(req, state)
        .await
        .map_err(|e| match e {
            BytesRejection::FailedToBufferBody(inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                BodyError::TooLarge
            }
            other => BodyError::Malformed(other.body_text()),
        })?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(BodyError::Malformed(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(BodyError::Malformed(e.to_string())),
    }
}

async fn not_found() -> Response {
    betterstack::ApiError::RouteNotFound.into_response()
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is running", body = serde_json::Value)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The process can serve requests: its store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The store is reachable", body = serde_json::Value),
        (status = 503, description = "The store is unreachable", body = serde_json::Value),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.services.health.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics: gateway queries, refusals, bytes and latency per connection,
/// upstream health.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
async fn prometheus_metrics() -> Response {
    let handle = crate::telemetry::metrics_handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// This document: OpenAPI 3.1, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = serde_json::Value)))]
async fn openapi_document(State(state): State<AppState>) -> Response {
    let json = state.openapi_json.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}
