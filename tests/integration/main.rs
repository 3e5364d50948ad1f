//! The integration suite: the real `switchboard` binary started on free ports in temp
//! dirs, a real ClickHouse and PostgreSQL where a test needs them, and every check made
//! over HTTP the way a client would. One test binary (one link, one PostgreSQL per run)
//! with a module per area; `SWITCHBOARD_TEST_STORE=postgres` runs the servers on
//! PostgreSQL instead of the embedded SQLite.

mod common;

mod audit;
mod connect;
mod connect_browser;
mod console;
mod console_browser;
mod data_connections;
mod doctor;
mod first_hour;
mod gateway;
mod hardening;
mod lifecycle;
mod oauth;
mod operations;
mod passthrough;
mod replicas;
mod store_contract;
mod tls;
mod vault;
mod webhooks;
