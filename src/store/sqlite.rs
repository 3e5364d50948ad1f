//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so an
//! acknowledged write survives a crash of the process or the machine.
//!
//! Writes go through a single-connection pool: SQLite admits one writer at a time anyway,
//! and queueing in the pool avoids `SQLITE_BUSY` upgrade deadlocks. Reads use their own pool
//! and run concurrently with the writer thanks to WAL.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::engine::store_error;
use super::sql::Dialect;
use super::{BackendServices, SqlStore, StoreError};

struct Sqlite {
    writer: SqlitePool,
}

/// Opens (creating if needed) the database at a `sqlite://` URL and applies migrations.
pub async fn open(url: &str, acquire_timeout: Duration) -> Result<SqlStore, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(store_error)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        // Freed cells are zeroed: a replaced credential's ciphertext does not linger.
        .pragma("secure_delete", "ON")
        .busy_timeout(Duration::from_secs(10));
    if let Some(parent) = options
        .get_filename()
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| store_error(sqlx::Error::Io(e)))?;
    }
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(acquire_timeout)
        .connect_with(options.clone())
        .await
        .map_err(store_error)?;
    let services = Sqlite {
        writer: writer.clone(),
    };
    services.migrate().await?;
    let reader = SqlitePoolOptions::new()
        .max_connections(4)
        // A connection to a file in this process does not go stale; checking it on every
        // acquire is one more round trip to its worker thread per query.
        .test_before_acquire(false)
        .acquire_timeout(acquire_timeout)
        .connect_with(options.read_only(true))
        .await
        .map_err(store_error)?;
    Ok(SqlStore::new(
        Box::new(reader),
        Box::new(writer),
        Dialect::Sqlite,
        Box::new(services),
    ))
}

#[async_trait]
impl BackendServices for Sqlite {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    async fn optimize(&self) -> Result<(), StoreError> {
        // Re-analyses only tables whose size changed a lot, each from a bounded sample.
        for pragma in ["PRAGMA analysis_limit = 1000", "PRAGMA optimize"] {
            sqlx::query(pragma)
                .execute(&self.writer)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn purge_replaced(&self) {
        // secure_delete zeroed the old ciphertext's cell; the WAL may still hold the page
        // as it was, so it is checkpointed and emptied.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
        {
            tracing::warn!(error = %e, "checkpoint after a credential replacement failed");
        }
    }
}
