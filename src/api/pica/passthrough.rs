//! `ANY /v1/passthrough/{path}`: the passthrough proxy's edge. Its bodies stream to the
//! platform, outside the API body limit.

use axum::extract::{RawQuery, Request, State};
use axum::response::Response;

use super::SECRET_HEADER;
use super::error::{PicaError, PicaErrorBody};
use super::extract::{PlatformPath, value_text};
use crate::api::{AppServices, AppState};
use crate::net::outbound::OutboundError;
use crate::passthrough::{CONNECTION_KEY_HEADER, ForwardError, PassthroughError};

/// Every passthrough call's path starts so; the rest of it is the platform's.
pub const PREFIX: &str = "/v1/passthrough/";

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
        (status = 503, description = "The request took too long to reach the platform", body = PicaErrorBody),
        (status = 504, description = "Platform too slow", body = PicaErrorBody),
    ))]
pub(super) async fn passthrough(
    State(state): State<AppState>,
    PlatformPath(path): PlatformPath,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, PicaError> {
    call(&state.services, &path, query.as_deref(), request).await
}

/// A passthrough call to `path` (what follows [`PREFIX`], still percent-encoded): the
/// route's handler, and what the API's edge calls directly (see [`crate::api::Api`]). An
/// `Ok` answer is the platform's.
pub async fn call(
    services: &AppServices,
    path: &str,
    query: Option<&str>,
    mut request: Request,
) -> Result<Response, PicaError> {
    // Taken out of the request (they are ours, never the platform's), not copied.
    let secret = request.headers_mut().remove(SECRET_HEADER);
    let key = request.headers_mut().remove(CONNECTION_KEY_HEADER);
    let secret = secret
        .as_ref()
        .and_then(value_text)
        .ok_or(PicaError::Unauthorized)?;
    let key = key.as_ref().and_then(value_text).ok_or_else(|| {
        PicaError::invalid(
            CONNECTION_KEY_HEADER,
            "the x-pica-connection-key header is required",
        )
    })?;
    services
        .passthrough
        .forward(secret, key, path, query, request)
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
