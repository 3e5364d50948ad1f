//! What every HTML page on the API listener shares: the headers that keep a page from
//! being cached, framed, sniffed or leaking its URL, and the content policy it runs under.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::Markup;

/// What a page may load and send.
pub struct PagePolicy {
    pub content_security: &'static str,
    pub referrer: &'static str,
}

/// The connect pages: inline styles, inline images, nothing else; no referrer at all (the
/// link's token is in the URL).
pub const SELF_CONTAINED_POLICY: PagePolicy = PagePolicy {
    content_security: "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; frame-ancestors 'none'",
    referrer: "no-referrer",
};

/// The console: its own stylesheet and script from this server, forms posted only here.
/// Its URLs carry no secret; a same-origin referrer keeps the browser sending a real
/// `Origin` on form posts (with `no-referrer` it sends `null`), which the console checks.
pub const CONSOLE_POLICY: PagePolicy = PagePolicy {
    content_security: "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    referrer: "same-origin",
};

/// A page with the headers every one of them carries: nothing cached, the referrer
/// limited, nothing loaded from elsewhere, never framed.
pub fn page_response(status: StatusCode, body: Markup, policy: PagePolicy) -> Response {
    let mut response = (status, body.into_string()).into_response();
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(header::CACHE_CONTROL, "no-store");
    set(header::REFERRER_POLICY, policy.referrer);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::CONTENT_SECURITY_POLICY, policy.content_security);
    response
}
