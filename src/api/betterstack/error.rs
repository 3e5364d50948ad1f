//! The dialect's error body, `{"errors": "...", "invalid_attributes": [...]}`, and the one
//! mapping from every failure to a status: a client's mistake is a 4xx, a database out of
//! reach a 503, anything else a 500 whose cause is logged and never told.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::DialectError;
use crate::domain::data_connection::DataConnectionError;
use crate::domain::ports::StoreError;

const NOT_FOUND_MESSAGE: &str = "Resource with the provided ID was not found";

/// `{"errors": "...", "invalid_attributes": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    errors: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    invalid_attributes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API token")]
    Unauthorized,
    #[error("team token used on a global endpoint")]
    Forbidden,
    #[error("resource not found")]
    NotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("{message}")]
    Invalid {
        message: String,
        fields: Vec<&'static str>,
    },
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the database is unavailable")]
    Unavailable,
    #[error("the request took too long")]
    Timeout,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub(super) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            fields: vec![field],
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (errors, invalid_attributes) = match self {
            Self::Unauthorized => (
                "Invalid or missing API token. Send `Authorization: Bearer $TOKEN`.".into(),
                vec![],
            ),
            Self::Forbidden => (
                "This endpoint requires a global API token, not a team token.".into(),
                vec![],
            ),
            Self::NotFound => (NOT_FOUND_MESSAGE.into(), vec![]),
            Self::RouteNotFound => ("Not found".into(), vec![]),
            Self::Invalid { message, fields } => {
                (message, fields.into_iter().map(String::from).collect())
            }
            Self::MalformedBody(detail) => {
                (format!("Malformed JSON in request body: {detail}"), vec![])
            }
            Self::PayloadTooLarge => ("Request body is too large".into(), vec![]),
            Self::UnsupportedMediaType => ("Content-Type must be application/json".into(), vec![]),
            Self::MethodNotAllowed => ("This method is not allowed on this path".into(), vec![]),
            Self::Unavailable => (
                "The service cannot reach its database right now; try again shortly".into(),
                vec![],
            ),
            Self::Timeout => ("The request took too long; try again".into(), vec![]),
            // The cause was logged where it happened; the client learns nothing internal.
            Self::Internal => ("Internal server error".into(), vec![]),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                errors,
                invalid_attributes,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<DataConnectionError> for ApiError {
    fn from(e: DataConnectionError) -> Self {
        match e {
            DataConnectionError::Invalid { field, message } => Self::invalid(field, message),
            DataConnectionError::NotFound => Self::NotFound,
            DataConnectionError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
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

impl DialectError for ApiError {
    fn route_not_found() -> Self {
        Self::RouteNotFound
    }

    fn method_not_allowed() -> Self {
        Self::MethodNotAllowed
    }

    fn payload_too_large() -> Self {
        Self::PayloadTooLarge
    }

    fn timeout() -> Self {
        Self::Timeout
    }

    fn internal() -> Self {
        Self::Internal
    }
}
