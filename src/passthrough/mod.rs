//! The passthrough proxy: calls a connection's own platform with its stored credential
//! injected, streaming both ways. Outbound calls have timeouts, never follow redirects,
//! and may not reach private or loopback addresses unless the platform allows it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use base64::Engine;
use secrecy::ExposeSecret;
use url::Url;

use crate::domain::catalog::{AuthMethod, Platform};
use crate::domain::integration::{Environment, IntegrationError, Integrations, OpenCredentials};
use crate::net::http::{ReplayableBody, strip_hop_by_hop};
use crate::net::outbound::{OutboundClient, OutboundError};

pub const CONNECTION_KEY_HEADER: &str = "x-pica-connection-key";

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("the path would leave the platform's base URL")]
    OutsidePlatform,
    #[error(transparent)]
    Outbound(#[from] OutboundError),
}

pub struct Passthrough {
    outbound: Arc<OutboundClient>,
}

impl Passthrough {
    pub fn new(outbound: Arc<OutboundClient>) -> Self {
        Self { outbound }
    }

    /// Sends `request` (method, headers and body of the client's call) to `path` on the
    /// platform with the credential injected. Redirects come back as they are.
    pub async fn call(
        &self,
        platform: &Platform,
        credentials: &OpenCredentials,
        path: &str,
        query: Option<&str>,
        request: Request<Body>,
    ) -> Result<Response<Body>, PassthroughError> {
        let mut url = target_url(&platform.base_url, path, query)?;
        let (mut parts, body) = request.into_parts();
        outbound_headers(&mut parts.headers);
        inject(&platform.auth, credentials, &mut parts.headers, &mut url);
        parts.uri = url
            .as_str()
            .parse()
            .map_err(|_| PassthroughError::OutsidePlatform)?;
        parts.version = axum::http::Version::HTTP_11;
        Ok(self
            .outbound
            .send(
                platform.allow_private_network,
                &url,
                Request::from_parts(parts, body),
            )
            .await?)
    }
}

/// Request bodies up to this size are kept, so that an OAuth2 call the platform refuses
/// can be sent again once after a token refresh; larger ones stream and are not retried.
const RETRY_BODY_LIMIT: u64 = 1024 * 1024;

/// Why a passthrough call got no answer from the platform.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Connection(#[from] IntegrationError),
    #[error(transparent)]
    Platform(#[from] PassthroughError),
    #[error("the request body could not be read")]
    ClientBody,
}

impl Passthrough {
    /// A passthrough call on the connection `key` names: its credential injected (an
    /// expired OAuth2 token refreshed first), and what the platform says recorded on the
    /// connection. An OAuth2 call the platform refuses with 401 is retried once with a
    /// refreshed token when its body could be kept.
    pub async fn forward(
        &self,
        integrations: &Integrations,
        environment: Environment,
        key: &str,
        path: &str,
        query: Option<&str>,
        request: Request<Body>,
    ) -> Result<Response<Body>, ForwardError> {
        let (connection, platform, credentials) =
            integrations.open_for_call(environment, key).await?;
        if !platform.auth.is_oauth2() {
            let response = self
                .call(&platform, &credentials, path, query, request)
                .await?;
            integrations
                .record_call(&connection, response.status().as_u16())
                .await;
            return Ok(response);
        }
        let (parts, body) = request.into_parts();
        let mut body = ReplayableBody::read(body, RETRY_BODY_LIMIT)
            .await
            .map_err(|_| ForwardError::ClientBody)?;
        let again = |body: Body| {
            let mut request = Request::new(body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.headers_mut() = parts.headers.clone();
            request
        };
        let first_body = body.take_body().unwrap_or_default();
        let first = self
            .call(&platform, &credentials, path, query, again(first_body))
            .await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            integrations
                .record_call(&connection, first.status().as_u16())
                .await;
            return Ok(first);
        }
        // The token was refused before its expiry: refresh (once, however many calls ask)
        // and retry. A refresh that fails has already recorded why on the connection.
        let fresh = match integrations.refresh_rejected(&connection).await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(connection_id = %connection.id, error = %e, "refresh after a 401 failed");
                return Ok(first);
            }
        };
        let Some(retry_body) = body.take_body() else {
            // The body streamed already; the next call will carry the fresh token.
            return Ok(first);
        };
        let retry = self
            .call(&platform, &fresh.1, path, query, again(retry_body))
            .await?;
        integrations
            .record_call(&fresh.0, retry.status().as_u16())
            .await;
        Ok(retry)
    }
}

/// The platform's base URL with `path` appended segment by segment, so nothing in the
/// path (`..`, `//host`, `@host`) can change the scheme, host or port.
pub fn target_url(base: &Url, path: &str, query: Option<&str>) -> Result<Url, PassthroughError> {
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|_| PassthroughError::OutsidePlatform)?;
        segments.pop_if_empty();
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            let decoded = percent_decode(segment);
            if decoded == "." || decoded == ".." {
                return Err(PassthroughError::OutsidePlatform);
            }
            segments.push(&decoded);
        }
        if path.ends_with('/') {
            segments.push("");
        }
    }
    url.set_query(query.filter(|q| !q.is_empty()));
    if url.host() != base.host()
        || url.port_or_known_default() != base.port_or_known_default()
        || url.scheme() != base.scheme()
    {
        return Err(PassthroughError::OutsidePlatform);
    }
    Ok(url)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The client's headers minus what belongs to this hop or to us: hop-by-hop headers,
/// `Host`, every `x-pica-*` header, and any credential of the client's own.
fn outbound_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-pica-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

fn secret_header(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn field<'a>(credentials: &'a OpenCredentials, name: &str) -> &'a str {
    credentials
        .get(name)
        .map(|s| s.expose_secret())
        .unwrap_or_default()
}

fn inject(
    auth: &AuthMethod,
    credentials: &OpenCredentials,
    headers: &mut HeaderMap,
    url: &mut Url,
) {
    let bearer = |token: &str| secret_header(&format!("Bearer {token}"));
    let value = match auth {
        AuthMethod::Bearer => {
            bearer(field(credentials, "api_key")).map(|v| (header::AUTHORIZATION, v))
        }
        AuthMethod::OAuth2 { .. } => {
            bearer(field(credentials, "access_token")).map(|v| (header::AUTHORIZATION, v))
        }
        AuthMethod::Header { name } => HeaderName::from_bytes(name.as_bytes())
            .ok()
            .zip(secret_header(field(credentials, "api_key"))),
        AuthMethod::Basic => {
            let pair = format!(
                "{}:{}",
                field(credentials, "username"),
                field(credentials, "password")
            );
            secret_header(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
            .map(|v| (header::AUTHORIZATION, v))
        }
        AuthMethod::Query { param } => {
            url.query_pairs_mut()
                .append_pair(param, field(credentials, "api_key"));
            None
        }
    };
    if let Some((name, value)) = value {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_platform() {
        let base = Url::parse("https://api.example.com/v1").unwrap();
        assert_eq!(
            target_url(&base, "emails/42", Some("a=1"))
                .unwrap()
                .as_str(),
            "https://api.example.com/v1/emails/42?a=1"
        );
        for bad in ["../admin", "a/%2e%2e/b", "%2E%2E"] {
            assert!(target_url(&base, bad, None).is_err(), "{bad}");
        }
        // Characters that would change the authority stay inside a segment.
        for tricky in [
            "@evil.com/x",
            "//evil.com/x",
            "http://evil.com/x",
            "a%2F..%2Fb",
        ] {
            let url = target_url(&base, tricky, None).unwrap();
            assert_eq!(url.host_str(), Some("api.example.com"), "{tricky} -> {url}");
        }
    }
}
