//! Integration connections: third-party credentials kept sealed in the vault, found with
//! Pica's list filters, scoped to a vault secret's environment.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::call_state::{StateWriter, state_after_call};
use super::catalog::{Catalog, Platform};
use super::echo::{ECHO_NAMES, echo, echo_names};
use super::oauth::{OAuthRefresher, OAuthSettings, RefreshError, TokenEndpoint, parse_expires_at};
use super::ports::{
    ChangeSync, Entity, IntegrationStore, RefreshStore, Revoked, SealedIntegration, StoreError,
    VaultSecret, VaultSecretStore,
};
use super::usage::LastUses;
use crate::crypto::{self, CredentialHasher, Sealer};

pub const SECRET_RANDOM_LEN: usize = 40;
pub const MAX_LIST_LIMIT: i64 = 1000;
pub const NAME_MAX_CHARS: usize = 256;
pub const MAX_TAGS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Test,
    Live,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Live => "live",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "test" => Some(Self::Test),
            "live" => Some(Self::Live),
            _ => None,
        }
    }

    /// `sk_test_...` or `sk_live_...`: the prefix names the environment.
    pub fn of_secret(secret: &str) -> Option<Self> {
        if secret.starts_with("sk_test_") {
            Some(Self::Test)
        } else if secret.starts_with("sk_live_") {
            Some(Self::Live)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityType {
    User,
    Team,
    Organization,
    Project,
}

impl IdentityType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Team => "team",
            Self::Organization => "organization",
            Self::Project => "project",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "team" => Some(Self::Team),
            "organization" => Some(Self::Organization),
            "project" => Some(Self::Project),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Operational,
    Degraded,
    Failed,
    Unknown,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operational" => Some(Self::Operational),
            "degraded" => Some(Self::Degraded),
            "failed" => Some(Self::Failed),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationConnection {
    pub id: String,
    pub environment: Environment,
    pub platform: String,
    pub platform_version: String,
    pub name: Option<String>,
    pub key: String,
    pub identity: String,
    pub identity_type: IdentityType,
    pub tags: Vec<String>,
    pub version: String,
    pub active: bool,
    pub state: ConnectionState,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    /// Bumped on every write of the credential (a refresh, a PATCH): who read generation N
    /// and now sees another knows the credential changed meanwhile.
    pub credential_generation: i64,
    pub health: Health,
}

/// How a connection's credential has fared; `GET` shows it beside Pica's fields. Times in
/// microseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Token requests made for this connection, successful or not.
    pub refresh_attempts: i64,
    /// Failed refreshes since the last successful one (or the last new credential).
    pub consecutive_failures: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    /// When the OAuth2 access token expires.
    pub expires_at: Option<i64>,
    /// When a failed refresh is tried again.
    pub retry_at: Option<i64>,
    /// The last passthrough call (a few seconds behind: added in batches).
    pub last_used_at: Option<i64>,
}

/// Microseconds since the epoch as `2025-07-19T16:19:29.702632Z`.
pub fn iso_micros(at: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl IntegrationConnection {
    pub fn created_at_iso(&self) -> String {
        iso_micros(self.created_at)
    }
}

/// Filters of the list call, parsed at the edge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListFilter {
    pub keys: Vec<String>,
    pub platform_version: Option<String>,
    pub name: Option<String>,
    pub identity_type: Option<IdentityType>,
    pub identity: Option<String>,
    pub platform: Option<String>,
    /// A row must carry every one of these.
    pub tags: Vec<String>,
    pub active: bool,
    pub state: Option<ConnectionState>,
}

/// A create request, parsed at the edge.
pub struct CreateIntegration {
    pub platform: String,
    pub identity: String,
    pub identity_type: IdentityType,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub active: bool,
    pub credentials: BTreeMap<String, SecretString>,
    /// `unknown` until a call shows otherwise; `operational` for tokens a provider has
    /// just issued.
    pub state: ConnectionState,
}

#[derive(Debug, Default)]
pub struct Patch {
    pub tags: Option<Vec<String>>,
    pub name: Option<Option<String>>,
    pub active: Option<bool>,
    /// Replaces the stored credential (checked like at create); the state starts over.
    pub credentials: Option<BTreeMap<String, SecretString>>,
    /// Applies only over this version (what the caller showed): a change made meanwhile
    /// is a conflict, not overwritten.
    pub expected_version: Option<String>,
}

/// An opened credential, for one outbound call; each value wiped when dropped.
pub type OpenCredentials = BTreeMap<String, SecretString>;

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("{message}")]
    Invalid {
        fields: Vec<String>,
        message: String,
    },
    #[error("connection not found")]
    NotFound,
    #[error("the connection changed meanwhile")]
    Conflict,
    #[error("the connection is not active")]
    Inactive,
    #[error("the connection has failed and needs new credentials")]
    Failed,
    /// The OAuth2 access token expired and cannot be refreshed right now.
    #[error("{0}")]
    RefreshFailing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RefreshError> for IntegrationError {
    fn from(e: RefreshError) -> Self {
        match e {
            RefreshError::NotFound => Self::NotFound,
            RefreshError::Failed => Self::Failed,
            RefreshError::Failing(why) => Self::RefreshFailing(why),
            RefreshError::Store(e) => Self::Store(e),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> IntegrationError {
    IntegrationError::Invalid {
        fields: vec![field.to_owned()],
        message: message.into(),
    }
}

/// `1.0.0` -> `1.0.1`; anything unparsable starts again at `1.0.1`.
pub fn bump_version(version: &str) -> String {
    let parts: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [major, minor, patch] => format!("{major}.{minor}.{}", patch + 1),
        _ => "1.0.1".into(),
    }
}

pub fn validate_tags(tags: &[String]) -> Result<(), IntegrationError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    if tags
        .iter()
        .any(|t| t.is_empty() || t.contains(['\0', ',']) || t.chars().count() > 128)
    {
        return Err(invalid(
            "tags",
            "tags must be 1 to 128 characters, without commas",
        ));
    }
    Ok(())
}

pub fn validate_identity(identity: &str) -> Result<(), IntegrationError> {
    if identity.trim().is_empty() || identity.contains('\0') || identity.chars().count() > 256 {
        return Err(invalid("identity", "identity must be 1 to 256 characters"));
    }
    Ok(())
}

pub fn validate_name(name: &Option<String>) -> Result<(), IntegrationError> {
    if let Some(n) = name
        && (n.chars().count() > NAME_MAX_CHARS || n.contains('\0'))
    {
        return Err(invalid(
            "name",
            format!("name must be at most {NAME_MAX_CHARS} characters, without NUL"),
        ));
    }
    Ok(())
}

/// A credential must hold exactly the fields its platform's auth method uses. Returns when
/// an OAuth2 access token expires (`None` for other methods).
fn check_credentials(
    platform: &Platform,
    credentials: &BTreeMap<String, SecretString>,
) -> Result<Option<i64>, IntegrationError> {
    let expected = platform.auth.credential_fields();
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|f| !credentials.contains_key(*f))
        .collect();
    let extra: Vec<&str> = credentials
        .keys()
        .map(String::as_str)
        .filter(|f| !expected.contains(f))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        // Only OAuth2 takes an `expires_at`; any other method has none by now.
        return oauth_expiry(credentials);
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("unexpected {}", echo_names(&extra)));
    }
    Err(IntegrationError::Invalid {
        // The unexpected ones are the client's names: as many as the message shows.
        fields: missing
            .iter()
            .map(|f| format!("credentials.{f}"))
            .chain(
                extra
                    .iter()
                    .take(ECHO_NAMES)
                    .map(|f| format!("credentials.{}", echo(f))),
            )
            .collect(),
        message: format!(
            "credentials for {} ({} auth) take {}: {}",
            platform.key,
            platform.auth.kind(),
            expected.join(", "),
            parts.join("; ")
        ),
    })
}

/// When an OAuth2 credential's access token expires; `None` without `expires_at`.
fn oauth_expiry(
    credentials: &BTreeMap<String, SecretString>,
) -> Result<Option<i64>, IntegrationError> {
    credentials
        .get("expires_at")
        .map(|v| {
            parse_expires_at(v.expose_secret()).ok_or_else(|| {
                invalid(
                    "credentials.expires_at",
                    "credentials.expires_at must be Unix seconds or an RFC 3339 timestamp",
                )
            })
        })
        .transpose()
}

/// Vault secrets: `sk_test_...` and `sk_live_...`, only their hashes stored.
pub struct VaultSecrets {
    store: Arc<dyn VaultSecretStore>,
    hasher: CredentialHasher,
    snapshots: Arc<dyn ChangeSync>,
}

impl VaultSecrets {
    pub fn new(
        store: Arc<dyn VaultSecretStore>,
        hasher: CredentialHasher,
        snapshots: Arc<dyn ChangeSync>,
    ) -> Self {
        Self {
            store,
            hasher,
            snapshots,
        }
    }

    pub fn generate(environment: Environment) -> SecretString {
        SecretString::from(format!(
            "sk_{}_{}",
            environment.as_str(),
            crypto::random_alphanumeric(SECRET_RANDOM_LEN)
        ))
    }

    /// The environment a presented secret belongs to, if it is one of ours.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Environment>, StoreError> {
        Ok(self.identify(presented).await?.map(|s| s.environment))
    }

    /// The stored secret a presented one is, if it is one of ours.
    pub async fn identify(&self, presented: &str) -> Result<Option<VaultSecret>, StoreError> {
        let Some(claimed) = Environment::of_secret(presented) else {
            return Ok(None);
        };
        let stored = self
            .store
            .find_vault_secret(&self.hasher.hash(presented))
            .await?;
        Ok(stored.filter(|s| s.environment == claimed))
    }

    /// Every secret, oldest first (the hashes stay here).
    pub async fn list(&self) -> Result<Vec<VaultSecret>, StoreError> {
        self.store.vault_secrets().await
    }

    /// Revokes a secret: it stops working here before this returns (the passthrough's
    /// snapshot included), and on other processes when the change reaches them.
    #[tracing::instrument(skip(self))]
    pub async fn revoke(&self, id: i64) -> Result<Revoked, StoreError> {
        let revoked = self.store.delete_vault_secret(id).await?;
        if let Revoked::Done(change) = revoked {
            self.snapshots.applied(change).await;
            tracing::info!(secret_id = id, "vault secret revoked");
        }
        Ok(revoked)
    }

    pub async fn create(&self, environment: Environment) -> Result<SecretString, StoreError> {
        let secret = Self::generate(environment);
        let change = self
            .store
            .insert_vault_secret(environment, &self.hasher.hash(secret.expose_secret()))
            .await?;
        self.snapshots.applied(change).await;
        Ok(secret)
    }

    /// Installs `secret` if its environment has no secret yet.
    pub async fn install_first(
        &self,
        environment: Environment,
        secret: &SecretString,
    ) -> Result<bool, StoreError> {
        let change = self
            .store
            .insert_first_vault_secret(environment, &self.hasher.hash(secret.expose_secret()))
            .await?;
        if let Some(change) = change {
            self.snapshots.applied(change).await;
        }
        Ok(change.is_some())
    }
}

/// How many rows each recent list filter matched, for the generation of integration
/// changes it was counted in ([`ChangeSync::generation`]). A list's total reads every
/// matching index entry (10k for a tag a tenth of 100k rows carry: ~2 ms on SQLite) while
/// its page reads a few dozen, and clients page through one filter.
#[derive(Default)]
struct ListTotals(Mutex<HashMap<(Environment, ListFilter), (u64, u64)>>);

impl ListTotals {
    /// Filters remembered at most; past it the oldest generation's go first (all at once:
    /// a change makes every one of them stale anyway).
    const MAX: usize = 1024;

    fn get(&self, environment: Environment, filter: &ListFilter, generation: u64) -> Option<u64> {
        let totals = self.0.lock().expect("not poisoned");
        match totals.get(&(environment, filter.clone())) {
            Some(&(counted_in, total)) if counted_in == generation => Some(total),
            _ => None,
        }
    }

    fn put(&self, environment: Environment, filter: &ListFilter, generation: u64, total: u64) {
        let mut totals = self.0.lock().expect("not poisoned");
        if totals.len() >= Self::MAX {
            totals.retain(|_, (counted_in, _)| *counted_in == generation);
            if totals.len() >= Self::MAX {
                totals.clear();
            }
        }
        totals.insert((environment, filter.clone()), (generation, total));
    }
}

/// What a passthrough call needs: the connection, its platform, its opened credential.
pub struct OpenedCall<'a> {
    pub connection: Cow<'a, IntegrationConnection>,
    pub platform: &'a Platform,
    pub credentials: OpenCredentials,
}

pub struct Integrations {
    store: Arc<dyn IntegrationStore>,
    /// What calls observed, written behind them.
    states: StateWriter,
    uses: Arc<LastUses>,
    /// A write returns once this process's passthrough snapshot holds it.
    snapshots: Arc<dyn ChangeSync>,
    totals: ListTotals,
    catalog: Arc<Catalog>,
    sealer: Arc<Sealer>,
    oauth: OAuthRefresher,
}

/// What sealed credentials are bound to: opening them under another id or environment fails.
pub fn credentials_aad(id: &str, environment: Environment) -> Vec<u8> {
    // One allocation, sized up front: it is built on every passthrough call.
    ["integration-connection|", id, "|", environment.as_str()]
        .concat()
        .into_bytes()
}

/// A credential sealed for one connection.
pub fn seal_credentials(
    sealer: &Sealer,
    id: &str,
    environment: Environment,
    credentials: &OpenCredentials,
) -> Vec<u8> {
    let plaintext = Zeroizing::new(
        serde_json::to_vec(
            &credentials
                .iter()
                .map(|(k, v)| (k.as_str(), v.expose_secret()))
                .collect::<BTreeMap<_, _>>(),
        )
        .expect("strings serialise"),
    );
    sealer.seal(&plaintext, &credentials_aad(id, environment))
}

/// A connection's sealed credential, opened.
pub fn open_credentials(
    sealer: &Sealer,
    id: &str,
    environment: Environment,
    sealed: &[u8],
) -> Result<OpenCredentials, StoreError> {
    let corrupt = || StoreError::Corrupt("sealed credentials".into());
    let opened = sealer
        .open(sealed, &credentials_aad(id, environment))
        .map_err(|e| {
            tracing::error!(connection_id = %id, error = %e, "cannot open stored credentials");
            corrupt()
        })?;
    serde_json::from_slice(&opened).map_err(|_| corrupt())
}

impl Integrations {
    pub fn new(
        store: Arc<dyn IntegrationStore>,
        leases: Arc<dyn RefreshStore>,
        snapshots: Arc<dyn ChangeSync>,
        catalog: Arc<Catalog>,
        sealer: Arc<Sealer>,
        tokens: Arc<dyn TokenEndpoint>,
        oauth: OAuthSettings,
    ) -> Self {
        Self {
            oauth: OAuthRefresher::new(
                store.clone(),
                leases,
                snapshots.clone(),
                catalog.clone(),
                sealer.clone(),
                tokens,
                oauth,
            ),
            states: StateWriter::start(store.clone(), snapshots.clone()),
            uses: Arc::default(),
            store,
            snapshots,
            totals: ListTotals::default(),
            catalog,
            sealer,
        }
    }

    pub fn oauth(&self) -> &OAuthRefresher {
        &self.oauth
    }

    /// A passthrough call's connection (from the data plane's snapshot), its platform and
    /// its opened credential; an expired OAuth2 token is refreshed first. Refused when
    /// inactive or failed.
    pub async fn open_for_call<'a>(
        &'a self,
        linked: &'a SealedIntegration,
    ) -> Result<OpenedCall<'a>, IntegrationError> {
        let connection = &linked.connection;
        if !connection.active {
            return Err(IntegrationError::Inactive);
        }
        if connection.state == ConnectionState::Failed {
            return Err(IntegrationError::Failed);
        }
        let platform = self
            .catalog
            .get(&connection.platform)
            .ok_or(IntegrationError::NotFound)?;
        if platform.auth.is_oauth2()
            && connection
                .health
                .expires_at
                .is_some_and(|e| e <= Utc::now().timestamp_micros())
        {
            let (connection, credentials) = self.oauth.refresh(connection).await?;
            return Ok(OpenedCall {
                connection: Cow::Owned(connection),
                platform,
                credentials,
            });
        }
        let credentials = open_credentials(
            &self.sealer,
            &connection.id,
            connection.environment,
            &linked.sealed,
        )?;
        Ok(OpenedCall {
            connection: Cow::Borrowed(connection),
            platform,
            credentials,
        })
    }

    /// After the platform refused `connection`'s access token: a fresh one (refreshed
    /// now, or by whoever got there first).
    pub async fn refresh_rejected(
        &self,
        connection: &IntegrationConnection,
    ) -> Result<(IntegrationConnection, OpenCredentials), IntegrationError> {
        Ok(self.oauth.refresh(connection).await?)
    }

    /// What a platform's answer says about the credential (accepted, or refused with 401:
    /// it needs replacing), queued for the store; never waits. Returns the new state when
    /// it changed, for the caller's snapshot.
    pub fn record_call(
        &self,
        connection: &IntegrationConnection,
        platform_status: u16,
    ) -> Option<ConnectionState> {
        self.uses.used(&connection.id);
        let (state, error) = state_after_call(platform_status);
        if state == connection.state {
            return None;
        }
        self.states
            .record(&connection.id, state, error, Utc::now().timestamp_micros());
        Some(state)
    }

    /// When connections were last called, for the store in batches.
    pub fn uses(&self) -> Arc<LastUses> {
        self.uses.clone()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn platform(&self, key: &str) -> Option<&Platform> {
        self.catalog.get(key)
    }

    /// Whether `credentials` are exactly what `platform` takes (see `create`).
    pub fn check_credentials(
        platform: &Platform,
        credentials: &OpenCredentials,
    ) -> Result<(), IntegrationError> {
        check_credentials(platform, credentials).map(drop)
    }

    pub async fn by_key(
        &self,
        environment: Environment,
        key: &str,
    ) -> Result<Option<IntegrationConnection>, IntegrationError> {
        self.states.flush().await;
        Ok(self
            .store
            .sealed_integration_by_key(environment, key)
            .await?
            .map(|s| s.connection))
    }

    /// A new credential for an existing connection (same id and key, `version` bumped,
    /// health started over in `state`): how a `failed` connection comes back.
    pub async fn renew_credentials(
        &self,
        environment: Environment,
        key: &str,
        credentials: OpenCredentials,
        state: ConnectionState,
    ) -> Result<IntegrationConnection, IntegrationError> {
        let connection = self
            .by_key(environment, key)
            .await?
            .ok_or(IntegrationError::NotFound)?;
        let patch = Patch {
            credentials: Some(credentials),
            ..Patch::default()
        };
        let mut renewed = self.patch(environment, &connection.id, patch).await?;
        if state != renewed.state {
            let change = self
                .store
                .set_integration_state(&renewed.id, state, None, Utc::now().timestamp_micros())
                .await?;
            self.snapshots.applied(change).await;
            renewed.state = state;
        }
        Ok(renewed)
    }

    #[tracing::instrument(skip_all, fields(environment = environment.as_str(), platform = %request.platform))]
    pub async fn create(
        &self,
        environment: Environment,
        request: CreateIntegration,
    ) -> Result<IntegrationConnection, IntegrationError> {
        let platform = self.catalog.get(&request.platform).ok_or_else(|| {
            invalid(
                "platform",
                format!(
                    "platform '{}' is not in the connector catalog",
                    echo(&request.platform)
                ),
            )
        })?;
        let expires_at = check_credentials(platform, &request.credentials)?;
        validate_identity(&request.identity)?;
        validate_name(&request.name)?;
        validate_tags(&request.tags)?;

        let id = uuid::Uuid::new_v4().to_string();
        let sealed = seal_credentials(&self.sealer, &id, environment, &request.credentials);
        let connection = IntegrationConnection {
            key: format!(
                "{}::{}::default::{}",
                environment.as_str(),
                platform.key,
                uuid::Uuid::new_v4().simple()
            ),
            id,
            environment,
            platform: platform.key.clone(),
            platform_version: platform.version.clone(),
            name: request.name,
            identity: request.identity,
            identity_type: request.identity_type,
            tags: request.tags,
            version: "1.0.0".into(),
            active: request.active,
            state: request.state,
            created_at: Utc::now().timestamp_micros(),
            credential_generation: 1,
            health: Health {
                expires_at,
                ..Health::default()
            },
        };
        let change = self.store.insert_integration(&connection, &sealed).await?;
        self.snapshots.applied(change).await;
        tracing::info!(connection_id = %connection.id, "integration connection created");
        Ok(connection)
    }

    pub async fn list(
        &self,
        environment: Environment,
        filter: &ListFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<IntegrationConnection>, u64), IntegrationError> {
        self.states.flush().await;
        // Read before the store is: a change applied meanwhile makes what is counted now
        // kept for a generation already gone, so it is counted again next time.
        let generation = self.snapshots.generation(Entity::Integration);
        if let Some(total) = generation.and_then(|g| self.totals.get(environment, filter, g)) {
            let page = self
                .store
                .integration_page(environment, filter, offset, limit)
                .await?;
            return Ok((page, total));
        }
        let (page, total) = self
            .store
            .list_integrations(environment, filter, offset, limit)
            .await?;
        if let Some(generation) = generation {
            self.totals.put(environment, filter, generation, total);
        }
        Ok((page, total))
    }

    pub async fn get(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<IntegrationConnection, IntegrationError> {
        // What this process's calls observed is part of what the caller reads.
        self.states.flush().await;
        self.store
            .get_integration(environment, id)
            .await?
            .ok_or(IntegrationError::NotFound)
    }

    pub async fn patch(
        &self,
        environment: Environment,
        id: &str,
        patch: Patch,
    ) -> Result<IntegrationConnection, IntegrationError> {
        if let Some(tags) = &patch.tags {
            validate_tags(tags)?;
        }
        if let Some(name) = &patch.name {
            validate_name(name)?;
        }
        let mut connection = self.get(environment, id).await?;
        if patch
            .expected_version
            .as_ref()
            .is_some_and(|v| *v != connection.version)
        {
            return Err(IntegrationError::Conflict);
        }
        let mut expires_at = None;
        if let Some(credentials) = &patch.credentials {
            let platform = self
                .catalog
                .get(&connection.platform)
                .ok_or(IntegrationError::NotFound)?;
            expires_at = check_credentials(platform, credentials)?;
        }
        if let Some(tags) = patch.tags {
            connection.tags = tags;
        }
        if let Some(name) = patch.name {
            connection.name = name;
        }
        if let Some(active) = patch.active {
            connection.active = active;
        }
        let previous = connection.version.clone();
        connection.version = bump_version(&previous);
        // Only if nobody else changed it meanwhile; otherwise the caller retries.
        let mut change = self
            .store
            .update_integration(&connection, &previous)
            .await?
            .ok_or(IntegrationError::Conflict)?;
        if let Some(credentials) = &patch.credentials {
            let sealed = seal_credentials(&self.sealer, &connection.id, environment, credentials);
            change = self
                .store
                .set_integration_credentials(&connection.id, &sealed, expires_at)
                .await?;
            // Read back: the new credential starts a new health record.
            connection = self.get(environment, id).await?;
        }
        self.snapshots.applied(change).await;
        Ok(connection)
    }

    pub async fn delete(&self, environment: Environment, id: &str) -> Result<(), IntegrationError> {
        if let Some(change) = self.store.delete_integration(environment, id).await? {
            self.snapshots.applied(change).await;
            tracing::info!(connection_id = %id, "integration connection deleted");
            Ok(())
        } else {
            Err(IntegrationError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_holds_for_its_generation_and_filter_only() {
        let totals = ListTotals::default();
        let tagged = |tag: &str| ListFilter {
            tags: vec![tag.into()],
            active: true,
            ..ListFilter::default()
        };
        totals.put(Environment::Test, &tagged("a"), 7, 42);
        assert_eq!(totals.get(Environment::Test, &tagged("a"), 7), Some(42));
        assert_eq!(
            totals.get(Environment::Test, &tagged("a"), 8),
            None,
            "a change since"
        );
        assert_eq!(totals.get(Environment::Live, &tagged("a"), 7), None);
        assert_eq!(totals.get(Environment::Test, &tagged("b"), 7), None);
        // Full: the older generation's totals go first, the current one's stay.
        for n in 0..ListTotals::MAX {
            totals.put(Environment::Test, &tagged(&n.to_string()), 9, n as u64);
        }
        assert_eq!(totals.get(Environment::Test, &tagged("a"), 7), None);
        assert_eq!(totals.get(Environment::Test, &tagged("5"), 9), Some(5));
        assert!(totals.0.lock().unwrap().len() <= ListTotals::MAX);
    }

    #[test]
    fn versions_bump_their_patch_number() {
        assert_eq!(bump_version("1.0.0"), "1.0.1");
        assert_eq!(bump_version("2.3.9"), "2.3.10");
        assert_eq!(bump_version("junk"), "1.0.1");
    }

    #[test]
    fn secrets_name_their_environment() {
        assert_eq!(
            Environment::of_secret("sk_test_abc"),
            Some(Environment::Test)
        );
        assert_eq!(
            Environment::of_secret("sk_live_abc"),
            Some(Environment::Live)
        );
        assert_eq!(Environment::of_secret("pk_live_abc"), None);
        let s = VaultSecrets::generate(Environment::Live);
        assert!(s.expose_secret().starts_with("sk_live_"));
        assert_eq!(s.expose_secret().len(), 8 + SECRET_RANDOM_LEN);
    }
}
