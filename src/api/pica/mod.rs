//! The Pica "vault connections" dialect, under `/v1/`: its error body (`error`), who is
//! calling (`extract`), the wire types (`wire`), reading requests (`parse`), thin handlers
//! (`handlers`) over [`Integrations`](crate::domain::integration::Integrations), and the
//! passthrough's edge (`passthrough`).

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

mod error;
mod extract;
mod handlers;
pub(super) mod parse;
pub mod passthrough;
mod sessions;
mod wire;

pub use error::{PicaError, PicaErrorBody};
use handlers::*;
use passthrough::*;
use sessions::*;

pub const SECRET_HEADER: &str = "x-pica-secret";

/// Where this dialect's routes live: every answer under it is in this dialect's shape.
pub const PREFIX: &str = "/v1/";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(get_connection, patch_connection, delete_connection))
        .routes(routes!(available_connectors))
        .routes(routes!(create_session))
        .routes(routes!(get_session))
}

/// The passthrough, apart: its bodies stream to the platform, outside the API body limit.
pub fn passthrough_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(passthrough))
}
