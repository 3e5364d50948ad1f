//! The OAuth2 token endpoint client: refresh tokens are exchanged with a platform's
//! token endpoint (RFC 6749 section 6), the client authenticating in the form body, through
//! the guarded outbound client (timeouts, no private addresses unless the platform allows
//! them). It implements the domain's [`TokenEndpoint`] port.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::domain::catalog::{AuthMethod, Platform};
use crate::domain::oauth::{TokenEndpoint, TokenError, TokenGrant};
use crate::net::outbound::OutboundClient;

pub struct TokenClient {
    outbound: Arc<OutboundClient>,
}

impl TokenClient {
    pub fn new(outbound: Arc<OutboundClient>) -> Self {
        Self { outbound }
    }
}

/// The largest token endpoint answer read.
const TOKEN_RESPONSE_LIMIT: usize = 64 * 1024;

#[derive(serde::Deserialize)]
struct TokenSuccess {
    access_token: SecretString,
    refresh_token: Option<SecretString>,
    /// Seconds; some providers send it as a string.
    expires_in: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct TokenFailure {
    error: String,
    error_description: Option<String>,
}

#[async_trait::async_trait]
impl TokenEndpoint for TokenClient {
    async fn refresh(
        &self,
        platform: &Platform,
        refresh_token: &SecretString,
    ) -> Result<TokenGrant, TokenError> {
        let AuthMethod::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scopes,
        } = &platform.auth
        else {
            return Err(TokenError::Failed(format!(
                "platform {} does not use OAuth2",
                platform.key
            )));
        };
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token.expose_secret())
                .append_pair("client_id", client_id);
            if let Some(secret) = client_secret {
                form.append_pair("client_secret", secret.expose_secret());
            }
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
            Zeroizing::new(form.finish())
        };
        let request = Request::post(token_url.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Body::from(form.as_bytes().to_vec()))
            .map_err(|_| TokenError::Failed("the token URL is not a valid URI".into()))?;
        let response = self
            .outbound
            .send(platform.allow_private_network, token_url, request)
            .await
            .map_err(|e| TokenError::Failed(format!("token endpoint: {e}")))?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), TOKEN_RESPONSE_LIMIT)
            .await
            .map_err(|_| {
                TokenError::Failed(format!(
                    "token endpoint answered {status} with an unreadable body"
                ))
            })?;
        let body = Zeroizing::new(body.to_vec());
        if status.is_success() {
            let grant: TokenSuccess = serde_json::from_slice(&body).map_err(|_| {
                TokenError::Failed(format!(
                    "token endpoint answered {status} without an access_token"
                ))
            })?;
            let expires_in = match grant.expires_in {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.parse().ok(),
                Some(_) => None,
            };
            return Ok(TokenGrant {
                access_token: grant.access_token,
                refresh_token: grant.refresh_token,
                expires_in: expires_in.map(Duration::from_secs),
            });
        }
        match serde_json::from_slice::<TokenFailure>(&body) {
            Ok(f) if status.is_client_error() && f.error == "invalid_grant" => Err(
                TokenError::InvalidGrant(f.error_description.unwrap_or_default()),
            ),
            Ok(f) => Err(TokenError::Failed(format!(
                "token endpoint answered {status}: {}{}",
                f.error,
                f.error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ))),
            Err(_) => Err(TokenError::Failed(format!(
                "token endpoint answered {status}"
            ))),
        }
    }
}
