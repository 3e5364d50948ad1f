//! Who is calling and what they sent, each failure answered in this dialect's shape.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::api::audit::{AuditSlot, token_actor};
use crate::api::{AppState, BodyError, EdgeFailure};
use crate::domain::token::{Principal, TokenScope};

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
            .map_err(ApiError::from)?
            .ok_or(ApiError::Unauthorized)?;
        let audit = AuditSlot::of(parts);
        audit.actor(token_actor(&principal));
        match principal.scope {
            TokenScope::Global => Ok(Self(principal)),
            TokenScope::Team(_) => {
                audit.refused();
                Err(ApiError::Forbidden)
            }
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
        crate::api::json_object(req, state)
            .await
            .map(Self)
            .map_err(|e| match e {
                BodyError::NotJson => ApiError::UnsupportedMediaType,
                BodyError::TooLarge => EdgeFailure::PayloadTooLarge.into(),
                BodyError::Malformed(detail) => ApiError::MalformedBody(detail),
            })
    }
}

/// A JSON object body, or `None` when the request has no body at all.
pub struct OptionalJsonObject(pub Option<Map<String, Value>>);

impl FromRequest<AppState> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = req.headers();
        let declared_empty = headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        let no_body = !headers.contains_key(header::CONTENT_TYPE)
            && (declared_empty || !headers.contains_key(header::TRANSFER_ENCODING));
        if no_body {
            return Ok(Self(None));
        }
        let JsonObject(body) = JsonObject::from_request(req, state).await?;
        Ok(Self(Some(body)))
    }
}

/// A connection id from the path: an integer, or it names no resource (404), however the
/// segment is spelled.
pub struct ConnectionId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for ConnectionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        raw.parse().map(Self).map_err(|_| ApiError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
