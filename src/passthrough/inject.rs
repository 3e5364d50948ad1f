//! What a passthrough call carries: the caller's headers minus ours and the hop's, and the
//! stored credential placed where the platform's auth method wants it.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use base64::Engine;
use secrecy::ExposeSecret;
use url::Url;
use zeroize::Zeroizing;

use crate::domain::catalog::AuthMethod;
use crate::domain::integration::OpenCredentials;
use crate::net::http::strip_hop_by_hop;

/// The client's headers minus what belongs to this hop or to us: hop-by-hop headers,
/// `Host`, every `x-pica-*` header, and any credential of the client's own.
pub fn outbound_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    // One at a time: a call seldom has any left (the edge takes out the two it reads), and
    // so no list of them is built per call.
    while let Some(ours) = headers
        .keys()
        .find(|k| k.as_str().starts_with("x-pica-"))
        .cloned()
    {
        headers.remove(ours);
    }
}

/// A sensitive header value made of `parts`, written once into the value's own buffer (no
/// intermediate copy of the credential is left behind unzeroized).
fn secret_header(parts: &[&str]) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(parts.concat())).ok()?;
    value.set_sensitive(true);
    Some(value)
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
    let bearer = |token: &str| secret_header(&["Bearer ", token]);
    let value = match auth {
        AuthMethod::Bearer => {
            bearer(field(credentials, "api_key")).map(|v| (header::AUTHORIZATION, v))
        }
        AuthMethod::OAuth2 { .. } => {
            bearer(field(credentials, "access_token")).map(|v| (header::AUTHORIZATION, v))
        }
        AuthMethod::Header { name } => {
            secret_header(&[field(credentials, "api_key")]).map(|v| (name.clone(), v))
        }
        AuthMethod::Basic => {
            // Sized once (`format!` would grow it, leaving freed copies unzeroized).
            let pair = Zeroizing::new(
                [
                    field(credentials, "username"),
                    ":",
                    field(credentials, "password"),
                ]
                .concat(),
            );
            let encoded =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
            secret_header(&["Basic ", &encoded]).map(|v| (header::AUTHORIZATION, v))
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

/// Answer headers that may carry back the URL the platform was called with; a credential
/// injected into it (a query-parameter key) must not reach the caller, who never knew it.
const ECHOING_HEADERS: [HeaderName; 2] = [header::LOCATION, header::CONTENT_LOCATION];

/// The credential fields [`inject`] places in a call (not the refresh token or expiry).
const INJECTED: [&str; 3] = ["api_key", "access_token", "password"];

/// Credential values shorter than this are not looked for (they would match by chance).
const SCRUB_MIN_LEN: usize = 6;

/// Removes every credential value from the platform's `Location` and `Content-Location`:
/// query pairs that carry one are dropped, everything else stays byte for byte; a header
/// that would still carry one is dropped.
pub fn scrub_echoed(headers: &mut HeaderMap, credentials: &OpenCredentials) {
    // Most answers carry neither header: no copies of the credential are made for them.
    if !ECHOING_HEADERS
        .iter()
        .any(|name| headers.contains_key(name))
    {
        return;
    }
    let secrets: Vec<Zeroizing<String>> = INJECTED
        .iter()
        .filter_map(|field| credentials.get(*field))
        .map(|v| v.expose_secret())
        .filter(|v| v.len() >= SCRUB_MIN_LEN)
        .flat_map(|v| {
            let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            [Zeroizing::new(v.to_owned()), Zeroizing::new(encoded)]
        })
        .collect();
    if secrets.is_empty() {
        return;
    }
    let carries = |text: &str| secrets.iter().any(|s| text.contains(s.as_str()));
    for name in ECHOING_HEADERS {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if !carries(value) {
            continue;
        }
        let (before, fragment) = value
            .split_once('#')
            .map_or((value, None), |(b, f)| (b, Some(f)));
        let (path, query) = before
            .split_once('?')
            .map_or((before, None), |(p, q)| (p, Some(q)));
        let kept: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty() && !carries(pair))
            .collect();
        let mut scrubbed = path.to_owned();
        if !kept.is_empty() {
            scrubbed.push('?');
            scrubbed.push_str(&kept.join("&"));
        }
        if let Some(fragment) = fragment {
            scrubbed.push('#');
            scrubbed.push_str(fragment);
        }
        match HeaderValue::from_str(&scrubbed) {
            Ok(v) if !carries(&scrubbed) => {
                headers.insert(name, v);
            }
            _ => {
                headers.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn injected_credentials_do_not_come_back_in_locations() {
        let mut credentials = OpenCredentials::new();
        credentials.insert("api_key".into(), SecretString::from("sk-live-1234/+"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static(
                "https://api.example.com/v1/x/?a=1&api_key=sk-live-1234%2F%2B&b=2#top",
            ),
        );
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("/v1/sk-live-1234/+/y"),
        );
        headers.insert("x-other", HeaderValue::from_static("sk-live-1234/+"));
        scrub_echoed(&mut headers, &credentials);
        assert_eq!(
            headers[header::LOCATION],
            "https://api.example.com/v1/x/?a=1&b=2#top"
        );
        assert!(
            headers.get(header::CONTENT_LOCATION).is_none(),
            "one that would still carry it is dropped"
        );
        assert_eq!(headers["x-other"], "sk-live-1234/+", "only the URL headers");
        // Nothing to scrub: untouched.
        let mut clean = HeaderMap::new();
        clean.insert(header::LOCATION, HeaderValue::from_static("/elsewhere?x=1"));
        scrub_echoed(&mut clean, &credentials);
        assert_eq!(clean[header::LOCATION], "/elsewhere?x=1");
    }
}
