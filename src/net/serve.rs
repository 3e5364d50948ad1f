//! Serving a router on a bound listener, over plain HTTP or TLS, until told to stop; then
//! in-flight requests drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::tls::ReloadableTls;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds how long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for in-flight requests when stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker's timer that is never further away than this (see [`heartbeat`]).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// What answers a listener's requests on one serving thread: the API's edge
/// ([`crate::api::Api`]), or the gateway's own handler (it has one route, so a router's
/// matching, boxing and extensions would be work for nothing on every query).
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + use<Self>;
}

/// Where a listener's connections are served.
#[derive(Clone, Copy)]
pub enum Placement {
    /// Every connection on a worker.
    Workers,
    /// A connection whose first request the function picks by its path is served on a
    /// worker, which hands any later request it does not pick to the shared runtime (the one
    /// [`serve_on_workers`] runs on); every other connection is served on the shared
    /// runtime, where store-bound work spreads over every core rather than being pinned to
    /// one thread. So are TLS connections: their first request cannot be read before the
    /// handshake.
    ByFirstRequest(fn(&str) -> bool),
}

/// What a worker does not serve on its own thread: the requests whose path `on_worker`
/// does not pick go to `runtime`.
#[derive(Clone)]
struct Handoff {
    runtime: tokio::runtime::Handle,
    on_worker: fn(&str) -> bool,
}

/// A worker, as the accepting loop sees it.
struct Shard {
    connections: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
}

/// Serves with the handlers `make_handler` makes until `stop` turns true, then drains
/// in-flight requests: on `workers` threads of their own (named `{name}-{index}`), each a
/// single-threaded runtime with its own handler, as `placement` puts them. A connection on
/// a worker stays there, so the tasks a request wakes (its handler, the upstream
/// connection's) run on the thread that woke them: no hand-off between threads per
/// request. Connections go to the worker with the fewest open.
pub async fn serve_on_workers<H: Handler>(
    listener: TcpListener,
    name: &str,
    workers: usize,
    make_handler: Arc<dyn Fn() -> H + Send + Sync>,
    placement: Placement,
    tls: Option<Arc<ReloadableTls>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let handoff = match placement {
        Placement::Workers => None,
        Placement::ByFirstRequest(on_worker) => Some(Handoff {
            runtime: tokio::runtime::Handle::current(),
            on_worker,
        }),
    };
    let mut shards = Vec::with_capacity(workers);
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers.max(1) {
        let (connections, mut incoming) =
            tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        let open = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (make_handler, tls, shard_open) = (make_handler.clone(), tls.clone(), open.clone());
        let handoff = handoff.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(heartbeat());
                    let serving = Serving {
                        handler: make_handler(),
                        handoff,
                        tls,
                        http: http_builder(),
                    };
                    let graceful = GracefulShutdown::new();
                    while let Some((stream, peer)) = incoming.recv().await {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => spawn_connection(
                                stream,
                                peer,
                                &serving,
                                graceful.watcher(),
                                Some(shard_open.clone()),
                            ),
                            Err(e) => {
                                shard_open.fetch_sub(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "cannot take over a connection");
                            }
                        }
                    }
                    drain(graceful).await;
                });
                let _ = done.send(());
            })?;
        shards.push(Shard { connections, open });
        finished.push(finished_rx);
    }
    let shards = Arc::new(shards);
    // The shared runtime's own connections.
    let serving = Serving {
        handler: make_handler(),
        handoff: None,
        tls,
        http: http_builder(),
    };
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let on_worker = match placement {
            Placement::Workers => {
                hand_over(&shards, stream, peer);
                continue;
            }
            Placement::ByFirstRequest(on_worker) => on_worker,
        };
        if serving.tls.is_some() {
            spawn_connection(stream, peer, &serving, graceful.watcher(), None);
            continue;
        }
        let (shards, serving) = (shards.clone(), serving.clone());
        let (watcher, mut stop) = (graceful.watcher(), stop.clone());
        tokio::spawn(async move {
            let picked = tokio::select! {
                picked = tokio::time::timeout(
                    HEADER_READ_TIMEOUT,
                    first_request_picked(&stream, on_worker),
                ) => picked,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match picked {
                Ok(Ok(Some(true))) => hand_over(&shards, stream, peer),
                Ok(Ok(Some(false))) => spawn_connection(stream, peer, &serving, watcher, None),
                // Closed or failed before sending anything, or sent nothing within the time
                // hyper gives a request's headers: closed, as hyper would close it.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {}
            }
        });
    }
    drop(listener);
    // Closing the channels tells each worker to drain and stop.
    drop(shards);
    drain(graceful).await;
    for worker in finished {
        let _ = worker.await;
    }
    Ok(())
}

/// Keeps a timer due within [`HEARTBEAT`] on a worker's runtime. Tokio wakes its driver
/// (a write to its eventfd, and one more event for the next poll) whenever a timer is set
/// to fire before every other, and each request sets some (hyper's header read timeout,
/// the upstream response timeout): with nothing else due, the first of them did so on
/// every request. With this one always nearer, none does; it costs a wake-up a second.
async fn heartbeat() {
    let mut beat = tokio::time::interval(HEARTBEAT);
    loop {
        beat.tick().await;
    }
}

/// Moves a connection to the worker with the fewest open.
fn hand_over(shards: &[Shard], stream: TcpStream, peer: SocketAddr) {
    let Some(shard) = shards
        .iter()
        .min_by_key(|shard| shard.open.load(Ordering::Relaxed))
    else {
        return;
    };
    // Leaves this runtime's reactor for the worker's (still non-blocking).
    match stream.into_std() {
        Ok(stream) => {
            shard.open.fetch_add(1, Ordering::Relaxed);
            if shard.connections.send((stream, peer)).is_err() {
                shard.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot hand over a connection"),
    }
}

/// Whether `on_worker` picks the path of the connection's first request, read without
/// taking it off the socket; `None` when the client closed before sending any.
async fn first_request_picked(
    stream: &TcpStream,
    on_worker: fn(&str) -> bool,
) -> std::io::Result<Option<bool>> {
    // Enough for the longest method and the paths the placement tells apart.
    let mut start = [0u8; 64];
    let read = stream.peek(&mut start).await?;
    if read == 0 {
        return Ok(None);
    }
    Ok(Some(on_worker(request_target(&start[..read]))))
}

/// The request target of a request line, as far as `start` holds it ("GET /a?b HTTP/1.1"
/// gives "/a?b"); empty when `start` is no request line's beginning.
fn request_target(start: &[u8]) -> &str {
    let Some(space) = start.iter().position(|&b| b == b' ') else {
        return "";
    };
    let target = &start[space + 1..];
    let end = target
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(target.len());
    std::str::from_utf8(&target[..end]).unwrap_or("")
}

fn http_builder() -> Arc<hyper::server::conn::http1::Builder> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    Arc::new(http)
}

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; closing them");
    }
}

/// Counts down an open connection when it ends, however it ends.
struct OpenGuard(Option<Arc<AtomicUsize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Aborts the handed-off request when the connection that asked for it goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `answer` run on `runtime`, coming back to this thread.
async fn handed_off(
    runtime: tokio::runtime::Handle,
    answer: impl Future<Output = Response> + Send + 'static,
) -> Response {
    let mut task = AbortOnDrop(runtime.spawn(answer));
    match (&mut task.0).await {
        Ok(response) => response,
        // As if the handler had panicked on this thread.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the shared runtime is shutting down.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// What one runtime serves its connections with.
#[derive(Clone)]
struct Serving<H> {
    handler: H,
    handoff: Option<Handoff>,
    tls: Option<Arc<ReloadableTls>>,
    http: Arc<hyper::server::conn::http1::Builder>,
}

fn spawn_connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    serving: &Serving<H>,
    watcher: hyper_util::server::graceful::Watcher,
    open: Option<Arc<AtomicUsize>>,
) {
    let open = OpenGuard(open);
    let _ = stream.set_nodelay(true);
    let (handler, handoff) = (serving.handler.clone(), serving.handoff.clone());
    let service = service_fn(move |request: Request<Incoming>| {
        let elsewhere = handoff
            .as_ref()
            .filter(|handoff| !(handoff.on_worker)(request.uri().path()))
            .map(|handoff| handoff.runtime.clone());
        let answer = handler.handle(request, peer);
        async move {
            Ok::<_, std::convert::Infallible>(match elsewhere {
                Some(runtime) => handed_off(runtime, answer).await,
                None => answer.await,
            })
        }
    });
    let http = serving.http.clone();
    match &serving.tls {
        None => {
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = watcher.watch(connection).await;
                drop(open);
            });
        }
        Some(tls) => {
            let acceptor = tls.acceptor();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let _ = watcher.watch(connection).await;
                drop(open);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request_target;

    #[test]
    fn request_target_is_read_from_as_much_of_the_request_line_as_arrived() {
        assert_eq!(
            request_target(b"GET /v1/passthrough/x?y=1 HTTP/1.1\r\n"),
            "/v1/passthrough/x?y=1"
        );
        assert_eq!(request_target(b"DELETE /v1/pass"), "/v1/pass");
        assert_eq!(request_target(b"OPTIONS *\r\n"), "*");
        assert_eq!(request_target(b"GET"), "");
        assert_eq!(request_target(b"\x16\x03\x01 \xff\xfe"), "");
    }
}
