//! The network edges every plane shares: serving a router on a listener (HTTP or TLS with
//! certificate reload), TLS configurations, HTTP helpers for proxies, and the guarded
//! outbound client that calls third-party platforms.

pub mod http;
pub mod outbound;
pub mod pool;
pub mod serve;
pub mod tls;

pub use serve::{Handler, Placement, serve_on_workers};
pub use tls::{ReloadableTls, TlsFiles, client_tls_config};
