//! Reading a JSON object body; each dialect words the failures in its own error body.

use axum::http::{StatusCode, header};

use super::AppState;

/// Why a request body is not a JSON object; each dialect words it in its own error body.
pub enum BodyError {
    NotJson,
    TooLarge,
    Malformed(String),
}

/// Reads a JSON object body: `application/json` (or `+json`) content type, within the
/// body limit, well-formed, an object.
pub async fn json_object(
    req: axum::extract::Request,
    state: &AppState,
) -> Result<serde_json::Map<String, serde_json::Value>, BodyError> {
    use axum::extract::FromRequest;
    use axum::extract::rejection::BytesRejection;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(BodyError::NotJson);
    }
    let bytes = bytes::Bytes::from_request(req, state)
        .await
        .map_err(|e| match e {
            BytesRejection::FailedToBufferBody(inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                BodyError::TooLarge
            }
            other => BodyError::Malformed(other.body_text()),
        })?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(BodyError::Malformed(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(BodyError::Malformed(e.to_string())),
    }
}
