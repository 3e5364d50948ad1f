//! Pure types and rules. Nothing here knows about HTTP or SQL.

pub mod allowlist;
pub mod data_connection;
pub mod pagination;
pub mod time;
pub mod token;
pub mod topology;
