//! The Better Stack Telemetry "connections" dialect, under `/api/v1/`: its error body
//! (`error`), who is calling (`extract`), the wire types (`wire`), reading requests
//! (`parse`) and thin handlers (`handlers`) over
//! [`DataConnections`](crate::domain::data_connection::DataConnections).

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

mod error;
mod extract;
mod handlers;
mod parse;
mod webhooks;
mod wire;

pub use error::{ApiError, ErrorBody};
use handlers::*;
pub use wire::AuditEventResource;

/// Where this dialect's routes live: every answer under it is in this dialect's shape.
pub const PREFIX: &str = "/api/v1/";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(
            get_connection,
            update_connection,
            delete_connection
        ))
        .routes(routes!(rotate_password))
        .routes(routes!(list_audit_events))
        .routes(routes!(
            webhooks::list_webhook_endpoints,
            webhooks::create_webhook_endpoint
        ))
        .routes(routes!(webhooks::delete_webhook_endpoint))
        .routes(routes!(webhooks::list_webhook_deliveries))
        .routes(routes!(webhooks::get_webhook_delivery))
}
