//! Where a passthrough call goes: the platform's base URL with the caller's path appended
//! inside it, never outside.

use url::Url;

use super::PassthroughError;

/// The platform's base URL with `path` (the caller's, as it came on the wire: still
/// percent-encoded) appended segment by segment, so nothing in it (`..`, `//host`,
/// `@host`, a backslash) can leave the base URL. Each segment reaches the platform exactly
/// as the caller encoded it: it is decoded only to refuse `.` and `..`.
pub fn target_url(base: &Url, path: &str, query: Option<&str>) -> Result<Url, PassthroughError> {
    let prefix = base.path().trim_end_matches('/');
    let mut joined = String::with_capacity(prefix.len() + path.len() + 2);
    joined.push_str(prefix);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if is_dot_segment(segment) {
            return Err(PassthroughError::OutsidePlatform);
        }
        joined.push('/');
        // A backslash would be read as a separator; as %5C it stays inside the segment.
        if segment.contains('\\') {
            joined.push_str(&segment.replace('\\', "%5C"));
        } else {
            joined.push_str(segment);
        }
    }
    if path.ends_with('/') || joined.is_empty() {
        joined.push('/');
    }
    let mut url = base.clone();
    url.set_path(&joined);
    url.set_query(query.filter(|q| !q.is_empty()));
    if url.host() != base.host()
        || url.port_or_known_default() != base.port_or_known_default()
        || url.scheme() != base.scheme()
        || !url.path().starts_with(prefix)
    {
        return Err(PassthroughError::OutsidePlatform);
    }
    Ok(url)
}

/// Whether `segment`, percent-decoded, is `.` or `..` (compared as it decodes: nothing
/// allocated per segment).
fn is_dot_segment(segment: &str) -> bool {
    let decoded = || percent_encoding::percent_decode_str(segment);
    decoded().eq(*b".") || decoded().eq(*b"..")
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
            "..\\admin",
            "a\\..\\..\\b",
        ] {
            let url = target_url(&base, tricky, None).unwrap();
            assert_eq!(url.host_str(), Some("api.example.com"), "{tricky} -> {url}");
            assert!(url.path().starts_with("/v1/"), "{tricky} -> {url}");
        }
        // Segments go on as the caller encoded them, decoded nowhere.
        assert_eq!(
            target_url(&base, "a%2541/b%252F/c%2Fd", None)
                .unwrap()
                .path(),
            "/v1/a%2541/b%252F/c%2Fd"
        );
        assert_eq!(
            target_url(&base, "sp ace/\u{e9}", None).unwrap().path(),
            "/v1/sp%20ace/%C3%A9",
            "what is not URL text is encoded once"
        );
    }
}
