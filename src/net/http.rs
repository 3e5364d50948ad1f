//! HTTP pieces both proxies (the gateway and the passthrough) share.

use axum::http::{HeaderMap, HeaderName, header};

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
const HOPS: usize = 8;
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, plus any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name says which are there (most requests carry none, most answers
    // only `Connection` and `Keep-Alive`): only those are removed, each removal a lookup.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[at] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // `Connection` mostly names only options (`close`, `keep-alive`) or headers removed
    // below anyway: only other names are gathered, so the common case builds no list.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !name.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|hop| hop.as_str().eq_ignore_ascii_case(name))
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP
        .into_iter()
        .zip(present)
        .filter(|(_, there)| *there)
    {
        headers.remove(name);
    }
}

/// A request body that can be sent again (read into memory when it is known to be at most
/// `limit` bytes), or a stream that can be sent once.
pub enum ReplayableBody {
    Replayable(bytes::Bytes),
    Streaming(Option<axum::body::Body>),
}

impl ReplayableBody {
    pub async fn read(body: axum::body::Body, limit: u64) -> Result<Self, axum::Error> {
        use http_body::Body as _;
        if body.size_hint().upper().is_some_and(|n| n <= limit) {
            let collected = http_body_util::BodyExt::collect(body).await?;
            Ok(Self::Replayable(collected.to_bytes()))
        } else {
            Ok(Self::Streaming(Some(body)))
        }
    }

    /// The body for the next send; `None` once a stream has been sent.
    pub fn take_body(&mut self) -> Option<axum::body::Body> {
        match self {
            Self::Replayable(bytes) => Some(axum::body::Body::from(bytes.clone())),
            Self::Streaming(body) => body.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, x-secret-hop".parse().unwrap(),
        );
        h.append(header::CONNECTION, "Close, X-Second-Hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("x-second-hop", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-clickhouse-format", "TSV".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-clickhouse-format"));
    }

    #[test]
    fn every_hop_by_hop_header_is_stripped_with_or_without_connection() {
        let mut h = HeaderMap::new();
        for name in HOP_BY_HOP.iter().filter(|n| **n != header::CONNECTION) {
            h.append(name.clone(), "x".parse().unwrap());
        }
        h.append(header::UPGRADE, "y".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
    }
}
