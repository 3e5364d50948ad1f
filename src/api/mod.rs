//! The control-plane HTTP API: one router per dialect (`betterstack` under `/api/v1/`,
//! `pica` under `/v1/`), the operations endpoints (`health`), and the OpenAPI document
//! generated from the same handlers (`openapi`).
//!
//! Every answer under a dialect's prefix is in that dialect's error shape: its own routes'
//! failures, and also an unknown route (404), a method the route lacks (405), a body over
//! the limit (413), a request that takes too long (503) and a panic (500). Paths outside
//! both prefixes answer in the Better Stack shape.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use url::Url;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::ApiSettings;
use crate::domain::audit::AuditLog;
use crate::domain::connect::ConnectSessions;
use crate::domain::console::ConsoleSessions;
use crate::domain::data_connection::DataConnections;
use crate::domain::integration::{Integrations, VaultSecrets};
use crate::domain::ports::{Health, StoreError};
use crate::domain::token::ApiTokens;
use crate::domain::topology::{Topology, UpstreamHealth};
use crate::passthrough::Passthrough;

pub mod audit;
pub mod betterstack;
mod body;
pub mod connect;
pub mod console;
mod edge;
mod health;
mod html;
mod openapi;
pub mod pica;

pub use body::{BodyError, json_object};
pub use edge::{Api, served_on_worker};

pub struct AppServices {
    /// The store's health, for `/readyz`.
    pub health: Arc<dyn Health>,
    pub tokens: Arc<ApiTokens>,
    pub data_connections: DataConnections,
    pub vault_secrets: Arc<VaultSecrets>,
    pub integrations: Arc<Integrations>,
    pub passthrough: Arc<Passthrough>,
    pub connect: Arc<ConnectSessions>,
    pub console: Arc<ConsoleSessions>,
    pub audit: Arc<AuditLog>,
    pub webhooks: Arc<crate::domain::webhook::Webhooks>,
    /// The configured regions and teams, for the console's topology view.
    pub topology: Arc<Topology>,
    pub upstream_health: Arc<dyn UpstreamHealth>,
    /// Whether the console's cookie is marked `Secure` (the API is served over TLS).
    pub secure_cookies: bool,
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

/// Failures that can meet any route, which every dialect words in its own error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeFailure {
    RouteNotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    /// The request did not finish within `api.request_timeout_seconds`.
    Timeout,
    /// The database cannot be reached right now.
    Unavailable,
    /// Anything else; the cause is logged where it happened, never told.
    Internal,
}

impl EdgeFailure {
    pub fn status(self) -> StatusCode {
        match self {
            Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::RouteNotFound => "Not found",
            Self::MethodNotAllowed => "This method is not allowed on this path",
            Self::PayloadTooLarge => "Request body is too large",
            Self::Timeout => "The request took too long; try again",
            Self::Unavailable => {
                "The service cannot reach its database right now; try again shortly"
            }
            Self::Internal => "Internal server error",
        }
    }
}

impl From<StoreError> for EdgeFailure {
    /// A store failure as a client may see it; its cause is logged here, once.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                Self::Unavailable
            }
            e => {
                tracing::error!(error = ?e, "store failure");
                Self::Internal
            }
        }
    }
}

/// A dialect's error type: it answers every [`EdgeFailure`] in its own body.
pub trait DialectError: From<EdgeFailure> + IntoResponse + Send + 'static {}

impl<E: From<EdgeFailure> + IntoResponse + Send + 'static> DialectError for E {}

/// `failure` in the shape of the dialect whose prefix `path` is under (Better Stack's
/// outside both).
fn dialect_answer(path: &str, failure: EdgeFailure) -> Response {
    // The console and the connect pages answer a browser: a page, whatever went wrong.
    if path == console::PREFIX || path.starts_with(&format!("{}/", console::PREFIX)) {
        console::PageError::from(failure).into_response()
    } else if path.starts_with(connect::PREFIX) || path == connect::CALLBACK_PATH {
        connect::PageError::from(failure).into_response()
    } else if path == pica::PREFIX.trim_end_matches('/') || path.starts_with(pica::PREFIX) {
        pica::PicaError::from(failure).into_response()
    } else {
        betterstack::ApiError::from(failure).into_response()
    }
}

async fn route_not_found(uri: Uri) -> Response {
    dialect_answer(uri.path(), EdgeFailure::RouteNotFound)
}

async fn method_not_allowed(uri: Uri) -> Response {
    dialect_answer(uri.path(), EdgeFailure::MethodNotAllowed)
}

/// Refuses a body whose declared length is over the limit before reading any of it, so a
/// client that sent `Expect: 100-continue` gets a clean 413 instead of a reset. Chunked
/// bodies are cut off by `DefaultBodyLimit` as they are read.
async fn reject_declared_oversize<E: DialectError>(
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
        return E::from(EdgeFailure::PayloadTooLarge).into_response();
    }
    next.run(req).await
}

/// Bounds the handler, body reading included.
async fn time_limit<E: DialectError>(
    State(limit): State<Duration>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => E::from(EdgeFailure::Timeout).into_response(),
    }
}

/// Which guards a group of routes has besides the panic and time guards.
struct Guards {
    /// The body limit: off for routes that stream bodies of any size.
    bounded_body: bool,
    /// Every matched route's changes and refusals go to the audit log.
    audited: bool,
}

impl Guards {
    /// The control plane's routes: bounded bodies, audited.
    const CONTROL: Self = Self {
        bounded_body: true,
        audited: true,
    };
    /// The passthrough streams bodies of any size; its refused calls are audited.
    const PASSTHROUGH: Self = Self {
        bounded_body: false,
        audited: true,
    };
    /// Health checks change nothing and authenticate no one.
    const HEALTH: Self = Self {
        bounded_body: true,
        audited: false,
    };
}

/// A dialect's routes with their guards, outermost first: a panic becomes a 500 in the
/// dialect's shape; the time limit bounds the handler and body reading; then the body
/// limit and the audit record, when `guards` asks. One layer for all of them: axum boxes
/// (and clones, per request) a route once per layer applied to it.
fn guarded<E: DialectError>(
    routes: OpenApiRouter<AppState>,
    settings: &ApiSettings,
    services: &Arc<AppServices>,
    guards: Guards,
) -> OpenApiRouter<AppState> {
    let max_body = settings.max_body_bytes;
    routes.layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(|_| {
                E::from(EdgeFailure::Internal).into_response()
            }))
            .layer(axum::middleware::from_fn_with_state(
                settings.request_timeout,
                time_limit::<E>,
            ))
            .option_layer(guards.bounded_body.then(|| {
                axum::middleware::from_fn_with_state(max_body, reject_declared_oversize::<E>)
            }))
            .option_layer(guards.bounded_body.then(|| DefaultBodyLimit::max(max_body)))
            .option_layer(
                guards
                    .audited
                    .then(|| axum::middleware::from_fn_with_state(services.clone(), audit::record)),
            ),
    )
}

/// The API's routes with their guards; [`Api`] adds what every request meets.
fn router(services: Arc<AppServices>, settings: &ApiSettings) -> Router {
    use betterstack::ApiError;
    use pica::PicaError;
    let state = AppState {
        services: services.clone(),
        openapi_json: Arc::new(OnceLock::new()),
    };
    let (router, openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(guarded::<ApiError>(
            betterstack::router(),
            settings,
            &services,
            Guards::CONTROL,
        ))
        .merge(guarded::<PicaError>(
            pica::router(),
            settings,
            &services,
            Guards::CONTROL,
        ))
        .merge(guarded::<PicaError>(
            pica::passthrough_router(),
            settings,
            &services,
            Guards::PASSTHROUGH,
        ))
        .merge(guarded::<ApiError>(
            health::router(),
            settings,
            &services,
            Guards::HEALTH,
        ))
        .merge(guarded::<connect::PageError>(
            connect::router(),
            settings,
            &services,
            Guards::CONTROL,
        ))
        .merge(guarded::<console::PageError>(
            console::router(),
            settings,
            &services,
            Guards::CONTROL,
        ))
        .merge(guarded::<connect::PageError>(
            connect::callback_router(),
            settings,
            &services,
            Guards::CONTROL,
        ))
        .split_for_parts();
    state
        .openapi_json
        .set(openapi::render(openapi))
        .expect("set once");

    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(route_not_found)
        .with_state(state)
}
