//! The OAuth2 token endpoint client: refresh tokens (RFC 6749 section 6) and authorization
//! codes (section 4.1.3, with PKCE) are exchanged with a platform's token endpoint, the
//! client authenticating in the form body or with HTTP Basic, through
//! the guarded outbound client (timeouts, no private addresses unless the platform allows
//! them). It implements the domain's [`TokenEndpoint`] port.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::domain::catalog::{AuthMethod, ClientAuth, Platform};
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

/// The grant requests both flows send: `fields` and the client's authentication.
impl TokenClient {
    async fn request(
        &self,
        platform: &Platform,
        fields: &[(&str, &str)],
    ) -> Result<TokenGrant, TokenError> {
        let AuthMethod::OAuth2 {
            token_url,
            client_id,
            client_secret,
            client_auth,
            ..
        } = &platform.auth
        else {
            return Err(TokenError::Failed(format!(
                "platform {} does not use OAuth2",
                platform.key
            )));
        };
        let mut request = Request::post(token_url.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in fields {
                form.append_pair(name, value);
            }
            match (client_auth, client_secret) {
                (ClientAuth::SecretBasic, Some(secret)) => {
                    // RFC 6749 section 2.3.1: each part form-encoded, then Basic.
                    let encode = |v: &str| {
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    };
                    let pair = Zeroizing::new(format!(
                        "{}:{}",
                        encode(client_id),
                        encode(secret.expose_secret())
                    ));
                    let value = Zeroizing::new(format!("Basic {}", BASE64.encode(pair.as_bytes())));
                    let mut value = header::HeaderValue::from_str(&value).map_err(|_| {
                        TokenError::Failed("the client secret is not header-safe".into())
                    })?;
                    value.set_sensitive(true);
                    request = request.header(header::AUTHORIZATION, value);
                }
                (_, secret) => {
                    form.append_pair("client_id", client_id);
                    if let Some(secret) = secret {
                        form.append_pair("client_secret", secret.expose_secret());
                    }
                }
            }
            Zeroizing::new(form.finish())
        };
        let request = request
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

#[async_trait::async_trait]
impl TokenEndpoint for TokenClient {
    async fn refresh(
        &self,
        platform: &Platform,
        refresh_token: &SecretString,
    ) -> Result<TokenGrant, TokenError> {
        let scope = match &platform.auth {
            AuthMethod::OAuth2 {
                scopes,
                scope_separator,
                ..
            } if !scopes.is_empty() => Some(scopes.join(scope_separator)),
            _ => None,
        };
        let mut fields = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        if let Some(scope) = &scope {
            fields.push(("scope", scope));
        }
        self.request(platform, &fields).await
    }

    async fn exchange_code(
        &self,
        platform: &Platform,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenGrant, TokenError> {
        self.request(
            platform,
            &[
                ("grant_type", "authorization_code"),
                ("code", code.expose_secret()),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.expose_secret()),
            ],
        )
        .await
    }
}
