//! Who is calling and what they sent, each failure answered in this dialect's shape.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde_json::{Map, Value};

use super::SECRET_HEADER;
use super::error::PicaError;
use crate::api::audit::{AuditSlot, secret_actor};
use crate::api::{AppState, BodyError, EdgeFailure};
use crate::domain::integration::Environment;

/// A header's value, trimmed; `None` when absent, empty or not text.
pub(super) fn header_text<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(value_text)
}

/// A header value, trimmed; `None` when empty or not text.
pub(super) fn value_text(value: &axum::http::HeaderValue) -> Option<&str> {
    value.to_str().ok().map(str::trim).filter(|v| !v.is_empty())
}

/// A caller holding a vault secret: the environment it may see.
pub struct VaultCaller(pub Environment);

impl FromRequestParts<AppState> for VaultCaller {
    type Rejection = PicaError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PicaError> {
        let secret = header_text(&parts.headers, SECRET_HEADER).ok_or(PicaError::Unauthorized)?;
        let found = state
            .services
            .vault_secrets
            .identify(secret)
            .await
            .map_err(PicaError::from)?
            .ok_or(PicaError::Unauthorized)?;
        AuditSlot::of(parts).actor(secret_actor(found.id));
        Ok(Self(found.environment))
    }
}

pub struct PicaJson(pub Map<String, Value>);

impl FromRequest<AppState> for PicaJson {
    type Rejection = PicaError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PicaError> {
        crate::api::json_object(req, state)
            .await
            .map(Self)
            .map_err(|e| match e {
                BodyError::NotJson => PicaError::UnsupportedMediaType,
                BodyError::TooLarge => EdgeFailure::PayloadTooLarge.into(),
                BodyError::Malformed(detail) => {
                    PicaError::invalid("body", format!("Malformed JSON in request body: {detail}"))
                }
            })
    }
}

/// A connection id from the path: a UUID, or it names no connection (404) and no query is
/// made, however the segment is spelled.
pub struct ConnectionId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ConnectionId {
    type Rejection = PicaError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PicaError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| PicaError::NotFound)?;
        match uuid::Uuid::try_parse(&raw) {
            Ok(_) => Ok(Self(raw)),
            Err(_) => Err(PicaError::NotFound),
        }
    }
}

/// The platform path of a passthrough call as it came on the wire, still percent-encoded
/// (decoded once, by the platform).
pub struct PlatformPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PlatformPath {
    type Rejection = PicaError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PicaError> {
        let raw = parts.uri.path();
        let rest = raw
            .strip_prefix(super::passthrough::PREFIX)
            .ok_or_else(|| PicaError::invalid("path", "the path names no platform path"))?;
        Ok(Self(rest.to_owned()))
    }
}
