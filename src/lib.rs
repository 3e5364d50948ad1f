//! Switchboard: a self-hosted connections service.
//!
//! - [`api`]: the HTTP dialects (Better Stack connections), health and OpenAPI.
//! - [`domain`]: types and rules, free of HTTP and SQL.
//! - [`gateway`]: the ClickHouse HTTP gateway, the data plane of data connections.
//! - [`store`]: persistence behind a trait (SQLite embedded).
//! - [`crypto`]: keyed hashes, AEAD sealing, the master key.
//! - [`config`]: layered configuration and the operator's topology.
//! - [`app`]: wiring it together; [`cli`]: the command line.

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
