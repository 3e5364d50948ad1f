//! Persistence behind one trait, with an implementation per database.

use async_trait::async_trait;

use crate::crypto::CredentialHash;
use crate::domain::data_connection::{DataConnection, NewDataConnection};
use crate::domain::integration::{ConnectionState, Environment, IntegrationConnection, ListFilter};
use crate::domain::token::{Principal, TokenScope, User};

pub mod postgres;
mod row;
mod sql;
pub mod sqlite;

use sql::Statement;

/// A change another process made to who may authenticate, as a shared store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEvent {
    Issued(i64),
    Revoked(i64),
    /// Events may have been missed (the feed reconnected): reload everything.
    Resync,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint rejected the write; names the constraint's column.
    #[error("unique constraint violated on {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    NotEmpty(&'static str),
}

/// Everything a store holds, as stored: hashes stay hashes and sealed values stay sealed,
/// so moving a dump between stores needs (and reveals) no key.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Dump {
    pub format: String,
    pub version: u32,
    pub meta: Vec<MetaRow>,
    pub users: Vec<UserRow>,
    pub api_tokens: Vec<TokenRow>,
    pub data_connections: Vec<ConnectionDumpRow>,
    #[serde(default)]
    pub vault_secrets: Vec<VaultSecretRow>,
    #[serde(default)]
    pub integration_connections: Vec<IntegrationDumpRow>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct VaultSecretRow {
    pub id: i64,
    pub environment: String,
    #[serde(with = "base64_bytes")]
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
}

/// A stored credential as key rotation sees it.
pub struct SealedCredential {
    pub id: String,
    pub environment: Environment,
    pub generation: i64,
    pub sealed: Vec<u8>,
}

/// What a failed refresh leaves on the connection.
pub struct RefreshFailure {
    pub state: ConnectionState,
    pub consecutive_failures: i64,
    pub error: String,
    pub at: i64,
    pub retry_at: Option<i64>,
}

/// An integration connection; its credential stays sealed.
#[derive(Debug, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct IntegrationDumpRow {
    pub id: String,
    pub environment: String,
    pub platform: String,
    pub platform_version: String,
    pub name: Option<String>,
    pub connection_key: String,
    pub identity: String,
    pub identity_type: String,
    pub tags: String,
    pub version: String,
    pub active: bool,
    pub state: String,
    pub created_at: i64,
    #[serde(with = "base64_bytes")]
    pub sealed_credentials: Vec<u8>,
    #[serde(default = "first_generation")]
    pub credential_generation: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub retry_at: Option<i64>,
    #[serde(default)]
    pub refresh_attempts: i64,
    #[serde(default)]
    pub consecutive_failures: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<i64>,
    #[serde(default)]
    pub last_refresh_at: Option<i64>,
}

fn first_generation() -> i64 {
    1
}

pub const DUMP_FORMAT: &str = "switchboard-dump";
pub const DUMP_VERSION: u32 = 1;

#[derive(Debug, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct MetaRow {
    pub key: String,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub created_at: i64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    #[serde(with = "base64_bytes")]
    pub token_hash: Vec<u8>,
    pub team_id: Option<i64>,
    pub user_id: Option<i64>,
    pub created_at: i64,
}

/// A data connection's columns; the JSON columns travel as their JSON text.
#[derive(Debug, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct ConnectionDumpRow {
    pub id: i64,
    pub client_type: String,
    pub note: Option<String>,
    pub created_at: i64,
    pub valid_until: Option<i64>,
    pub region_id: String,
    pub host: String,
    pub port: i32,
    pub username: String,
    #[serde(with = "base64_bytes")]
    pub password_hash: Vec<u8>,
    pub ip_allowlist: String,
    pub team_ids: Option<String>,
    pub created_by: Option<i64>,
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD
            .decode(String::deserialize(d)?)
            .map_err(serde::de::Error::custom)
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Applies pending schema migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Refreshes the query planner's statistics where the database does not do it itself
    /// (PostgreSQL's autovacuum does); cheap when little has changed.
    async fn optimize(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every row, for moving to another store.
    async fn export(&self) -> Result<Dump, StoreError>;
    /// Loads a dump into an empty store, keeping ids; refuses a store that holds data.
    async fn import(&self, dump: &Dump) -> Result<(), StoreError>;

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key` unless a value is there; returns the value that is stored
    /// afterwards, so concurrent initialisers agree on one.
    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Replaces the value under `key` (key rotation).
    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Every integration connection's credential: id, environment, sealed credential.
    async fn list_sealed_integrations(&self) -> Result<Vec<SealedCredential>, StoreError>;
    /// Replaces a sealed credential with the same credential sealed under another key,
    /// unless it changed since it was read (a refresh): false then.
    async fn reseal_integration(
        &self,
        id: &str,
        generation: i64,
        sealed_credentials: &[u8],
    ) -> Result<bool, StoreError> {
        let done = self
            .execute(sql::reseal_integration(id, generation, sealed_credentials))
            .await?;
        Ok(done == 1)
    }

    /// Runs a statement both backends share (`sql.rs`); returns the rows it changed.
    async fn execute(&self, statement: Statement) -> Result<u64, StoreError>;
    /// Called after a credential's ciphertext was replaced, so a backend can purge the old
    /// one from its files.
    async fn purge_replaced(&self) {}

    /// The user with this e-mail address, created if new.
    async fn ensure_user(&self, email: &str) -> Result<User, StoreError>;

    async fn insert_api_token(
        &self,
        hash: &CredentialHash,
        scope: TokenScope,
        user: Option<&User>,
    ) -> Result<i64, StoreError>;
    /// Inserts a global token only if the database has no token yet; true if it did.
    async fn insert_first_api_token(&self, hash: &CredentialHash) -> Result<bool, StoreError>;
    async fn find_api_token(&self, hash: &CredentialHash) -> Result<Option<Principal>, StoreError>;

    async fn insert_data_connection(
        &self,
        new: NewDataConnection,
    ) -> Result<DataConnection, StoreError>;
    /// A page in id order, and the total number of connections.
    async fn list_data_connections(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<DataConnection>, u64), StoreError>;
    /// Every connection with its password hash, for the gateway's credential snapshot.
    async fn list_data_connection_credentials(
        &self,
    ) -> Result<Vec<(DataConnection, CredentialHash)>, StoreError>;
    /// One connection with its password hash.
    async fn get_data_connection_credential(
        &self,
        id: i64,
    ) -> Result<Option<(DataConnection, CredentialHash)>, StoreError>;
    /// Changes made by other processes sharing this store, where the store can tell
    /// (`None` for a store only this process uses).
    async fn credential_events(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<StoreEvent>>, StoreError> {
        Ok(None)
    }
    async fn insert_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<(), StoreError>;
    /// Inserts a secret only if its environment has none yet; true if it did.
    async fn insert_first_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<bool, StoreError>;
    async fn find_vault_secret(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<Environment>, StoreError>;

    async fn insert_integration(
        &self,
        connection: &IntegrationConnection,
        sealed_credentials: &[u8],
    ) -> Result<(), StoreError>;
    /// A page, newest first (ties by id), and the number of rows the filter matches.
    async fn list_integrations(
        &self,
        environment: Environment,
        filter: &ListFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<IntegrationConnection>, u64), StoreError>;
    async fn get_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<Option<IntegrationConnection>, StoreError>;
    /// Writes name, tags, active and version if the stored version is still `previous_version`.
    async fn update_integration(
        &self,
        connection: &IntegrationConnection,
        previous_version: &str,
    ) -> Result<bool, StoreError>;
    async fn delete_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<bool, StoreError>;
    /// A connection by its key, with its sealed credentials, for the passthrough.
    async fn get_integration_by_key(
        &self,
        environment: Environment,
        key: &str,
    ) -> Result<Option<(IntegrationConnection, Vec<u8>)>, StoreError>;
    /// Records what a call said about the credential (and why, if it was refused).
    async fn set_integration_state(
        &self,
        id: &str,
        state: ConnectionState,
        error: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        self.execute(sql::set_integration_state(id, state, error, at))
            .await
            .map(drop)
    }
    /// Replaces the sealed credentials with new ones from the user: the state starts over
    /// at `unknown`, failures and retries are forgotten, the generation moves on.
    async fn set_integration_credentials(
        &self,
        id: &str,
        sealed_credentials: &[u8],
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        self.execute(sql::set_integration_credentials(
            id,
            sealed_credentials,
            expires_at,
        ))
        .await?;
        self.purge_replaced().await;
        Ok(())
    }
    /// Takes the right to refresh this connection's token until `until`, unless another
    /// owner holds an unexpired lease. True if taken.
    async fn try_lease_refresh(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let done = self
            .execute(sql::try_lease_refresh(id, owner, now, until))
            .await?;
        Ok(done == 1)
    }
    async fn release_refresh_lease(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.execute(sql::release_refresh_lease(id, owner))
            .await
            .map(drop)
    }
    /// A successful refresh: the new sealed credential replaces the old one, the
    /// connection is `operational`, its failures are cleared, the lease is released.
    async fn store_refreshed_credentials(
        &self,
        id: &str,
        owner: &str,
        sealed_credentials: &[u8],
        expires_at: i64,
        at: i64,
    ) -> Result<(), StoreError> {
        self.execute(sql::store_refreshed_credentials(
            id,
            owner,
            sealed_credentials,
            expires_at,
            at,
        ))
        .await?;
        self.purge_replaced().await;
        Ok(())
    }
    /// A failed refresh: counted, explained, and the lease released.
    async fn record_refresh_failure(
        &self,
        id: &str,
        owner: &str,
        failure: &RefreshFailure,
    ) -> Result<(), StoreError> {
        self.execute(sql::record_refresh_failure(id, owner, failure))
            .await
            .map(drop)
    }
    /// Active, not failed OAuth2 connections whose retry time has come, or (not retrying)
    /// whose token expires by `expiring_by`, and that nobody holds a lease on.
    async fn due_refreshes(
        &self,
        now: i64,
        expiring_by: i64,
        limit: i64,
    ) -> Result<Vec<IntegrationConnection>, StoreError>;

    async fn count_data_connections(&self) -> Result<u64, StoreError>;
    async fn get_data_connection(&self, id: i64) -> Result<Option<DataConnection>, StoreError>;
    /// True if a connection was deleted.
    async fn delete_data_connection(&self, id: i64) -> Result<bool, StoreError>;
}
