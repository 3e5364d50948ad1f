//! The dialect's error body, `{"errors": "...", "invalid_attributes": [...]}`, and the one
//! mapping from every failure to a status: a client's mistake is a 4xx, a database out of
//! reach a 503, anything else a 500 whose cause is logged and never told.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::EdgeFailure;
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
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid {
        message: String,
        fields: Vec<&'static str>,
    },
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("{0:?}")]
    Edge(EdgeFailure),
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
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Edge(failure) => failure.status(),
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
            Self::Conflict(message) => (message, vec![]),
            Self::Invalid { message, fields } => {
                (message, fields.into_iter().map(String::from).collect())
            }
            Self::MalformedBody(detail) => {
                (format!("Malformed JSON in request body: {detail}"), vec![])
            }
            Self::UnsupportedMediaType => ("Content-Type must be application/json".into(), vec![]),
            Self::Edge(failure) => (failure.message().into(), vec![]),
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
            DataConnectionError::Invalid(errors) => {
                let mut fields = Vec::new();
                for e in &errors {
                    if !fields.contains(&e.field) {
                        fields.push(e.field);
                    }
                }
                Self::Invalid {
                    message: errors
                        .into_iter()
                        .map(|e| e.message)
                        .collect::<Vec<_>>()
                        .join("; "),
                    fields,
                }
            }
            DataConnectionError::NotFound => Self::NotFound,
            DataConnectionError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Edge(e.into())
    }
}

impl From<EdgeFailure> for ApiError {
    fn from(failure: EdgeFailure) -> Self {
        Self::Edge(failure)
    }
}
