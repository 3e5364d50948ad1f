//! Kept-alive HTTP/1.1 connections to upstreams, for one serving thread.
//!
//! hyper-util's pooled client costs a proxy more than its requests do: per request it
//! locks its shared pool, clones the pool key, spawns a task that waits for the
//! connection to be idle again and races a checkout against a lazy connect. A proxy
//! thread needs far less: a stack of idle senders per origin, taken and given back by the
//! request that uses one. A connection is given back when its response body has been
//! read to the end; one whose body was dropped unread is closed, as the body would
//! otherwise have to be read and thrown away first. Idle connections past their time are
//! let go when their origin is next used (servers close those they no longer want).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::uri::{Authority, Parts, PathAndQuery, Scheme};
use axum::http::{HeaderValue, Request, Response, Uri, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::rt::{Read, Write};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: the request was not sent.
    #[error("cannot connect: {0}")]
    Connect(#[source] BoxError),
    /// The URI has no scheme and host to connect to.
    #[error("the request's URI has no scheme and host")]
    NoOrigin,
    /// The exchange failed, perhaps after the request was sent.
    #[error(transparent)]
    Request(#[from] hyper::Error),
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// The idle connections of one origin (scheme and authority), most recently used last.
struct Origin {
    idle: Vec<Idle>,
    /// The `Host` header of its requests, built once.
    host: HeaderValue,
}

/// Scheme and authority: cloning them shares their bytes, so a request builds its key
/// without allocating.
type OriginKey = (Scheme, Authority);

pub struct Http1Pool<C> {
    connector: C,
    /// Hashed with foldhash: the keys are configured origins, not a client's choice, and
    /// SipHash takes an authority a byte at a time (a thousand instructions a lookup).
    origins: Mutex<HashMap<OriginKey, Origin, foldhash::fast::RandomState>>,
    max_idle_per_origin: usize,
    idle_timeout: Duration,
}

impl<C> Http1Pool<C>
where
    C: tower::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
{
    pub fn new(connector: C, max_idle_per_origin: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            connector,
            origins: Mutex::default(),
            max_idle_per_origin,
            idle_timeout,
        })
    }

    /// Sends `request` (its URI absolute) on a kept-alive connection to its origin, or a
    /// new one. A kept-alive connection that turns out to be closed before the request
    /// went out is replaced, and the request sent on another.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme.take(), parts.authority.take()) else {
            return Err(SendError::NoOrigin);
        };
        let key: OriginKey = (scheme, authority);
        let (host, mut idle) = self.checkout(&key)?;
        request.headers_mut().entry(header::HOST).or_insert(host);
        // HTTP/1.1 to an origin server: the request line carries the path only.
        let mut origin_form = Parts::default();
        origin_form.path_and_query = Some(
            parts
                .path_and_query
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        *request.uri_mut() = Uri::from_parts(origin_form).expect("a path alone is a URI");

        loop {
            let (mut sender, reused) = match self.ready_idle(&key, idle.take()).await {
                Some(sender) => (sender, true),
                // Boxed: a connection is made once per many requests, and its future (the
                // connector's, a TLS handshake's) would make every request's as large.
                None => (Box::pin(self.connect(&key)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = PooledBody {
                        inner: body,
                        give_back: Some(GiveBack {
                            pool: self.clone(),
                            key,
                            sender,
                        }),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut failed) => match failed.take_message() {
                    // Closed before the request went out: safe to send it again.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Request(failed.into_error())),
                },
            }
        }
    }

    /// The `Host` header of `key`'s requests and its most recently used idle connection,
    /// in one look at the map.
    fn checkout(&self, key: &OriginKey) -> Result<(HeaderValue, Option<Idle>), SendError> {
        let mut origins = self.origins.lock().expect("not poisoned");
        if let Some(origin) = origins.get_mut(key) {
            return Ok((origin.host.clone(), origin.idle.pop()));
        }
        let host = HeaderValue::from_str(key.1.as_str()).map_err(|_| SendError::NoOrigin)?;
        origins.insert(
            key.clone(),
            Origin {
                idle: Vec::new(),
                host: host.clone(),
            },
        );
        Ok((host, None))
    }

    /// `first`, or else the most recently used idle connection to `key`, that is still
    /// open and ready.
    async fn ready_idle(
        &self,
        key: &OriginKey,
        mut first: Option<Idle>,
    ) -> Option<http1::SendRequest<Body>> {
        loop {
            let idle = match first.take() {
                Some(idle) => idle,
                None => self
                    .origins
                    .lock()
                    .expect("not poisoned")
                    .get_mut(key)?
                    .idle
                    .pop()?,
            };
            if idle.since.elapsed() > self.idle_timeout {
                // Older than the rest: they are all past it.
                self.forget_idle(key);
                return None;
            }
            let mut sender = idle.sender;
            // Ready at once unless its connection has yet to see the end of its last
            // exchange; an error means it closed.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn forget_idle(&self, key: &OriginKey) {
        if let Some(origin) = self.origins.lock().expect("not poisoned").get_mut(key) {
            origin.idle.clear();
        }
    }

    async fn connect(&self, key: &OriginKey) -> Result<http1::SendRequest<Body>, SendError> {
        let mut parts = Parts::default();
        parts.scheme = Some(key.0.clone());
        parts.authority = Some(key.1.clone());
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
        let mut connector = self.connector.clone();
        let io = tower::ServiceExt::ready(&mut connector)
            .await
            .map_err(|e| SendError::Connect(e.into()))?
            .call(uri)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        let (sender, connection) = http1::handshake(io).await?;
        // Driven on this thread's runtime, beside the requests that use it.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// How many idle connections are kept to the origin of `uri`.
    #[cfg(test)]
    fn idle_count(&self, uri: &Uri) -> usize {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return 0;
        };
        self.origins
            .lock()
            .expect("not poisoned")
            .get(&(scheme.clone(), authority.clone()))
            .map_or(0, |origin| origin.idle.len())
    }
}

/// What a response body gives back to its pool when it has been read to the end.
struct GiveBack {
    pool: Arc<dyn GiveBackTo>,
    key: OriginKey,
    sender: http1::SendRequest<Body>,
}

/// A pool as its bodies see it, whatever its connector.
trait GiveBackTo: Send + Sync {
    fn give_back_sender(&self, key: &OriginKey, sender: http1::SendRequest<Body>);
}

impl<C> GiveBackTo for Http1Pool<C>
where
    C: tower::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
{
    fn give_back_sender(&self, key: &OriginKey, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut origins = self.origins.lock().expect("not poisoned");
        let Some(origin) = origins.get_mut(key) else {
            return;
        };
        // The oldest come first: drop those past their time, then keep within the cap.
        let now = Instant::now();
        let expired = origin
            .idle
            .iter()
            .take_while(|idle| now.duration_since(idle.since) > self.idle_timeout)
            .count();
        origin.idle.drain(..expired);
        if origin.idle.len() < self.max_idle_per_origin {
            origin.idle.push(Idle { sender, since: now });
        }
    }
}

/// A response body whose connection goes back to the pool once it has been read.
pub struct PooledBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(GiveBack { pool, key, sender }) = self.give_back.take() {
            pool.give_back_sender(&key, sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            // The connection is closing: nothing to give back.
            Poll::Ready(Some(Err(_))) => drop(self.give_back.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left (an empty one the server never polled) is as good as
        // read; any other goes with its connection.
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// An HTTP/1.1 server on a free port that answers `/close` with `Connection: close`,
    /// `/big` with a 1 MB body and anything else with the request's `Host` header; and how
    /// many connections it has accepted.
    async fn server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let mut response = Response::new(http_body_util::Full::new(match request
                            .uri()
                            .path()
                        {
                            "/big" => Bytes::from(vec![b'x'; 1 << 20]),
                            _ => Bytes::copy_from_slice(request.headers()[header::HOST].as_bytes()),
                        }));
                        if request.uri().path() == "/close" {
                            response
                                .headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, accepted)
    }

    fn pool() -> Arc<Http1Pool<HttpConnector>> {
        Http1Pool::new(HttpConnector::new(), 4, Duration::from_secs(30))
    }

    fn get(url: &str) -> Request<Body> {
        Request::builder().uri(url).body(Body::empty()).unwrap()
    }

    async fn text(response: Response<PooledBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_serves_the_next_request() {
        let (url, accepted) = server().await;
        let pool = pool();
        let authority = url.trim_start_matches("http://");
        for _ in 0..3 {
            let response = pool.send(get(&format!("{url}/x?y=1"))).await.unwrap();
            assert_eq!(text(response).await, authority, "Host is the authority");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(&url.parse().unwrap()), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_takes_its_connection_with_it() {
        let (url, accepted) = server().await;
        let pool = pool();
        let response = pool.send(get(&format!("{url}/big"))).await.unwrap();
        drop(response);
        assert_eq!(pool.idle_count(&url.parse().unwrap()), 0);
        let response = pool.send(get(&format!("{url}/"))).await.unwrap();
        text(response).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_used_again() {
        let (url, accepted) = server().await;
        let pool = pool();
        text(pool.send(get(&format!("{url}/close"))).await.unwrap()).await;
        // Given back or not, it is never sent on again: the next request has its own.
        text(pool.send(get(&format!("{url}/"))).await.unwrap()).await;
        text(pool.send(get(&format!("{url}/"))).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_on_a_connection_closed_while_idle_goes_on_a_new_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Answers one request per connection, then closes it without saying so first (as a
        // server whose keep-alive time ran out does).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        let pool = pool();
        for _ in 0..5 {
            let response = pool.send(get(&format!("{url}/"))).await.unwrap();
            assert_eq!(text(response).await, "ok");
        }
    }

    #[tokio::test]
    async fn idle_connections_are_capped_per_origin_and_expire() {
        let (url, accepted) = server().await;
        let pool = Http1Pool::new(HttpConnector::new(), 2, Duration::from_millis(200));
        // Three at once: three connections, of which two are kept.
        let responses =
            futures_util::future::join_all((0..3).map(|_| pool.send(get(&format!("{url}/")))))
                .await;
        for response in responses {
            text(response.unwrap()).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle_count(&url.parse().unwrap()), 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        text(pool.send(get(&format!("{url}/"))).await.unwrap()).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "expired ones are not used"
        );
        assert_eq!(pool.idle_count(&url.parse().unwrap()), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_and_a_relative_uri_no_origin() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = pool();
        let refused = pool.send(get(&format!("http://127.0.0.1:{port}/"))).await;
        assert!(matches!(refused, Err(SendError::Connect(_))));
        let relative = pool.send(get("/only-a-path")).await;
        assert!(matches!(relative, Err(SendError::NoOrigin)));
    }
}
