//! Who is calling: the credentials a ClickHouse HTTP client presents, and its address.

use std::borrow::Cow;
use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ipnet::IpNet;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::error::GatewayError;

pub const USER_HEADER: &str = "x-clickhouse-user";
pub const KEY_HEADER: &str = "x-clickhouse-key";

/// Credentials as presented. ClickHouse's user is `default` when none is named.
pub struct Presented {
    pub user: String,
    pub password: SecretString,
}

/// Reads the credentials from exactly one of: `X-ClickHouse-User`/`X-ClickHouse-Key`,
/// HTTP Basic, or the `user`/`password` URL parameters.
pub fn presented_credentials(
    headers: &HeaderMap,
    param_user: Option<String>,
    param_password: Option<String>,
) -> Result<Presented, GatewayError> {
    let header_user = header_text(headers, USER_HEADER);
    let header_key = header_text(headers, KEY_HEADER);
    let authorization = header_text(headers, header::AUTHORIZATION.as_str());
    let uses_headers = header_user.is_some() || header_key.is_some();
    let uses_basic = authorization.is_some();
    let uses_params = param_user.is_some() || param_password.is_some();
    if [uses_headers, uses_basic, uses_params]
        .iter()
        .filter(|u| **u)
        .count()
        > 1
    {
        return Err(GatewayError::AmbiguousAuthentication);
    }
    let (user, password) = if uses_headers {
        (
            header_user.map(Cow::into_owned),
            header_key.map(|key| SecretString::from(key.into_owned())),
        )
    } else if let Some(value) = authorization {
        let (user, password) = parse_basic(&value).ok_or(GatewayError::AuthenticationFailed {
            user: String::new(),
            reason: "malformed_basic_auth",
        })?;
        (Some(user), Some(password))
    } else {
        (param_user, param_password.map(SecretString::from))
    };
    Ok(Presented {
        user: user.unwrap_or_else(|| "default".to_owned()),
        password: password.unwrap_or_else(|| SecretString::from(String::new())),
    })
}

/// A header's text, borrowed unless it has to be repaired.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<Cow<'h, str>> {
    // `from_utf8` checks a word at a time; the lossy decoder goes character by character
    // (a thousand instructions for a Basic header), so it is only for what needs repair.
    headers
        .get(name)
        .map(|v| match std::str::from_utf8(v.as_bytes()) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(v.as_bytes()),
        })
}

fn parse_basic(value: &str) -> Option<(String, SecretString)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    // Holds the password: wiped when dropped.
    let decoded = Zeroizing::new(BASE64.decode(encoded.trim()).ok()?);
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_owned(), SecretString::from(password.to_owned())))
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` hop that is not itself a trusted proxy. IPv4-mapped IPv6 addresses
/// are canonicalised, so allowlists see `10.0.0.1`, never `::ffff:10.0.0.1`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|s| s.parse::<IpAddr>().map(|ip| ip.to_canonical()))
        .collect::<Result<_, _>>()
        // A malformed header from a trusted proxy proves nothing: use the proxy itself.
        .unwrap_or_default();
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// The credentials of a request with these headers and this query string.
    fn presented(headers: &HeaderMap, query: Option<&str>) -> Result<Presented, GatewayError> {
        let params = super::super::query::QueryParams::parse(query);
        presented_credentials(headers, params.user, params.password)
    }

    #[test]
    fn each_method_alone_and_two_together_is_an_error() {
        let p = presented(&headers(&[(USER_HEADER, "u1"), (KEY_HEADER, "k")]), None).unwrap();
        assert_eq!((p.user.as_str(), p.password.expose_secret()), ("u1", "k"));
        let basic = format!("Basic {}", BASE64.encode("u2:p:with:colons"));
        let p = presented(&headers(&[("authorization", &basic)]), None).unwrap();
        assert_eq!(
            (p.user.as_str(), p.password.expose_secret()),
            ("u2", "p:with:colons")
        );
        let p = presented(
            &HeaderMap::new(),
            Some("user=u3&password=p%263&query=SELECT+1"),
        )
        .unwrap();
        assert_eq!((p.user.as_str(), p.password.expose_secret()), ("u3", "p&3"));
        let p = presented(&HeaderMap::new(), Some("query=SELECT+1")).unwrap();
        assert_eq!(p.user, "default");

        assert!(matches!(
            presented(
                &headers(&[(USER_HEADER, "u"), ("authorization", &basic)]),
                None
            ),
            Err(GatewayError::AmbiguousAuthentication)
        ));
        assert!(matches!(
            presented(&headers(&[("authorization", &basic)]), Some("user=x")),
            Err(GatewayError::AmbiguousAuthentication)
        ));
        assert!(matches!(
            presented(&headers(&[(KEY_HEADER, "k")]), Some("password=x")),
            Err(GatewayError::AmbiguousAuthentication)
        ));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.7")]);
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip("8.8.8.8".parse().unwrap(), &xff, &trusted),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        // Trusted peer: the right-most untrusted hop, never the spoofable left-most one.
        assert_eq!(
            client_ip("10.1.1.1".parse().unwrap(), &xff, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        // Mapped peers are canonicalised before the trust check.
        assert_eq!(
            client_ip("::ffff:10.1.1.1".parse().unwrap(), &xff, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        // A malformed header counts as none.
        let bad = headers(&[("x-forwarded-for", "1.1.1.1, nonsense")]);
        assert_eq!(
            client_ip("10.1.1.1".parse().unwrap(), &bad, &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        // Several header lines are one list.
        let two = headers(&[
            ("x-forwarded-for", "3.3.3.3"),
            ("x-forwarded-for", "10.0.0.9"),
        ]);
        assert_eq!(
            client_ip("10.1.1.1".parse().unwrap(), &two, &trusted),
            "3.3.3.3".parse::<IpAddr>().unwrap()
        );
    }
}
