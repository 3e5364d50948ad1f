//! What every API request meets before its route, and its answer after: a request id, a
//! span that carries it into every log line, and the access log line. The router's routes
//! have their guards as layers (see `guarded`); a passthrough call, the API's data plane,
//! takes the short way past the router to its handler, with the same guards as plain calls:
//! a router's matching, boxing, extension maps and per-layer futures were a third of its
//! allocations and much of its CPU (see `bench/README.md`). Every method the passthrough's
//! route has comes this way, so the router's passthrough route only documents it and
//! answers the methods it lacks.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use tower::ServiceExt;
use tracing::Instrument;

use super::audit::Recording;
use super::pica::{self, PicaError};
use super::{AppServices, EdgeFailure, connect};
use crate::config::ApiSettings;

pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API as a serving thread answers it (see [`crate::net::serve_on_workers`]).
#[derive(Clone)]
pub struct Api {
    router: Router,
    services: Arc<AppServices>,
    request_timeout: Duration,
}

impl Api {
    pub fn new(services: Arc<AppServices>, settings: &ApiSettings) -> Self {
        Self {
            router: super::router(services.clone(), settings),
            services,
            request_timeout: settings.request_timeout,
        }
    }

    /// A passthrough call with the guards the router gives its route, outermost first: a
    /// panic becomes a 500 in Pica's shape, the time limit bounds the handler (its answer's
    /// body streams outside it), and a refused call goes to the audit log. With the answer,
    /// whether it is the platform's.
    async fn passthrough(self, request: Request<Body>, peer: SocketAddr) -> (Response, bool) {
        // No route pattern: the passthrough changes nothing, so its record (a refusal) is
        // the same without one.
        let recording = Recording::without_slot(&request, None, Some(peer.ip()));
        let uri = request.uri().clone();
        let path = &uri.path()[pica::passthrough::PREFIX.len()..];
        let guarded = async {
            let call = pica::passthrough::call(&self.services, path, uri.query(), request);
            let (answer, from_platform) =
                match tokio::time::timeout(self.request_timeout, call).await {
                    Ok(Ok(answer)) => (answer, true),
                    Ok(Err(refused)) => (refused.into_response(), false),
                    Err(_) => (PicaError::from(EdgeFailure::Timeout).into_response(), false),
                };
            (
                recording.finish(&self.services, answer).await,
                from_platform,
            )
        };
        match AssertUnwindSafe(guarded).catch_unwind().await {
            Ok(answered) => answered,
            Err(_) => (
                PicaError::from(EdgeFailure::Internal).into_response(),
                false,
            ),
        }
    }
}

impl crate::net::Handler for Api {
    fn handle(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + use<> {
        let started = Instant::now();
        let request_id = request_id(request.headers_mut());
        let span = request_span(request.method(), request.uri().path(), &request_id);
        let this = self.clone();
        async move {
            let mut request = request.map(Body::new);
            let (mut response, data_plane) = if is_passthrough_call(&request) {
                // Boxed: unboxed, the call's future (kilobytes) made every future around it
                // as large, and each was moved a few times per call.
                Box::pin(this.passthrough(request, peer)).await
            } else {
                request.extensions_mut().insert(ConnectInfo(peer));
                match this.router.oneshot(request).await {
                    Ok(response) => (response, false),
                    Err(never) => match never {},
                }
            };
            log_answer(&response, started.elapsed(), data_plane);
            // A platform's own request id, through the passthrough, is left as it is.
            response
                .headers_mut()
                .entry(REQUEST_ID)
                .or_insert(request_id);
            response
        }
        .instrument(span)
    }
}

/// Whether the request is for the passthrough's handler: a platform path and one of its
/// route's methods (`HEAD` as `GET`; the platform answers it without a body). The rest go
/// to the router, which answers them as it does any route's (405, or 404 for no path).
fn is_passthrough_call(request: &Request<Body>) -> bool {
    let path = request.uri().path();
    served_on_worker(path)
        && path.len() > pica::passthrough::PREFIX.len()
        && matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::POST
                | Method::PUT
                | Method::PATCH
                | Method::DELETE
        )
}

/// The request's id: the one the client sent, else a new one, set on the request so that
/// its handler and audit record see it.
fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(sent) = headers.get(&REQUEST_ID) {
        return sent.clone();
    }
    let mut text = uuid::Uuid::encode_buffer();
    let made = HeaderValue::from_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text))
        .expect("a UUID is a header value");
    headers.insert(REQUEST_ID, made.clone());
    made
}

fn request_span(method: &Method, path: &str, request_id: &HeaderValue) -> tracing::Span {
    let request_id = request_id.to_str().unwrap_or("-");
    // The path only (query strings may carry credentials), without a connect session's
    // token.
    let path = loggable_path(path);
    tracing::info_span!("request", method = %method, path = %path, request_id)
}

/// The access log line. The data plane's answers (a platform's, through the passthrough)
/// are logged at debug level, as the gateway logs its queries, so a busy data plane does
/// not write a log line per call. Every control-plane answer, and every passthrough
/// refusal, is logged at info; a server error of ours at error.
fn log_answer(response: &Response, latency: Duration, data_plane: bool) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if data_plane {
        tracing::debug!(status, latency_ms, "finished processing request");
    } else if response.status().is_server_error() {
        tracing::error!(status, latency_ms, "finished processing request");
    } else {
        tracing::info!(status, latency_ms, "finished processing request");
    }
}

/// A request path as the access log shows it: a connect session's token (the link's
/// secret) is replaced by `{token}`.
pub(super) fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    const SESSIONS: &str = "/v1/connect/sessions/";
    for prefix in [connect::PREFIX, SESSIONS] {
        if let Some(rest) = path.strip_prefix(prefix)
            && !rest.is_empty()
        {
            let after = rest.find('/').map_or("", |i| &rest[i..]);
            return format!("{prefix}{{token}}{after}").into();
        }
    }
    path.into()
}

/// Whether the request is a passthrough call (the API's data plane): one served on the
/// worker thread that read it, with that thread's platform connections (see
/// [`crate::net::Placement`]). The rest of the API is served on the shared runtime.
pub fn served_on_worker(path: &str) -> bool {
    path.starts_with(pica::passthrough::PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn only_the_routes_methods_on_a_platform_path_take_the_short_way() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let path = "/v1/passthrough/x?y=1";
            assert!(
                is_passthrough_call(&request(method.clone(), path)),
                "{method}"
            );
        }
        for (method, path) in [
            (Method::OPTIONS, "/v1/passthrough/x"),
            (Method::GET, "/v1/passthrough/"),
            (Method::GET, "/v1/passthrough"),
            (Method::GET, "/v1/vault/connections"),
        ] {
            let to_router = !is_passthrough_call(&request(method.clone(), path));
            assert!(to_router, "{method} {path}");
        }
    }

    #[test]
    fn a_request_keeps_the_id_it_came_with_or_gets_a_new_one() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&mut headers), "abc-123");
        assert_eq!(headers[REQUEST_ID], "abc-123");

        let mut headers = HeaderMap::new();
        let made = request_id(&mut headers);
        assert!(uuid::Uuid::try_parse(made.to_str().unwrap()).is_ok());
        assert_eq!(headers[REQUEST_ID], made);
        assert_ne!(request_id(&mut HeaderMap::new()), made);
    }
}
