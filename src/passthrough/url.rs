//! Where a passthrough call goes: the platform's base URL with the caller's path appended
//! inside it, never outside.

use url::Url;

use super::PassthroughError;

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
