//! The dialect's error body, `{"message": "...", "code": <status>, "fields": [...]}`, and
//! the one mapping from every failure to a status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::EdgeFailure;
use crate::domain::integration::IntegrationError;
use crate::domain::ports::StoreError;

/// `{"message": "...", "code": 400, "fields": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct PicaErrorBody {
    message: String,
    code: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PicaError {
    #[error("missing or invalid x-pica-secret")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("connect session not found")]
    SessionNotFound,
    #[error("{message}")]
    Invalid {
        message: String,
        fields: Vec<String>,
    },
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("conflict")]
    Conflict,
    #[error("{0}")]
    Refused(&'static str),
    #[error("platform unreachable")]
    BadGateway(&'static str),
    /// The connection's OAuth2 token expired and cannot be refreshed now.
    #[error("{0}")]
    TokenRefresh(String),
    #[error("platform timeout")]
    GatewayTimeout,
    #[error("{0:?}")]
    Edge(EdgeFailure),
}

impl PicaError {
    pub(super) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            fields: vec![field.to_owned()],
        }
    }
}

impl IntoResponse for PicaError {
    fn into_response(self) -> Response {
        let (status, message, fields) = match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Missing or invalid x-pica-secret header: send a sk_test_... or sk_live_... secret"
                    .into(),
                vec![],
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "Connection not found".into(), vec![]),
            Self::SessionNotFound => (
                StatusCode::NOT_FOUND,
                "Connect session not found".into(),
                vec![],
            ),
            Self::Invalid { message, fields } => (StatusCode::BAD_REQUEST, message, fields),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json".into(),
                vec![],
            ),
            Self::Conflict => (
                StatusCode::CONFLICT,
                "The connection changed meanwhile; read it again and retry".into(),
                vec![],
            ),
            Self::Refused(why) => (StatusCode::FORBIDDEN, why.into(), vec![]),
            Self::BadGateway(why) => (StatusCode::BAD_GATEWAY, why.into(), vec![]),
            Self::TokenRefresh(why) => (
                StatusCode::BAD_GATEWAY,
                format!("The connection's access token expired and could not be refreshed: {why}"),
                vec![],
            ),
            Self::GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "The platform did not answer in time".into(),
                vec![],
            ),
            Self::Edge(failure) => (failure.status(), failure.message().into(), vec![]),
        };
        (
            status,
            Json(PicaErrorBody {
                message,
                code: status.as_u16(),
                fields,
            }),
        )
            .into_response()
    }
}

impl From<IntegrationError> for PicaError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::Invalid { fields, message } => Self::Invalid { message, fields },
            IntegrationError::NotFound => Self::NotFound,
            IntegrationError::Conflict => Self::Conflict,
            IntegrationError::Inactive => Self::Refused("The connection is not active"),
            IntegrationError::Failed => Self::Refused(
                "The connection has failed: replace its credentials (PATCH credentials) to use it again",
            ),
            IntegrationError::RefreshFailing(why) => Self::TokenRefresh(why),
            IntegrationError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for PicaError {
    fn from(e: StoreError) -> Self {
        Self::Edge(e.into())
    }
}

impl From<EdgeFailure> for PicaError {
    fn from(failure: EdgeFailure) -> Self {
        Self::Edge(failure)
    }
}
