//! What a passthrough call carries: the caller's headers minus ours and the hop's, and the
//! stored credential placed where the platform's auth method wants it.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use base64::Engine;
use secrecy::ExposeSecret;
use url::Url;

use crate::domain::catalog::AuthMethod;
use crate::domain::integration::OpenCredentials;
use crate::net::http::strip_hop_by_hop;

/// The client's headers minus what belongs to this hop or to us: hop-by-hop headers,
/// `Host`, every `x-pica-*` header, and any credential of the client's own.
pub fn outbound_headers(headers: &mut HeaderMap) {
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

pub fn inject(
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
