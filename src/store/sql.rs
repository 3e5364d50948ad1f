//! Every statement the store runs, written once for both databases (`$N` placeholders, SQL
//! both accept). Where their SQL truly differs the difference is a [`Dialect`] word, with
//! the reason beside it.

use super::engine::{Bind, Kind, Statement};
use super::row::{INTEGRATION_COLUMNS, INTEGRATION_KINDS, SEALED_INTEGRATION_KINDS};
use crate::crypto::CredentialHash;
use crate::domain::allowlist::IpAllowlist;
use crate::domain::audit::{AuditEvent, AuditFilter};
use crate::domain::connect::{ConnectSession, PendingConsent, StoredStatus};
use crate::domain::console::ConsoleActorRef;
use crate::domain::integration::{ConnectionState, Environment, IntegrationConnection, ListFilter};
use crate::domain::ports::{ConnectionUpdate, Entity, RefreshFailure};
use crate::domain::webhook::{AfterAttempt, Attempt, DeliveryFilter, Endpoint, OutboxEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Builds a JSON object.
    fn json_object(self) -> &'static str {
        match self {
            Self::Sqlite => "json_object",
            Self::Postgres => "json_build_object",
        }
    }

    /// A JSON column inside a JSON object: SQLite keeps JSON as text, which `json()` makes
    /// JSON again; PostgreSQL's `jsonb` is JSON already.
    fn json_column(self) -> &'static str {
        match self {
            Self::Sqlite => "json",
            Self::Postgres => "",
        }
    }

    /// Where a string occurs in another (`(haystack, needle)`, 0 if nowhere).
    fn position(self) -> &'static str {
        match self {
            Self::Sqlite => "instr",
            Self::Postgres => "strpos",
        }
    }

    /// Locks the rows a read inside a write transaction returns, until it ends. SQLite has
    /// one writer, so a write transaction's reads are locked already.
    pub fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => "FOR UPDATE",
        }
    }
}

// ----------------------------------------------------------------------------------------
// Meta and named locks

pub fn get_meta(key: &str) -> Statement {
    Statement::new("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .returns(&[Kind::Bytes])
}

pub fn init_meta(key: &str, value: &[u8]) -> Statement {
    Statement::new("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
}

pub fn set_meta(key: &str, value: &[u8]) -> Statement {
    Statement::new(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
}

/// A lock held until the transaction ends, on a row of its own: run [`lock_row`] first
/// (once per name, ever), then [`lock`]. Writers on SQLite are serial anyway; on
/// PostgreSQL the UPDATE's row lock makes concurrent holders queue.
pub fn lock_row(name: &str) -> Statement {
    init_meta(&format!("lock:{name}"), &[])
}

pub fn lock(name: &str) -> Statement {
    Statement::new("UPDATE meta SET value = value WHERE key = $1").bind(format!("lock:{name}"))
}

// ----------------------------------------------------------------------------------------
// The change log

pub fn record_change(entity: Entity, id: &str, at: i64) -> Statement {
    Statement::new("INSERT INTO changes (entity, entity_id, at) VALUES ($1, $2, $3) RETURNING seq")
        .bind(entity.as_str())
        .bind(id)
        .bind(at)
        .returns(&[Kind::Int])
}

pub fn latest_change() -> Statement {
    Statement::new("SELECT COALESCE(MAX(seq), 0) FROM changes").returns(&[Kind::Int])
}

pub fn changes_after(seq: i64, limit: i64) -> Statement {
    Statement::new(
        "SELECT seq, entity, entity_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(limit)
    .returns(&[Kind::Int, Kind::Text, Kind::Text])
}

pub fn prune_changes(before: i64) -> Statement {
    Statement::new("DELETE FROM changes WHERE at < $1").bind(before)
}

// ----------------------------------------------------------------------------------------
// Users and API tokens

pub fn ensure_user(email: &str, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO users (email, created_at) VALUES ($1, $2) \
         ON CONFLICT (email) DO UPDATE SET email = excluded.email RETURNING id, email",
    )
    .bind(email)
    .bind(now)
    .returns(&[Kind::Int, Kind::Text])
}

pub fn insert_api_token(
    hash: &CredentialHash,
    team: Option<i64>,
    user: Option<i64>,
    now: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO api_tokens (token_hash, team_id, user_id, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(hash.as_slice())
    .bind(team)
    .bind(user)
    .bind(now)
    .returns(&[Kind::Int])
}

pub fn insert_first_api_token(hash: &CredentialHash, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO api_tokens (token_hash, team_id, user_id, created_at) \
         SELECT $1, NULL, NULL, $2 WHERE NOT EXISTS (SELECT 1 FROM api_tokens) RETURNING id",
    )
    .bind(hash.as_slice())
    .bind(now)
    .returns(&[Kind::Int])
}

pub fn find_api_token(hash: &CredentialHash) -> Statement {
    Statement::new(
        "SELECT t.id, t.team_id, t.user_id, u.email FROM api_tokens t \
         LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
    )
    .bind(hash.as_slice())
    .returns(&[Kind::Int, Kind::Int, Kind::Int, Kind::Text])
}

pub fn api_tokens() -> Statement {
    Statement::new(
        "SELECT t.id, t.team_id, t.user_id, u.email, t.created_at FROM api_tokens t \
         LEFT JOIN users u ON u.id = t.user_id ORDER BY t.id",
    )
    .returns(&[Kind::Int, Kind::Int, Kind::Int, Kind::Text, Kind::Int])
}

/// A token's team (NULL: global), if the token exists.
pub fn api_token_team(id: i64) -> Statement {
    Statement::new("SELECT id, team_id FROM api_tokens WHERE id = $1")
        .bind(id)
        .returns(&[Kind::Int, Kind::Int])
}

pub fn count_other_global_tokens(id: i64) -> Statement {
    Statement::new(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM api_tokens WHERE team_id IS NULL AND id <> $1",
    )
    .bind(id)
    .returns(&[Kind::Int])
}

pub fn delete_api_token(id: i64) -> Statement {
    Statement::new("DELETE FROM api_tokens WHERE id = $1").bind(id)
}

// ----------------------------------------------------------------------------------------
// Data connections: read as one JSON object each (see `row::ConnectionRow`). The global
// list is served from memory (`domain::ports::ConnectionPages`).

/// The data-connection reads, spelled for one dialect once at start-up.
pub struct ConnectionQueries {
    one: String,
    team_page: String,
    with_hash: String,
    all_with_hash: String,
}

impl ConnectionQueries {
    pub fn new(d: Dialect) -> Self {
        let (obj, json) = (d.json_object(), d.json_column());
        let object = format!(
            "{obj}('id', c.id, 'client_type', c.client_type, 'note', c.note, 'created_at', c.created_at, \
             'valid_until', c.valid_until, 'region_id', c.region_id, 'host', c.host, 'port', c.port, \
             'username', c.username, 'ip_allowlist', {json}(c.ip_allowlist), 'team_ids', {json}(c.team_ids), \
             'created_by', c.created_by, 'created_by_email', u.email, 'query_count', c.query_count, \
             'response_bytes', c.response_bytes, 'last_used_at', c.last_used_at)"
        );
        let from = "FROM data_connections c LEFT JOIN users u ON u.id = c.created_by";
        Self {
            one: format!("SELECT CAST({object} AS TEXT) {from} WHERE c.id = $1"),
            team_page: format!(
                "SELECT CAST({object} AS TEXT) {from} WHERE c.team_ids = $1 ORDER BY c.id \
                 LIMIT $2 OFFSET $3"
            ),
            with_hash: format!(
                "SELECT CAST({object} AS TEXT), {PASSWORD_COLUMNS} {from} WHERE c.id = $1"
            ),
            all_with_hash: format!("SELECT CAST({object} AS TEXT), {PASSWORD_COLUMNS} {from}"),
        }
    }

    pub fn one(&self, id: i64) -> Statement {
        Statement::new(self.one.clone())
            .bind(id)
            .returns(&[Kind::Text])
    }

    /// A page of the connections whose teams are exactly `[team]`.
    pub fn team_page(&self, team: i64, offset: i64, limit: i64) -> Statement {
        Statement::new(self.team_page.clone())
            .bind(Bind::Json(Some(serde_json::json!([team]))))
            .bind(limit)
            .bind(offset)
            .returns(&[Kind::Text])
    }

    pub fn with_hash(&self, id: i64) -> Statement {
        Statement::new(self.with_hash.clone())
            .bind(id)
            .returns(WITH_PASSWORD_KINDS)
    }

    pub fn all_with_hash(&self) -> Statement {
        Statement::new(self.all_with_hash.clone()).returns(WITH_PASSWORD_KINDS)
    }
}

/// A connection's password hashes, after its JSON (see `row::data_connection_credential`).
const PASSWORD_COLUMNS: &str =
    "c.password_hash, c.previous_password_hash, c.previous_password_until";
const WITH_PASSWORD_KINDS: &[Kind] = &[Kind::Text, Kind::Bytes, Kind::Bytes, Kind::Int];

/// Adds a batch of usage to one connection (gone connections match no row).
pub fn add_data_connection_usage(
    id: i64,
    queries: i64,
    bytes: i64,
    last_used_at: i64,
) -> Statement {
    Statement::new(
        "UPDATE data_connections SET query_count = query_count + $2, \
         response_bytes = response_bytes + $3, \
         last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $4 THEN $4 ELSE last_used_at END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(queries)
    .bind(bytes)
    .bind(last_used_at)
}

/// The usage of those of `ids` that exist (at most [`USAGE_CHANGE_IDS`] at a time).
pub fn data_connection_usages(ids: &[i64]) -> Statement {
    let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
    Statement::new(format!(
        "SELECT id, query_count, response_bytes, last_used_at FROM data_connections \
         WHERE id IN ({})",
        placeholders.join(", ")
    ))
    .bind_all(ids.iter().map(|&id| Bind::Int(id)))
    .returns(&[Kind::Int, Kind::Int, Kind::Int, Kind::Int])
}

/// How many connections' ids one usage change names: PostgreSQL's notification carries
/// them, and its payload stops at 8000 bytes (200 ids of 20 digits and a comma at most).
pub const USAGE_CHANGE_IDS: usize = 200;

pub fn add_integration_use(id: &str, at: i64) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET \
         last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $2 THEN $2 ELSE last_used_at END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(at)
}

/// Changes the fields `update` names, leaving the others as they are.
pub fn update_data_connection(id: i64, update: &ConnectionUpdate) -> Statement {
    let note = update.note.as_ref();
    let until = update.valid_until;
    let allowlist = update.ip_allowlist.as_ref();
    Statement::new(
        "UPDATE data_connections SET \
         note = CASE WHEN $2 THEN $3 ELSE note END, \
         valid_until = CASE WHEN $4 THEN CAST($5 AS BIGINT) ELSE valid_until END, \
         ip_allowlist = CASE WHEN $6 THEN $7 ELSE ip_allowlist END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(note.is_some())
    .bind(note.cloned().flatten())
    .bind(until.is_some())
    .bind(until.flatten().map(|t| t.as_millis()))
    .bind(allowlist.is_some())
    .bind(Bind::Json(Some(serde_json::Value::from(
        allowlist.map(IpAllowlist::to_strings).unwrap_or_default(),
    ))))
}

/// The new hash replaces the current one, which is kept until `previous_until` if given.
/// (Every expression on the right reads the row as it was.)
pub fn rotate_data_connection_password(
    id: i64,
    new_hash: &CredentialHash,
    previous_until: Option<i64>,
) -> Statement {
    Statement::new(
        "UPDATE data_connections SET \
         previous_password_hash = CASE WHEN CAST($3 AS BIGINT) IS NULL THEN NULL ELSE password_hash END, \
         previous_password_until = CAST($3 AS BIGINT), \
         password_hash = $2 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(new_hash.as_slice())
    .bind(previous_until)
}

/// A page size as SQL text. A literal rather than a parameter: PostgreSQL plans a prepared
/// statement once for any parameter values, and with `LIMIT $n` that plan assumes a tenth
/// of the table per page and hash-joins all of it (8 ms at 24k rows instead of 0.9 ms).
/// Page sizes are few (the API bounds them), so each has its cached statement.
fn page_size_literal(limit: i64) -> String {
    limit.clamp(0, 10_000).to_string()
}

pub fn count_team_data_connections(team: i64) -> Statement {
    Statement::new("SELECT CAST(COUNT(*) AS BIGINT) FROM data_connections WHERE team_ids = $1")
        .bind(Bind::Json(Some(serde_json::json!([team]))))
        .returns(&[Kind::Int])
}

/// The columns of a new data connection, in [`insert_data_connection`]'s order.
pub struct NewConnectionRow<'a> {
    pub client_type: &'a str,
    pub note: Option<&'a str>,
    pub created_at: i64,
    pub valid_until: Option<i64>,
    pub region_id: &'a str,
    pub host: &'a str,
    pub port: i64,
    pub username: &'a str,
    pub password_hash: &'a [u8],
    pub ip_allowlist: serde_json::Value,
    pub team_ids: Option<serde_json::Value>,
    pub created_by: Option<i64>,
}

pub fn insert_data_connection(c: NewConnectionRow<'_>) -> Statement {
    Statement::new(
        "INSERT INTO data_connections (client_type, note, created_at, valid_until, region_id, \
         host, port, username, password_hash, ip_allowlist, team_ids, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(c.client_type)
    .bind(c.note)
    .bind(c.created_at)
    .bind(c.valid_until)
    .bind(c.region_id)
    .bind(c.host)
    .bind(c.port)
    .bind(c.username)
    .bind(c.password_hash)
    .bind(Bind::Json(Some(c.ip_allowlist)))
    .bind(Bind::Json(c.team_ids))
    .bind(c.created_by)
    .returns(&[Kind::Int])
}

pub fn delete_data_connection(id: i64) -> Statement {
    Statement::new("DELETE FROM data_connections WHERE id = $1").bind(id)
}

// ----------------------------------------------------------------------------------------
// Vault secrets

pub fn insert_vault_secret(environment: Environment, hash: &CredentialHash, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO vault_secrets (environment, secret_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(environment.as_str())
    .bind(hash.as_slice())
    .bind(now)
    .returns(&[Kind::Int])
}

pub fn insert_first_vault_secret(
    environment: Environment,
    hash: &CredentialHash,
    now: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO vault_secrets (environment, secret_hash, created_at) \
         SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM vault_secrets WHERE environment = $1) \
         RETURNING id",
    )
    .bind(environment.as_str())
    .bind(hash.as_slice())
    .bind(now)
    .returns(&[Kind::Int])
}

pub fn find_vault_secret(hash: &CredentialHash) -> Statement {
    Statement::new(format!("{VAULT_SECRET} WHERE secret_hash = $1"))
        .bind(hash.as_slice())
        .returns(VAULT_SECRET_KINDS)
}

const VAULT_SECRET: &str = "SELECT id, environment, secret_hash, created_at FROM vault_secrets";
const VAULT_SECRET_KINDS: &[Kind] = &[Kind::Int, Kind::Text, Kind::Bytes, Kind::Int];

pub fn vault_secret(id: i64) -> Statement {
    Statement::new(format!("{VAULT_SECRET} WHERE id = $1"))
        .bind(id)
        .returns(VAULT_SECRET_KINDS)
}

pub fn vault_secrets() -> Statement {
    Statement::new(format!("{VAULT_SECRET} ORDER BY id")).returns(VAULT_SECRET_KINDS)
}

pub fn delete_vault_secret(id: i64) -> Statement {
    Statement::new("DELETE FROM vault_secrets WHERE id = $1").bind(id)
}

// ----------------------------------------------------------------------------------------
// Integration connections

pub fn insert_integration(c: &IntegrationConnection, sealed_credentials: &[u8]) -> Statement {
    Statement::new(
        "INSERT INTO integration_connections (id, environment, platform, platform_version, name, \
         connection_key, identity, identity_type, tags, version, active, state, created_at, sealed_credentials, \
         expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(c.id.as_str())
    .bind(c.environment.as_str())
    .bind(c.platform.as_str())
    .bind(c.platform_version.as_str())
    .bind(c.name.as_deref())
    .bind(c.key.as_str())
    .bind(c.identity.as_str())
    .bind(c.identity_type.as_str())
    .bind(tags_json(&c.tags))
    .bind(c.version.as_str())
    .bind(c.active)
    .bind(c.state.as_str())
    .bind(c.created_at)
    .bind(sealed_credentials)
    .bind(c.health.expires_at)
}

fn tags_json(tags: &[String]) -> Bind {
    Bind::Json(Some(serde_json::Value::from(tags.to_vec())))
}

/// Adds one tag of a stored connection, copying the columns lists filter and sort on from
/// the connection row.
pub fn insert_tag(connection_id: &str, tag: &str) -> Statement {
    Statement::new(
        "INSERT INTO integration_tags (environment, tag, active, created_at, connection_id, platform) \
         SELECT environment, $1, active, created_at, id, platform FROM integration_connections WHERE id = $2 \
         ON CONFLICT DO NOTHING",
    )
    .bind(tag)
    .bind(connection_id)
}

pub fn delete_tags(connection_id: &str) -> Statement {
    Statement::new("DELETE FROM integration_tags WHERE connection_id = $1").bind(connection_id)
}

pub fn update_integration(c: &IntegrationConnection, previous_version: &str) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET name = $1, tags = $2, active = $3, version = $4 \
         WHERE environment = $5 AND id = $6 AND version = $7",
    )
    .bind(c.name.as_deref())
    .bind(tags_json(&c.tags))
    .bind(c.active)
    .bind(c.version.as_str())
    .bind(c.environment.as_str())
    .bind(c.id.as_str())
    .bind(previous_version)
}

pub fn delete_integration(environment: Environment, id: &str) -> Statement {
    Statement::new("DELETE FROM integration_connections WHERE environment = $1 AND id = $2")
        .bind(environment.as_str())
        .bind(id)
}

pub fn get_integration(environment: Environment, id: &str) -> Statement {
    Statement::new(format!(
        "SELECT {INTEGRATION_COLUMNS} FROM integration_connections c WHERE c.environment = $1 AND c.id = $2"
    ))
    .bind(environment.as_str())
    .bind(id)
    .returns(INTEGRATION_KINDS)
}

pub fn integration_for_update(d: Dialect, id: &str) -> Statement {
    Statement::new(format!(
        "SELECT {INTEGRATION_COLUMNS} FROM integration_connections c WHERE c.id = $1 {}",
        d.for_update()
    ))
    .bind(id)
    .returns(INTEGRATION_KINDS)
}

fn sealed_integrations_where(clause: &str) -> String {
    format!(
        "SELECT {INTEGRATION_COLUMNS}, c.sealed_credentials FROM integration_connections c {clause}"
    )
}

pub fn sealed_integration_by_key(environment: Environment, key: &str) -> Statement {
    Statement::new(sealed_integrations_where(
        "WHERE c.environment = $1 AND c.connection_key = $2",
    ))
    .bind(environment.as_str())
    .bind(key)
    .returns(SEALED_INTEGRATION_KINDS)
}

pub fn sealed_integration(id: &str) -> Statement {
    Statement::new(sealed_integrations_where("WHERE c.id = $1"))
        .bind(id)
        .returns(SEALED_INTEGRATION_KINDS)
}

pub fn sealed_integrations() -> Statement {
    Statement::new(sealed_integrations_where("")).returns(SEALED_INTEGRATION_KINDS)
}

pub fn set_integration_state(
    id: &str,
    state: ConnectionState,
    error: Option<&str>,
    at: i64,
) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET state = $1, last_error = COALESCE($2, last_error), \
         last_error_at = CASE WHEN $2 IS NULL THEN last_error_at ELSE $3 END WHERE id = $4",
    )
    .bind(state.as_str())
    .bind(error)
    .bind(at)
    .bind(id)
}

pub fn set_integration_credentials(
    id: &str,
    sealed_credentials: &[u8],
    expires_at: Option<i64>,
) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET sealed_credentials = $1, state = 'unknown', \
         credential_generation = credential_generation + 1, expires_at = $2, retry_at = NULL, \
         consecutive_failures = 0 WHERE id = $3",
    )
    .bind(sealed_credentials)
    .bind(expires_at)
    .bind(id)
}

pub fn reseal_integration(id: &str, generation: i64, sealed_credentials: &[u8]) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET sealed_credentials = $1 \
         WHERE id = $2 AND credential_generation = $3",
    )
    .bind(sealed_credentials)
    .bind(id)
    .bind(generation)
}

// ----------------------------------------------------------------------------------------
// OAuth2 refresh bookkeeping

pub fn try_lease_refresh(id: &str, owner: &str, now: i64, until: i64) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET lease_owner = $1, lease_until = $2 \
         WHERE id = $3 AND (lease_until IS NULL OR lease_until < $4 OR lease_owner = $1)",
    )
    .bind(owner)
    .bind(until)
    .bind(id)
    .bind(now)
}

pub fn release_refresh_lease(id: &str, owner: &str) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET lease_owner = NULL, lease_until = NULL \
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
}

/// Written even if the lease ran out meanwhile: the provider may have rotated the refresh
/// token, and dropping the answer would lose the only valid one.
pub fn store_refreshed_credentials(
    id: &str,
    owner: &str,
    sealed_credentials: &[u8],
    expires_at: i64,
    at: i64,
) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET sealed_credentials = $1, \
         credential_generation = credential_generation + 1, expires_at = $2, retry_at = NULL, \
         state = 'operational', refresh_attempts = refresh_attempts + 1, consecutive_failures = 0, \
         last_refresh_at = $3, \
         lease_owner = CASE WHEN lease_owner = $4 THEN NULL ELSE lease_owner END, \
         lease_until = CASE WHEN lease_owner = $4 THEN NULL ELSE lease_until END \
         WHERE id = $5",
    )
    .bind(sealed_credentials)
    .bind(expires_at)
    .bind(at)
    .bind(owner)
    .bind(id)
}

pub fn record_refresh_failure(id: &str, owner: &str, failure: &RefreshFailure) -> Statement {
    Statement::new(
        "UPDATE integration_connections SET state = $1, consecutive_failures = $2, \
         refresh_attempts = refresh_attempts + 1, last_error = $3, last_error_at = $4, retry_at = $5, \
         lease_owner = CASE WHEN lease_owner = $6 THEN NULL ELSE lease_owner END, \
         lease_until = CASE WHEN lease_owner = $6 THEN NULL ELSE lease_until END \
         WHERE id = $7",
    )
    .bind(failure.state.as_str())
    .bind(failure.consecutive_failures)
    .bind(failure.error.as_str())
    .bind(failure.at)
    .bind(failure.retry_at)
    .bind(owner)
    .bind(id)
}

/// Active, not failed connections whose retry time has come (`$2` = now) or, not retrying,
/// whose token expires by `$1`, and that nobody holds a lease on; soonest first, `$3` at most.
pub fn due_refreshes(expiring_by: i64, now: i64, limit: i64) -> Statement {
    Statement::new(format!(
        "SELECT {INTEGRATION_COLUMNS} FROM integration_connections c \
         WHERE ((c.retry_at IS NULL AND c.expires_at <= $1) OR c.retry_at <= $2) \
         AND c.active = $4 AND c.state <> 'failed' AND (c.lease_until IS NULL OR c.lease_until < $2) \
         ORDER BY COALESCE(c.retry_at, c.expires_at) LIMIT $3"
    ))
    .bind(expiring_by)
    .bind(now)
    .bind(limit)
    .bind(true)
    .returns(INTEGRATION_KINDS)
}

// ----------------------------------------------------------------------------------------
// Integration lists

/// Numbers values as they are bound.
#[derive(Default)]
struct Binder {
    binds: Vec<Bind>,
}

impl Binder {
    fn bind(&mut self, value: impl Into<Bind>) -> String {
        self.binds.push(value.into());
        format!("${}", self.binds.len())
    }
}

/// One list call: its page (newest first) and its exact total, over the same filter.
pub struct IntegrationList {
    pub page: Statement,
    pub count: Statement,
}

/// The SQL of a list call. With a tag filter the query is driven by the tag table's index
/// range (environment, tag, active, created_at), which also carries the platform: the page
/// order and, unless another column is filtered, the exact total come from that range alone.
pub fn integration_list(
    environment: Environment,
    filter: &ListFilter,
    offset: i64,
    limit: i64,
) -> IntegrationList {
    let mut b = Binder::default();
    let first_tag = filter.tags.first();
    let d = if first_tag.is_some() { "t" } else { "c" };
    let mut on_driver = vec![format!(
        "{d}.environment = {}",
        b.bind(environment.as_str())
    )];
    if let Some(tag) = first_tag {
        on_driver.push(format!("t.tag = {}", b.bind(tag.as_str())));
    }
    on_driver.push(format!("{d}.active = {}", b.bind(filter.active)));
    if let Some(platform) = &filter.platform {
        on_driver.push(format!("{d}.platform = {}", b.bind(platform.as_str())));
    }
    for tag in filter.tags.iter().skip(1) {
        on_driver.push(format!(
            "EXISTS (SELECT 1 FROM integration_tags o WHERE o.environment = t.environment \
             AND o.tag = {} AND o.active = t.active AND o.created_at = t.created_at \
             AND o.connection_id = t.connection_id)",
            b.bind(tag.as_str())
        ));
    }
    let mut on_connection = Vec::new();
    for (column, value) in [
        ("platform_version", &filter.platform_version),
        ("name", &filter.name),
        ("identity", &filter.identity),
    ] {
        if let Some(v) = value {
            on_connection.push(format!("c.{column} = {}", b.bind(v.as_str())));
        }
    }
    if let Some(t) = filter.identity_type {
        on_connection.push(format!("c.identity_type = {}", b.bind(t.as_str())));
    }
    if let Some(state) = filter.state {
        on_connection.push(format!("c.state = {}", b.bind(state.as_str())));
    }
    if !filter.keys.is_empty() {
        let list: Vec<String> = filter.keys.iter().map(|k| b.bind(k.as_str())).collect();
        on_connection.push(format!("c.connection_key IN ({})", list.join(", ")));
    }

    let (driver_table, id) = if first_tag.is_some() {
        ("integration_tags t", "connection_id")
    } else {
        ("integration_connections c", "id")
    };
    let from = if first_tag.is_some() {
        "integration_tags t JOIN integration_connections c ON c.id = t.connection_id"
    } else {
        "integration_connections c"
    };
    let driver_only = on_connection.is_empty();
    let driver_clause = on_driver.join(" AND ");
    on_driver.append(&mut on_connection);
    let clause = on_driver.join(" AND ");
    let filter_binds = b.binds.clone();
    let (limit_at, offset_at) = (page_size_literal(limit), b.bind(offset));
    let (page, count) = if driver_only {
        // The page's keys come from the driver's index alone (skipping `offset` entries
        // there, not rows); only the page's rows are read from the table.
        (
            format!(
                "SELECT {INTEGRATION_COLUMNS} FROM (SELECT {d}.{id} AS id, {d}.created_at FROM {driver_table} \
                 WHERE {driver_clause} ORDER BY {d}.created_at DESC, {d}.{id} DESC LIMIT {limit_at} OFFSET {offset_at}) p \
                 JOIN integration_connections c ON c.id = p.id ORDER BY p.created_at DESC, p.id DESC"
            ),
            format!("SELECT COUNT(*) FROM {driver_table} WHERE {driver_clause}"),
        )
    } else {
        (
            format!(
                "SELECT {INTEGRATION_COLUMNS} FROM {from} WHERE {clause} \
                 ORDER BY {d}.created_at DESC, {d}.{id} DESC LIMIT {limit_at} OFFSET {offset_at}"
            ),
            format!("SELECT COUNT(*) FROM {from} WHERE {clause}"),
        )
    };
    IntegrationList {
        page: Statement::new(page)
            .bind_all(b.binds)
            .returns(INTEGRATION_KINDS),
        count: Statement::new(count)
            .bind_all(filter_binds)
            .returns(&[Kind::Int]),
    }
}

// ----------------------------------------------------------------------------------------
// Connect sessions.

const CONNECT_SESSION_COLUMNS: &str = "id, environment, identity, identity_type, platforms, tags, name, \
     reconnect_key, return_url, status, connection_key, error, created_at, expires_at, \
     oauth_platform, oauth_state_hash, oauth_verifier";

/// The columns of [`CONNECT_SESSION_COLUMNS`], as `row::connect_session` reads them.
pub const CONNECT_SESSION_KINDS: &[Kind] = &[
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Int,
    Kind::Int,
    Kind::Text,
    Kind::Bytes,
    Kind::Bytes,
];

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialise")
}

pub fn insert_connect_session(s: &ConnectSession, token_hash: &CredentialHash) -> Statement {
    Statement::new(
        "INSERT INTO connect_sessions (id, token_hash, environment, identity, identity_type, \
         platforms, tags, name, reconnect_key, return_url, status, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(s.id.as_str())
    .bind(&token_hash[..])
    .bind(s.environment.as_str())
    .bind(s.identity.as_str())
    .bind(s.identity_type.as_str())
    .bind(json_list(&s.platforms))
    .bind(json_list(&s.tags))
    .bind(s.name.as_deref())
    .bind(s.reconnect_key.as_deref())
    .bind(s.return_url.as_deref())
    .bind(s.status.as_str())
    .bind(s.created_at)
    .bind(s.expires_at)
}

pub fn connect_session_by_token(token_hash: &CredentialHash) -> Statement {
    Statement::new(format!(
        "SELECT {CONNECT_SESSION_COLUMNS} FROM connect_sessions WHERE token_hash = $1"
    ))
    .bind(&token_hash[..])
    .returns(CONNECT_SESSION_KINDS)
}

pub fn connect_session(id: &str) -> Statement {
    Statement::new(format!(
        "SELECT {CONNECT_SESSION_COLUMNS} FROM connect_sessions WHERE id = $1"
    ))
    .bind(id)
    .returns(CONNECT_SESSION_KINDS)
}

pub fn begin_connect_consent(id: &str, consent: &PendingConsent, now: i64) -> Statement {
    Statement::new(
        "UPDATE connect_sessions SET oauth_platform = $1, oauth_state_hash = $2, oauth_verifier = $3 \
         WHERE id = $4 AND status = 'pending' AND expires_at > $5",
    )
    .bind(consent.platform.as_str())
    .bind(&consent.state_hash[..])
    .bind(&consent.sealed_verifier[..])
    .bind(id)
    .bind(now)
}

/// With a state hash, the consent is forgotten as it is claimed: a state works once.
pub fn claim_connect_session(id: &str, state_hash: Option<&CredentialHash>, now: i64) -> Statement {
    match state_hash {
        None => Statement::new(
            "UPDATE connect_sessions SET status = 'completing' \
             WHERE id = $1 AND status = 'pending' AND expires_at > $2",
        )
        .bind(id)
        .bind(now),
        Some(hash) => Statement::new(
            "UPDATE connect_sessions SET status = 'completing', oauth_state_hash = NULL, \
             oauth_verifier = NULL WHERE id = $1 AND status = 'pending' AND expires_at > $2 \
             AND oauth_state_hash = $3",
        )
        .bind(id)
        .bind(now)
        .bind(&hash[..]),
    }
}

/// The verifier goes with the session's end: it is of no use after.
pub fn finish_connect_session(
    id: &str,
    status: StoredStatus,
    connection_key: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Statement {
    Statement::new(
        "UPDATE connect_sessions SET status = $1, connection_key = $2, error = $3, finished_at = $4, \
         oauth_state_hash = NULL, oauth_verifier = NULL \
         WHERE id = $5 AND status IN ('pending', 'completing')",
    )
    .bind(status.as_str())
    .bind(connection_key)
    .bind(error)
    .bind(now)
    .bind(id)
}

pub fn delete_connect_sessions_expired_before(before: i64) -> Statement {
    Statement::new("DELETE FROM connect_sessions WHERE expires_at < $1").bind(before)
}

// ----------------------------------------------------------------------------------------
// Console sessions

pub fn insert_console_session(
    id: &str,
    token_hash: &CredentialHash,
    actor: ConsoleActorRef,
    created_at: i64,
    expires_at: i64,
) -> Statement {
    let (token, secret) = match actor {
        ConsoleActorRef::ApiToken(id) => (Some(id), None),
        ConsoleActorRef::VaultSecret(id) => (None, Some(id)),
    };
    Statement::new(
        "INSERT INTO console_sessions (id, token_hash, api_token_id, vault_secret_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(token_hash.as_slice())
    .bind(token)
    .bind(secret)
    .bind(created_at)
    .bind(expires_at)
}

/// A session with the token or secret it acts as (NULL columns once that is gone).
pub fn console_session_by_token(token_hash: &CredentialHash, now: i64) -> Statement {
    Statement::new(
        "SELECT s.id, s.expires_at, t.id, t.team_id, t.user_id, u.email, v.id, v.environment \
         FROM console_sessions s \
         LEFT JOIN api_tokens t ON t.id = s.api_token_id \
         LEFT JOIN users u ON u.id = t.user_id \
         LEFT JOIN vault_secrets v ON v.id = s.vault_secret_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2",
    )
    .bind(token_hash.as_slice())
    .bind(now)
    .returns(&[
        Kind::Text,
        Kind::Int,
        Kind::Int,
        Kind::Int,
        Kind::Int,
        Kind::Text,
        Kind::Int,
        Kind::Text,
    ])
}

pub fn set_console_reveal(id: &str, sealed: &[u8]) -> Statement {
    Statement::new("UPDATE console_sessions SET reveal = $2 WHERE id = $1")
        .bind(id)
        .bind(sealed)
}

pub fn console_reveal(id: &str) -> Statement {
    Statement::new("SELECT reveal FROM console_sessions WHERE id = $1")
        .bind(id)
        .returns(&[Kind::Bytes])
}

/// Clears the reveal only if it is still the one read: of two readers, one gets it.
pub fn clear_console_reveal(id: &str, read: &[u8]) -> Statement {
    Statement::new("UPDATE console_sessions SET reveal = NULL WHERE id = $1 AND reveal = $2")
        .bind(id)
        .bind(read)
}

pub fn delete_console_session(id: &str) -> Statement {
    Statement::new("DELETE FROM console_sessions WHERE id = $1").bind(id)
}

pub fn delete_console_sessions_of(actor: ConsoleActorRef) -> Statement {
    match actor {
        ConsoleActorRef::ApiToken(id) => {
            Statement::new("DELETE FROM console_sessions WHERE api_token_id = $1").bind(id)
        }
        ConsoleActorRef::VaultSecret(id) => {
            Statement::new("DELETE FROM console_sessions WHERE vault_secret_id = $1").bind(id)
        }
    }
}

pub fn delete_console_sessions_expired_before(before: i64) -> Statement {
    Statement::new("DELETE FROM console_sessions WHERE expires_at < $1").bind(before)
}

// ----------------------------------------------------------------------------------------
// The audit log

pub fn insert_audit_event(e: &AuditEvent) -> Statement {
    Statement::new(
        "INSERT INTO audit_events (at, actor_kind, actor_id, actor_user, action, target, \
         request_id, client_ip, outcome, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.at)
    .bind(e.actor.kind.as_str())
    .bind(e.actor.id)
    .bind(e.actor.user.as_deref())
    .bind(e.action.as_str())
    .bind(e.target.as_deref())
    .bind(e.request_id.as_deref())
    .bind(e.client_ip.as_deref())
    .bind(e.outcome.as_str())
    .bind(e.status.map(i64::from))
}

pub const AUDIT_EVENT_KINDS: &[Kind] = {
    use Kind::{Int, Text};
    &[Int, Int, Text, Int, Text, Text, Text, Text, Text, Text, Int]
};

/// `WHERE a AND b ...`, or nothing without conditions.
fn where_all(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

/// A page of events newest first, and the count, over the same filter.
pub fn audit_events(filter: &AuditFilter, offset: i64, limit: i64) -> (Statement, Statement) {
    let mut b = Binder::default();
    let mut clauses = Vec::new();
    if let Some(kind) = filter.actor_kind {
        clauses.push(format!("actor_kind = {}", b.bind(kind.as_str())));
    }
    if let Some(id) = filter.actor_id {
        clauses.push(format!("actor_id = {}", b.bind(id)));
    }
    if let Some(user) = &filter.actor_user {
        clauses.push(format!("actor_user = {}", b.bind(user.as_str())));
    }
    if let Some(action) = &filter.action {
        clauses.push(format!("action = {}", b.bind(action.as_str())));
    }
    if let Some(target) = &filter.target {
        clauses.push(format!("target = {}", b.bind(target.as_str())));
    }
    if let Some(outcome) = filter.outcome {
        clauses.push(format!("outcome = {}", b.bind(outcome.as_str())));
    }
    if let Some(since) = filter.since {
        clauses.push(format!("at >= {}", b.bind(since)));
    }
    if let Some(until) = filter.until {
        clauses.push(format!("at < {}", b.bind(until)));
    }
    let clause = where_all(&clauses);
    let filter_binds = b.binds.clone();
    let offset_at = b.bind(offset);
    let page = Statement::new(format!(
        "SELECT id, at, actor_kind, actor_id, actor_user, action, target, request_id, client_ip, \
         outcome, CAST(status AS BIGINT) FROM audit_events {clause} \
         ORDER BY at DESC, id DESC LIMIT {} OFFSET {offset_at}",
        page_size_literal(limit)
    ))
    .bind_all(b.binds)
    .returns(AUDIT_EVENT_KINDS);
    let count = Statement::new(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_events {clause}"
    ))
    .bind_all(filter_binds)
    .returns(&[Kind::Int]);
    (page, count)
}

pub fn prune_audit_events(before: i64) -> Statement {
    Statement::new("DELETE FROM audit_events WHERE at < $1").bind(before)
}

// ----------------------------------------------------------------------------------------
// Webhooks: endpoints, the outbox, deliveries and their attempts, expiry notices

pub fn insert_webhook_event(e: &OutboxEvent) -> Statement {
    Statement::new(
        "INSERT INTO webhook_events (id, event_type, occurred_at, body) VALUES ($1, $2, $3, $4)",
    )
    .bind(e.id.as_str())
    .bind(e.event_type.as_str())
    .bind(e.occurred_at.as_millis())
    .bind(e.body.as_str())
}

/// A delivery for every endpoint that takes the event's type, due at once.
pub fn fan_out_webhook_event(d: Dialect, e: &OutboxEvent) -> Statement {
    Statement::new(format!(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, attempts, next_attempt_at, \
         lease_until, created_at) SELECT $1, id, 'pending', 0, $2, 0, $2 FROM webhook_endpoints \
         WHERE events = '*' OR {}(events, $3) > 0",
        d.position()
    ))
    .bind(e.id.as_str())
    .bind(e.occurred_at.as_millis())
    .bind(format!(",{},", e.event_type.as_str()))
}

const WEBHOOK_ENDPOINT_COLUMNS: &str =
    "w.id, w.source, w.url, w.events, w.created_at, w.sealed_secret";
pub const WEBHOOK_ENDPOINT_KINDS: &[Kind] = {
    use Kind::{Bytes, Int, Text};
    &[Text, Text, Text, Text, Int, Bytes]
};

/// Inserts an endpoint, or (a configured one seen again) updates its URL and events.
pub fn upsert_webhook_endpoint(e: &Endpoint) -> Statement {
    Statement::new(
        "INSERT INTO webhook_endpoints (id, source, url, events, sealed_secret, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, events = excluded.events",
    )
    .bind(e.id.as_str())
    .bind(e.source.as_str())
    .bind(e.url.as_str())
    .bind(e.events.stored())
    .bind(e.sealed_secret.as_deref())
    .bind(e.created_at.as_millis())
}

pub fn webhook_endpoints() -> Statement {
    Statement::new(format!(
        "SELECT {WEBHOOK_ENDPOINT_COLUMNS} FROM webhook_endpoints w ORDER BY w.created_at, w.id"
    ))
    .returns(WEBHOOK_ENDPOINT_KINDS)
}

pub fn reseal_webhook_endpoint(id: &str, previous: &[u8], sealed: &[u8]) -> Statement {
    Statement::new(
        "UPDATE webhook_endpoints SET sealed_secret = $1 WHERE id = $2 AND sealed_secret = $3",
    )
    .bind(sealed)
    .bind(id)
    .bind(previous)
}

/// An endpoint's deliveries' attempts, its deliveries, then the endpoint.
pub fn delete_webhook_endpoint(id: &str) -> [Statement; 3] {
    [
        Statement::new(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        )
        .bind(id),
        Statement::new("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(id),
        Statement::new("DELETE FROM webhook_endpoints WHERE id = $1").bind(id),
    ]
}

/// Leases due, unleased deliveries. The outer conditions are checked again on each row as
/// it is locked (PostgreSQL re-reads a row another transaction changed meanwhile), so two
/// processes claiming at once never both take one.
pub fn claim_webhook_deliveries(owner: &str, now: i64, until: i64, limit: i64) -> Statement {
    Statement::new(format!(
        "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 \
         WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
         AND next_attempt_at <= $3 AND lease_until <= $3 ORDER BY next_attempt_at LIMIT {}) \
         AND state = 'pending' AND lease_until <= $3",
        page_size_literal(limit)
    ))
    .bind(owner)
    .bind(until)
    .bind(now)
}

pub fn any_webhook_delivery_due(now: i64) -> Statement {
    Statement::new(
        "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
         AND lease_until <= $1 LIMIT 1",
    )
    .bind(now)
    .returns(&[Kind::Int])
}

pub fn claimed_webhook_deliveries(owner: &str) -> Statement {
    Statement::new(format!(
        "SELECT d.id, d.attempts, e.id, e.event_type, e.occurred_at, e.body, {WEBHOOK_ENDPOINT_COLUMNS} \
         FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
         JOIN webhook_endpoints w ON w.id = d.endpoint_id \
         WHERE d.lease_owner = $1 AND d.state = 'pending' ORDER BY d.id"
    ))
    .bind(owner)
    .returns(CLAIMED_DELIVERY_KINDS)
}

/// The delivery's id and attempts, its event's columns, then [`WEBHOOK_ENDPOINT_KINDS`].
const CLAIMED_DELIVERY_KINDS: &[Kind] = {
    use Kind::{Bytes, Int, Text};
    &[
        Int, Int, Text, Text, Int, Text, Text, Text, Text, Text, Int, Bytes,
    ]
};

/// Recorded once even if two processes tried the same delivery (a lease ran out).
pub fn insert_webhook_attempt(delivery_id: i64, number: i64, a: &Attempt) -> Statement {
    Statement::new(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, latency_ms, error) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(delivery_id)
    .bind(number)
    .bind(a.at.as_millis())
    .bind(a.status.map(i64::from))
    .bind(a.latency_ms)
    .bind(a.error.as_deref())
}

/// A delivery another process delivered meanwhile stays delivered.
pub fn finish_webhook_attempt(delivery_id: i64, a: &Attempt, after: AfterAttempt) -> Statement {
    let at = a.at.as_millis();
    let (state, next, delivered) = match after {
        AfterAttempt::Delivered => ("delivered", at, Some(at)),
        AfterAttempt::RetryAt(next) => ("pending", next.as_millis(), None),
        AfterAttempt::GiveUp => ("failed", at, None),
    };
    Statement::new(
        "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_attempt_at = $2, \
         lease_owner = NULL, lease_until = 0, last_status = $3, last_error = $4, \
         last_attempt_at = $5, delivered_at = $6 WHERE id = $7 AND state = 'pending'",
    )
    .bind(state)
    .bind(next)
    .bind(a.status.map(i64::from))
    .bind(a.error.as_deref())
    .bind(at)
    .bind(delivered)
    .bind(delivery_id)
}

pub fn release_webhook_delivery(delivery_id: i64, owner: &str) -> Statement {
    Statement::new(
        "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = 0 \
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind(delivery_id)
    .bind(owner)
}

const WEBHOOK_DELIVERY_COLUMNS: &str = "d.id, d.event_id, e.event_type, d.endpoint_id, d.state, \
     d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.last_attempt_at, \
     d.delivered_at, d.created_at";
pub const WEBHOOK_DELIVERY_KINDS: &[Kind] = {
    use Kind::{Int, Text};
    &[
        Int, Text, Text, Text, Text, Int, Int, Int, Text, Int, Int, Int,
    ]
};

/// A page of deliveries newest first, and the count, over the same filter.
pub fn webhook_deliveries(
    filter: &DeliveryFilter,
    offset: i64,
    limit: i64,
) -> (Statement, Statement) {
    let mut b = Binder::default();
    let mut clauses = Vec::new();
    if let Some(state) = filter.state {
        clauses.push(format!("d.state = {}", b.bind(state.as_str())));
    }
    if let Some(endpoint) = &filter.endpoint_id {
        clauses.push(format!("d.endpoint_id = {}", b.bind(endpoint.as_str())));
    }
    if let Some(t) = filter.event_type {
        clauses.push(format!("e.event_type = {}", b.bind(t.as_str())));
    }
    let clause = where_all(&clauses);
    let filter_binds = b.binds.clone();
    let offset_at = b.bind(offset);
    let from = "FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id";
    let page = Statement::new(format!(
        "SELECT {WEBHOOK_DELIVERY_COLUMNS} {from} {clause} ORDER BY d.id DESC LIMIT {} OFFSET {offset_at}",
        page_size_literal(limit)
    ))
    .bind_all(b.binds)
    .returns(WEBHOOK_DELIVERY_KINDS);
    let count = Statement::new(format!("SELECT CAST(COUNT(*) AS BIGINT) {from} {clause}"))
        .bind_all(filter_binds)
        .returns(&[Kind::Int]);
    (page, count)
}

pub fn webhook_delivery(id: i64) -> Statement {
    Statement::new(format!(
        "SELECT {WEBHOOK_DELIVERY_COLUMNS} FROM webhook_deliveries d \
         JOIN webhook_events e ON e.id = d.event_id WHERE d.id = $1"
    ))
    .bind(id)
    .returns(WEBHOOK_DELIVERY_KINDS)
}

pub fn webhook_attempts(delivery_id: i64) -> Statement {
    Statement::new(
        "SELECT at, status, latency_ms, error FROM webhook_attempts WHERE delivery_id = $1 \
         ORDER BY attempt",
    )
    .bind(delivery_id)
    .returns(&[Kind::Int, Kind::Int, Kind::Int, Kind::Text])
}

pub fn count_pending_webhook_deliveries() -> Statement {
    Statement::new(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries WHERE state = 'pending'",
    )
    .returns(&[Kind::Int])
}

/// Connections whose `valid_until` lies in `(after, by]` and that have no notice for
/// `lead_ms` at that `valid_until` yet.
pub fn unannounced_expiries(after: i64, by: i64, lead_ms: i64, limit: i64) -> Statement {
    Statement::new(format!(
        "SELECT c.id, c.valid_until FROM data_connections c \
         WHERE c.valid_until > $1 AND c.valid_until <= $2 AND NOT EXISTS \
         (SELECT 1 FROM webhook_expiry_notices n WHERE n.connection_id = c.id \
         AND n.valid_until = c.valid_until AND n.lead_ms = $3) ORDER BY c.valid_until LIMIT {}",
        page_size_literal(limit)
    ))
    .bind(after)
    .bind(by)
    .bind(lead_ms)
    .returns(&[Kind::Int, Kind::Int])
}

pub fn insert_expiry_notice(connection_id: i64, valid_until: i64, lead_ms: i64) -> Statement {
    Statement::new(
        "INSERT INTO webhook_expiry_notices (connection_id, valid_until, lead_ms) \
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(connection_id)
    .bind(valid_until)
    .bind(lead_ms)
}

/// Done events (every delivery delivered or given up, or none) older than `$1`, with
/// their deliveries and attempts; and notices for expiries that long past.
pub fn prune_webhook_events(before: i64) -> [Statement; 4] {
    [
        Statement::new(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT d.id FROM \
             webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
             WHERE e.occurred_at < $1 AND d.state <> 'pending')",
        )
        .bind(before),
        Statement::new(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND event_id IN \
             (SELECT id FROM webhook_events WHERE occurred_at < $1)",
        )
        .bind(before),
        Statement::new(
            "DELETE FROM webhook_events WHERE occurred_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .bind(before),
        Statement::new("DELETE FROM webhook_expiry_notices WHERE valid_until < $1").bind(before),
    ]
}
