//! Switchboard: a self-hosted connections service.
//!
//! Control plane:
//! - [`api`]: the HTTP dialects (`betterstack` for data connections, `pica` for the vault),
//!   operations endpoints and the OpenAPI document.
//! - [`domain`]: types and rules, free of HTTP and SQL; [`domain::ports`] declares what it
//!   needs from persistence.
//! - [`store`]: those ports implemented once for SQLite (embedded) and PostgreSQL (shared).
//!
//! Data planes, reading only in-memory snapshots kept by the change feed ([`feed`]):
//! - [`gateway`]: the ClickHouse HTTP gateway, for data connections.
//! - [`passthrough`]: the proxy that calls a platform with a stored credential injected.
//!
//! Around them: [`net`] (listeners, TLS, the guarded outbound client), [`token_client`]
//! (OAuth2 token endpoints), [`crypto`] (keyed hashes, AEAD, the master key), [`config`]
//! (layered configuration and the operator's topology), [`telemetry`] (logs and metrics),
//! [`app`] (wiring and background tasks) and [`cli`] (the command line).

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod feed;
pub mod gateway;
pub mod net;
pub mod passthrough;
pub mod store;
pub mod telemetry;
pub mod token_client;
pub mod webhooks;
