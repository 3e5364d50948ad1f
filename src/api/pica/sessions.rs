//! Connect sessions, as a backend makes and reads them (secret auth). The end user's side
//! of a session is `api::connect`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use super::error::{PicaError, PicaErrorBody};
use super::extract::{PicaJson, VaultCaller};
use super::parse::parse_new_session;
use super::wire::{CreatedSessionBody, SessionStatusBody};
use crate::api::AppState;
use crate::domain::connect::{ConnectError, SessionStatus};
use crate::domain::integration::iso_micros;

/// Make a link for an end user to link an account (or renew `connectionKey`'s credential).
#[utoipa::path(post, path = "/v1/connect/sessions", tag = "connect",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "{identity, identityType?, platforms?, tags?, name?, connectionKey?, returnUrl?} (AuthKit's group and label are read as identity and name)"),
    security(("pica_secret" = [])),
    responses(
        (status = 201, description = "The session; `url` is single-use and expires", body = CreatedSessionBody),
        (status = 400, description = "Invalid field; `fields` names it", body = PicaErrorBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 413, description = "Body too large", body = PicaErrorBody),
        (status = 415, description = "Body is not application/json", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn create_session(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    PicaJson(body): PicaJson,
) -> Result<(StatusCode, Json<CreatedSessionBody>), PicaError> {
    let request = parse_new_session(&body)?;
    let created = state.services.connect.create(environment, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedSessionBody {
            token: created.token.expose_secret().to_owned(),
            url: created.url,
            expires_at: iso_micros(created.expires_at),
        }),
    ))
}

/// Where a session stands: `pending`, `completed` (with `connectionKey`), `expired` or
/// `failed` (with `error`).
#[utoipa::path(get, path = "/v1/connect/sessions/{token}", tag = "connect",
    params(("token" = String, Path, description = "The session's token (`cs_...`)")),
    security(("pica_secret" = [])),
    responses(
        (status = 200, description = "The session's status", body = SessionStatusBody),
        (status = 401, description = "Missing or unknown secret", body = PicaErrorBody),
        (status = 404, description = "No such session in this environment", body = PicaErrorBody),
        (status = 500, description = "Internal error", body = PicaErrorBody),
        (status = 503, description = "The database is unreachable, or the request took too long", body = PicaErrorBody),
    ))]
pub(super) async fn get_session(
    State(state): State<AppState>,
    VaultCaller(environment): VaultCaller,
    Path(token): Path<String>,
) -> Result<Json<SessionStatusBody>, PicaError> {
    let (session, status) = state.services.connect.status(environment, &token).await?;
    Ok(Json(SessionStatusBody {
        status: status.as_str(),
        connection_key: session
            .connection_key
            .filter(|_| status == SessionStatus::Completed),
        error: session.error.filter(|_| status == SessionStatus::Failed),
        expires_at: iso_micros(session.expires_at),
    }))
}

impl From<ConnectError> for PicaError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Invalid { fields, message } => Self::Invalid { message, fields },
            ConnectError::NotFound => Self::SessionNotFound,
            ConnectError::Integration(e) => e.into(),
            ConnectError::Store(e) => e.into(),
            // The end user's side of a session; a backend's calls do not meet them.
            e @ (ConnectError::Expired
            | ConnectError::Used
            | ConnectError::StateMismatch
            | ConnectError::Provider(_)) => Self::Invalid {
                message: e.to_string(),
                fields: vec![],
            },
        }
    }
}
