//! The passthrough proxy: calls a connection's own platform with its stored credential
//! injected, streaming both ways. Outbound calls have timeouts, never follow redirects,
//! and may not reach private or loopback addresses unless the platform allows it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use base64::Engine;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use url::Url;
use zeroize::Zeroizing;

use crate::domain::catalog::{AuthMethod, Platform};
use crate::domain::integration::{Environment, IntegrationError, Integrations, OpenCredentials};
use crate::domain::oauth::{TokenEndpoint, TokenError, TokenGrant};
use crate::server::{ReplayableBody, strip_hop_by_hop};

pub const CONNECTION_KEY_HEADER: &str = "x-pica-connection-key";

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("the path would leave the platform's base URL")]
    OutsidePlatform,
    #[error("the platform resolves to a private or loopback address")]
    PrivateAddress,
    #[error("the platform is unreachable")]
    Unreachable,
    #[error("the platform did not answer in time")]
    Timeout,
}

/// Addresses a call may not reach unless the platform sets `allow_private_network`.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64) // 100.64.0.0/10
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

type Guarded = Client<HttpsConnector<HttpConnector<PublicResolver>>, Body>;
type Open = Client<HttpsConnector<HttpConnector>, Body>;

/// Resolves names and keeps public addresses only, so a name that points inside the
/// network (or is rebound to) cannot be reached.
#[derive(Clone)]
pub struct PublicResolver;

impl tower::Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the name resolves only to private addresses",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

pub struct Passthrough {
    guarded: Guarded,
    open: Open,
    /// Longest wait for a platform's response headers.
    response_timeout: Duration,
}

impl Passthrough {
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        // Without an extra CA file the only failure would be an unsupported protocol set.
        let tls =
            crate::server::client_tls_config(None).expect("the system's CAs and ring's defaults");
        let https = |mut http: HttpConnector<PublicResolver>| {
            http.set_connect_timeout(Some(connect_timeout));
            http.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        let mut plain = HttpConnector::new();
        plain.set_connect_timeout(Some(connect_timeout));
        plain.enforce_http(false);
        let open = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(plain);
        Self {
            guarded: Client::builder(TokioExecutor::new())
                .build(https(HttpConnector::new_with_resolver(PublicResolver))),
            open: Client::builder(TokioExecutor::new()).build(open),
            response_timeout,
        }
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
        self.send(platform, &url, Request::from_parts(parts, body))
            .await
    }

    /// Sends a request to one of `platform`'s URLs, keeping to public addresses unless the
    /// platform allows private ones, within the response timeout.
    async fn send(
        &self,
        platform: &Platform,
        url: &Url,
        outgoing: Request<Body>,
    ) -> Result<Response<Body>, PassthroughError> {
        if let Some(host) = url.host_str()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            && is_private(ip)
            && !platform.allow_private_network
        {
            return Err(PassthroughError::PrivateAddress);
        }
        let sent = if platform.allow_private_network {
            tokio::time::timeout(self.response_timeout, self.open.request(outgoing)).await
        } else {
            tokio::time::timeout(self.response_timeout, self.guarded.request(outgoing)).await
        };
        let response = match sent {
            Err(_) => return Err(PassthroughError::Timeout),
            Ok(Err(e)) => {
                let blocked = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
                tracing::warn!(platform = %platform.key, error = %e, "platform call failed");
                return Err(if blocked {
                    PassthroughError::PrivateAddress
                } else {
                    PassthroughError::Unreachable
                });
            }
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
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

/// Refresh tokens are exchanged with the platform's token endpoint (RFC 6749 section 6),
/// the client authenticating in the form body, under the passthrough's address guard.
#[async_trait::async_trait]
impl TokenEndpoint for Passthrough {
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
            .send(platform, token_url, request)
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

    #[test]
    fn private_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
