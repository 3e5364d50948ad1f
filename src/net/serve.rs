//! Serving a router on a bound listener, over plain HTTP or TLS, until told to stop; then
//! in-flight requests drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use super::tls::ReloadableTls;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for in-flight requests when stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` until `stop` turns true, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ReloadableTls>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let http = http_builder();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        spawn_connection(stream, peer, &router, &tls, &http, graceful.watcher(), None);
    }
    drop(listener);
    drain(graceful).await;
    Ok(())
}

/// Serves like [`serve`], but on `workers` threads of their own, each a single-threaded
/// runtime with its own router from `make_router`. A connection lives on one worker, so
/// the tasks a request wakes (its handler, the upstream connection's) run on the thread
/// that woke them: no hand-off between threads per request. Connections go to the worker
/// with the fewest open.
pub async fn serve_on_workers(
    listener: TcpListener,
    workers: usize,
    make_router: Arc<dyn Fn() -> Router + Send + Sync>,
    tls: Option<Arc<ReloadableTls>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
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
        let (make_router, tls, shard_open) = (make_router.clone(), tls.clone(), open.clone());
        std::thread::Builder::new()
            .name(format!("gateway-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let router = make_router();
                    let http = http_builder();
                    let graceful = GracefulShutdown::new();
                    while let Some((stream, peer)) = incoming.recv().await {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => spawn_connection(
                                stream,
                                peer,
                                &router,
                                &tls,
                                &http,
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
        shards.push((connections, open));
        finished.push(finished_rx);
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some((connections, open)) = shards
            .iter()
            .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
        else {
            break;
        };
        // Leaves this runtime's reactor for the worker's (still non-blocking).
        match stream.into_std() {
            Ok(stream) => {
                open.fetch_add(1, Ordering::Relaxed);
                if connections.send((stream, peer)).is_err() {
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot hand over a connection"),
        }
    }
    drop(listener);
    // Closing the channels tells each worker to drain and stop.
    drop(shards);
    for worker in finished {
        let _ = worker.await;
    }
    Ok(())
}

fn http_builder() -> Arc<hyper::server::conn::http1::Builder> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Bounds how long a client may take to send its request headers.
        .header_read_timeout(Duration::from_secs(30));
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

fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: &Router,
    tls: &Option<Arc<ReloadableTls>>,
    http: &Arc<hyper::server::conn::http1::Builder>,
    watcher: hyper_util::server::graceful::Watcher,
    open: Option<Arc<AtomicUsize>>,
) {
    let open = OpenGuard(open);
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router.clone().map_request(
        move |mut request: axum::http::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            request
        },
    ));
    let http = http.clone();
    match tls {
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
