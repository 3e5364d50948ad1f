//! The storage ports: what the domain needs from persistence, one trait per concern. The
//! store (`crate::store`) implements every one of them for SQLite and PostgreSQL; the
//! dependency runs one way, from the store to the domain.
//!
//! Every write that changes what the data planes serve returns the [`ChangeSeq`] of the
//! change it recorded, so the caller can wait until this process's snapshots reflect it
//! ([`ChangeSync`]).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::allowlist::IpAllowlist;
use super::audit::{AuditEvent, AuditFilter};
use super::connect::{ConnectSession, PendingConsent, StoredStatus};
use super::console::{ConsoleActorRef, ConsoleSession};
use super::data_connection::{DataConnection, NewDataConnection, PasswordHashes};
use super::integration::{ConnectionState, Environment, IntegrationConnection, ListFilter};
use super::time::Timestamp;
use super::token::{Principal, TokenScope, User};
use super::usage::{Tally, Usage};
use super::webhook::{AfterAttempt, Attempt, Delivery, DeliveryFilter, DueDelivery, Endpoint};
use crate::crypto::CredentialHash;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint rejected the write.
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database cannot be reached right now (down, or every connection busy).
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("database error")]
    Backend(#[source] BoxError),
    #[error("{0}")]
    NotEmpty(&'static str),
}

/// A change's place in the store's change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChangeSeq(pub i64);

/// What kind of row a change touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    DataConnection,
    /// Usage added to data connections: the change's id is their ids, comma-separated.
    DataConnectionUsage,
    Integration,
    VaultSecret,
    ApiToken,
}

impl Entity {
    pub const ALL: [Entity; 5] = [
        Self::DataConnection,
        Self::DataConnectionUsage,
        Self::Integration,
        Self::VaultSecret,
        Self::ApiToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataConnection => "data_connection",
            Self::DataConnectionUsage => "data_connection_usage",
            Self::Integration => "integration",
            Self::VaultSecret => "vault_secret",
            Self::ApiToken => "api_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "data_connection" => Some(Self::DataConnection),
            "data_connection_usage" => Some(Self::DataConnectionUsage),
            "integration" => Some(Self::Integration),
            "vault_secret" => Some(Self::VaultSecret),
            "api_token" => Some(Self::ApiToken),
            _ => None,
        }
    }
}

/// One entry of the change log: the row changed; its current state is read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: ChangeSeq,
    pub entity: Entity,
    pub id: String,
}

/// What a store that pushes its changes (PostgreSQL's notifications) sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSignal {
    Changed(Change),
    /// Changes may have been missed (the subscription reconnected): reload everything.
    Missed,
}

/// Waits until this process's in-memory snapshots reflect a committed change, so a write
/// the API acknowledged is what the next data-plane request sees.
#[async_trait]
pub trait ChangeSync: Send + Sync {
    async fn applied(&self, seq: ChangeSeq);
    /// Moves each time changes of `entity` are applied here (and at every reload): what
    /// was computed from the store while it stayed put is still what the store holds,
    /// up to changes on their way to this process. `None` when nothing follows the store
    /// (then nothing may be kept).
    fn generation(&self, entity: Entity) -> Option<u64>;
}

#[async_trait]
pub trait Health: Send + Sync {
    /// A cheap round trip proving the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Key/value settings initialised once: the master key's fingerprint, the sealed hash key.
#[async_trait]
pub trait MetaStore: Send + Sync {
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key` unless a value is there; returns the value stored
    /// afterwards, so concurrent initialisers agree on one.
    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Replaces the value under `key` (key rotation).
    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
}

#[async_trait]
pub trait TokenStore: Send + Sync {
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
    /// Every token, oldest first (what it may do and whose it is, never a hash).
    async fn api_tokens(&self) -> Result<Vec<ApiTokenInfo>, StoreError>;
    /// Deletes a token and the console sessions opened with it, unless it is the last
    /// global token (nobody could manage the install any more).
    async fn delete_api_token(&self, id: i64) -> Result<Revoked, StoreError>;
}

/// An API token as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenInfo {
    pub id: i64,
    pub scope: TokenScope,
    pub user: Option<User>,
    pub created_at: Timestamp,
}

/// What revoking a token or secret did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Done(ChangeSeq),
    NotFound,
    /// Refused: it is the last global token.
    LastGlobalToken,
}

/// Every data connection in id order, held in memory and kept by the change feed (the
/// gateway's snapshot), so a page of the list is read without the database.
pub trait ConnectionPages: Send + Sync {
    /// Up to `limit` connections from the `offset`-th on, and how many there are, both of
    /// one state.
    fn page(&self, offset: u64, limit: usize) -> (Vec<Arc<DataConnection>>, u64);
}

#[async_trait]
pub trait DataConnectionStore: Send + Sync {
    async fn insert_data_connection(
        &self,
        new: NewDataConnection,
    ) -> Result<(DataConnection, ChangeSeq), StoreError>;
    /// A page, in id order, of the connections that reach exactly this one team, and how
    /// many there are.
    async fn list_team_data_connections(
        &self,
        team: i64,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<DataConnection>, u64), StoreError>;
    async fn get_data_connection(&self, id: i64) -> Result<Option<DataConnection>, StoreError>;
    /// `None` if there was no such connection.
    async fn delete_data_connection(&self, id: i64) -> Result<Option<ChangeSeq>, StoreError>;
    /// One connection with its password hashes: the gateway's snapshot entry.
    async fn data_connection_credential(
        &self,
        id: i64,
    ) -> Result<Option<(DataConnection, PasswordHashes)>, StoreError>;
    /// Every connection with its password hashes: the gateway's whole snapshot.
    async fn data_connection_credentials(
        &self,
    ) -> Result<Vec<(DataConnection, PasswordHashes)>, StoreError>;
    /// Changes what `update` names; the connection as it is afterwards, `None` if there
    /// was no such connection.
    async fn update_data_connection(
        &self,
        id: i64,
        update: &ConnectionUpdate,
    ) -> Result<Option<(DataConnection, ChangeSeq)>, StoreError>;
    /// Adds usage counted since the last batch, recording [`Entity::DataConnectionUsage`]
    /// changes (a few hundred ids each), so every process's list shows it.
    async fn add_data_connection_usage(&self, usage: &[(i64, Tally)]) -> Result<(), StoreError>;
    /// The usage stored for those of `ids` that exist.
    async fn data_connection_usages(&self, ids: &[i64]) -> Result<Vec<(i64, Usage)>, StoreError>;
    /// Replaces the password's hash. With `previous_until`, the replaced hash keeps
    /// working until then; without, it stops at once. `None` if there was no such
    /// connection.
    async fn rotate_data_connection_password(
        &self,
        id: i64,
        new_hash: &CredentialHash,
        previous_until: Option<Timestamp>,
    ) -> Result<Option<ChangeSeq>, StoreError>;
}

/// What an in-place update of a data connection changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionUpdate {
    /// `Some(None)` clears the note.
    pub note: Option<Option<String>>,
    /// `Some(None)`: never expires.
    pub valid_until: Option<Option<Timestamp>>,
    pub ip_allowlist: Option<IpAllowlist>,
}

/// A vault secret as stored: only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSecret {
    pub id: i64,
    pub environment: Environment,
    pub hash: CredentialHash,
    pub created_at: Timestamp,
}

#[async_trait]
pub trait VaultSecretStore: Send + Sync {
    async fn insert_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<ChangeSeq, StoreError>;
    /// Inserts a secret only if its environment has none yet; `None` if it had one.
    async fn insert_first_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<Option<ChangeSeq>, StoreError>;
    async fn find_vault_secret(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<VaultSecret>, StoreError>;
    async fn vault_secret(&self, id: i64) -> Result<Option<VaultSecret>, StoreError>;
    /// Every secret, oldest first.
    async fn vault_secrets(&self) -> Result<Vec<VaultSecret>, StoreError>;
    /// Deletes a secret and the console sessions opened with it.
    async fn delete_vault_secret(&self, id: i64) -> Result<Revoked, StoreError>;
}

/// An integration connection with its credential as stored: sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedIntegration {
    pub connection: IntegrationConnection,
    pub sealed: Vec<u8>,
}

#[async_trait]
pub trait IntegrationStore: Send + Sync {
    async fn insert_integration(
        &self,
        connection: &IntegrationConnection,
        sealed_credentials: &[u8],
    ) -> Result<ChangeSeq, StoreError>;
    /// A page, newest first (ties by id), and the number of rows the filter matches.
    async fn list_integrations(
        &self,
        environment: Environment,
        filter: &ListFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<IntegrationConnection>, u64), StoreError>;
    /// [`Self::list_integrations`]'s page alone, for a caller that knows the total.
    async fn integration_page(
        &self,
        environment: Environment,
        filter: &ListFilter,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<IntegrationConnection>, StoreError>;
    async fn get_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<Option<IntegrationConnection>, StoreError>;
    /// Writes name, tags, active and version if the stored version is still
    /// `previous_version`; `None` if it was not.
    async fn update_integration(
        &self,
        connection: &IntegrationConnection,
        previous_version: &str,
    ) -> Result<Option<ChangeSeq>, StoreError>;
    async fn delete_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<Option<ChangeSeq>, StoreError>;
    /// Records what a call said about the credential (and why, if it was refused).
    async fn set_integration_state(
        &self,
        id: &str,
        state: ConnectionState,
        error: Option<&str>,
        at: i64,
    ) -> Result<ChangeSeq, StoreError>;
    /// Replaces the sealed credential with a new one from the user: the state starts over
    /// at `unknown`, failures and retries are forgotten, the generation moves on.
    async fn set_integration_credentials(
        &self,
        id: &str,
        sealed_credentials: &[u8],
        expires_at: Option<i64>,
    ) -> Result<ChangeSeq, StoreError>;
    async fn sealed_integration_by_key(
        &self,
        environment: Environment,
        key: &str,
    ) -> Result<Option<SealedIntegration>, StoreError>;
    async fn sealed_integration(&self, id: &str) -> Result<Option<SealedIntegration>, StoreError>;
    /// Records the last passthrough calls (µs) of connections; a gone one matches nothing.
    /// No change is recorded: the data planes do not serve it.
    async fn add_integration_uses(&self, last_used: &[(String, i64)]) -> Result<(), StoreError>;
    /// Every connection of every environment with its sealed credential.
    async fn sealed_integrations(&self) -> Result<Vec<SealedIntegration>, StoreError>;
    /// Replaces a sealed credential with the same credential sealed under another key,
    /// unless it changed since it was read (generation moved on): false then.
    async fn reseal_integration(
        &self,
        id: &str,
        generation: i64,
        sealed_credentials: &[u8],
    ) -> Result<bool, StoreError>;
}

/// What a failed refresh leaves on the connection.
#[derive(Debug, Clone)]
pub struct RefreshFailure {
    pub state: ConnectionState,
    pub consecutive_failures: i64,
    pub error: String,
    pub at: i64,
    pub retry_at: Option<i64>,
}

/// OAuth2 refresh bookkeeping: the lease that makes one process refresh a connection at a
/// time, and what a refresh left behind.
#[async_trait]
pub trait RefreshStore: Send + Sync {
    /// Takes the right to refresh this connection's token until `until`, unless another
    /// owner holds an unexpired lease. True if taken.
    async fn try_lease_refresh(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError>;
    async fn release_refresh_lease(&self, id: &str, owner: &str) -> Result<(), StoreError>;
    /// A successful refresh: the new sealed credential replaces the old one, the
    /// connection is `operational`, its failures are cleared, the lease is released.
    async fn store_refreshed_credentials(
        &self,
        id: &str,
        owner: &str,
        sealed_credentials: &[u8],
        expires_at: i64,
        at: i64,
    ) -> Result<ChangeSeq, StoreError>;
    /// A failed refresh: counted, explained, and the lease released.
    async fn record_refresh_failure(
        &self,
        id: &str,
        owner: &str,
        failure: &RefreshFailure,
    ) -> Result<ChangeSeq, StoreError>;
    /// Active, not failed OAuth2 connections whose retry time has come, or (not retrying)
    /// whose token expires by `expiring_by`, and that nobody holds a lease on.
    async fn due_refreshes(
        &self,
        now: i64,
        expiring_by: i64,
        limit: i64,
    ) -> Result<Vec<IntegrationConnection>, StoreError>;
}

/// The change log every write appends to, which each process's change feed follows.
#[async_trait]
pub trait ChangeLog: Send + Sync {
    /// The newest change recorded (0 in an empty log).
    async fn latest_change(&self) -> Result<ChangeSeq, StoreError>;
    /// Changes after `seq`, oldest first, `limit` rows at most; and the last seq read (rows
    /// of entities this build does not know are skipped but counted).
    async fn changes_after(
        &self,
        seq: ChangeSeq,
        limit: i64,
    ) -> Result<(Vec<Change>, ChangeSeq), StoreError>;
    /// Forgets changes recorded before `at` (µs since the epoch); returns how many.
    async fn prune_changes(&self, before: i64) -> Result<u64, StoreError>;
    /// Changes as they are committed by any process, where the database can push them
    /// (`None`: follow [`Self::changes_after`] instead).
    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeSignal>>, StoreError>;
}

/// Connect sessions (see `domain::connect`).
#[async_trait]
pub trait ConnectSessionStore: Send + Sync {
    async fn insert_connect_session(
        &self,
        session: &ConnectSession,
        token_hash: &CredentialHash,
    ) -> Result<(), StoreError>;
    async fn connect_session_by_token(
        &self,
        token_hash: &CredentialHash,
    ) -> Result<Option<ConnectSession>, StoreError>;
    async fn connect_session(&self, id: &str) -> Result<Option<ConnectSession>, StoreError>;
    /// Records a consent under way (replacing an earlier one) if the session is pending
    /// and unexpired at `now`; false otherwise.
    async fn begin_connect_consent(
        &self,
        id: &str,
        consent: &PendingConsent,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Moves a pending, unexpired session to `completing`, so that one request alone
    /// finishes it; with `state_hash`, only if it is the consent's, which is then
    /// forgotten (a state works once). False if another request got there first.
    async fn claim_connect_session(
        &self,
        id: &str,
        state_hash: Option<&CredentialHash>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Ends a pending or completing session; false if it had already ended.
    /// Ends a session (`platform`: the one the user chose, for its webhook event).
    async fn finish_connect_session(
        &self,
        id: &str,
        status: StoredStatus,
        connection_key: Option<&str>,
        platform: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Forgets sessions that expired before `before`; returns how many.
    async fn delete_connect_sessions_expired_before(&self, before: i64) -> Result<u64, StoreError>;
}

/// Operator console sessions (see `domain::console`).
#[async_trait]
pub trait ConsoleSessionStore: Send + Sync {
    async fn insert_console_session(
        &self,
        session_id: &str,
        token_hash: &CredentialHash,
        actor: ConsoleActorRef,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    /// The session this token opens, unexpired at `now`, with the caller it acts as; none
    /// once its token or secret is gone.
    async fn console_session_by_token(
        &self,
        token_hash: &CredentialHash,
        now: i64,
    ) -> Result<Option<ConsoleSession>, StoreError>;
    /// Keeps a sealed value for the session's next [`Self::take_console_reveal`].
    async fn set_console_reveal(&self, session_id: &str, sealed: &[u8]) -> Result<(), StoreError>;
    /// The kept value, forgotten as it is read: it can be read once.
    async fn take_console_reveal(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn delete_console_session(&self, session_id: &str) -> Result<(), StoreError>;
    /// Forgets sessions that expired before `before`; returns how many.
    async fn delete_console_sessions_expired_before(&self, before: i64) -> Result<u64, StoreError>;
}

/// The audit log (see `domain::audit`): appended to, listed, pruned; never changed.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// A page, newest first (ties by id), and how many events match.
    async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<AuditEvent>, u64), StoreError>;
    /// Forgets events recorded before `before` (µs); returns how many.
    async fn prune_audit_events(&self, before: i64) -> Result<u64, StoreError>;
}

/// Webhooks (see `domain::webhook`): endpoints, and the outbox's deliveries. Events enter
/// the outbox inside the store's own writes (each change's transaction); these methods
/// manage endpoints and move deliveries along.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Makes the configuration's endpoints the stored `config` ones: these upserted, other
    /// `config` endpoints (and their deliveries) removed.
    async fn sync_configured_webhook_endpoints(
        &self,
        endpoints: &[Endpoint],
    ) -> Result<(), StoreError>;
    async fn insert_webhook_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError>;
    /// Every endpoint, oldest first.
    async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;
    /// Replaces an API endpoint's sealed secret (a key rotation), if it is still `previous`.
    async fn reseal_webhook_endpoint(
        &self,
        id: &str,
        previous: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError>;
    /// Removes an endpoint and its deliveries; false if there was none.
    async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError>;
    /// Whether any pending delivery is due by `now` and unleased: a read, so an idle
    /// outbox never takes the (SQLite: single) writer.
    async fn webhook_deliveries_due(&self, now: i64) -> Result<bool, StoreError>;
    /// Leases up to `limit` pending deliveries due by `now` that nobody holds, as `owner`
    /// until `until` (ms); a delivery is leased by one process at a time.
    async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// Records an attempt and what follows it, releasing the lease.
    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        attempt_number: i64,
        attempt: &Attempt,
        after: AfterAttempt,
    ) -> Result<(), StoreError>;
    /// Gives a lease back untried (the process cannot sign for the endpoint).
    async fn release_webhook_delivery(
        &self,
        delivery_id: i64,
        owner: &str,
    ) -> Result<(), StoreError>;
    /// Newest first, and how many match.
    async fn list_webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Delivery>, u64), StoreError>;
    async fn webhook_delivery(
        &self,
        id: i64,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError>;
    /// Pending deliveries, for `/metrics`.
    async fn count_pending_webhook_deliveries(&self) -> Result<u64, StoreError>;
    /// Announces, once per connection and `valid_until`, each lead time (ms, any order)
    /// `valid_until` has come within, and expiry (`valid_until` ≤ `now`, at most
    /// `expired_since` ago). Leads a connection passed together are announced once, as
    /// the shortest. Returns how many events it wrote.
    async fn announce_expiries(
        &self,
        now: i64,
        leads_ms: &[i64],
        expired_since: i64,
    ) -> Result<u64, StoreError>;
    /// Forgets events older than `before` (ms) that no delivery still waits on.
    async fn prune_webhook_events(&self, before: i64) -> Result<u64, StoreError>;
}

/// Every port at once: what a backend implements.
pub trait Store:
    Health
    + MetaStore
    + TokenStore
    + DataConnectionStore
    + VaultSecretStore
    + IntegrationStore
    + RefreshStore
    + ChangeLog
    + ConnectSessionStore
    + ConsoleSessionStore
    + AuditStore
    + WebhookStore
    + 'static
{
}
