//! Pure types and rules. Nothing here knows about HTTP or SQL.

pub mod allowlist;
pub mod audit;
pub mod call_state;
pub mod catalog;
pub mod connect;
pub mod console;
pub mod data_connection;
pub mod echo;
pub mod integration;
pub mod oauth;
pub mod pagination;
pub mod ports;
pub mod time;
pub mod token;
pub mod topology;
pub mod usage;
pub mod webhook;
