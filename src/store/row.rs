//! Rows as the domain knows them, decoded once for both databases.

use serde::Deserialize;

use super::engine::{Kind, Row};
use crate::crypto::CredentialHash;
use crate::domain::allowlist::{AllowEntry, IpAllowlist};
use crate::domain::audit::{Actor, ActorKind, AuditEvent, Outcome};
use crate::domain::connect::{ConnectSession, PendingConsent, StoredStatus};
use crate::domain::console::{ConsoleActor, ConsoleSession};
use crate::domain::data_connection::{ClientType, DataConnection, PasswordHashes, TeamScope};
use crate::domain::integration::{
    ConnectionState, Environment, Health, IdentityType, IntegrationConnection,
};
use crate::domain::ports::{
    ApiTokenInfo, Change, ChangeSeq, Entity, SealedIntegration, StoreError, VaultSecret,
};
use crate::domain::time::Timestamp;
use crate::domain::token::{Principal, TokenScope, User};
use crate::domain::usage::Usage;

/// A data connection as the JSON object the database builds (see `sql::ConnectionQueries`).
#[derive(Deserialize)]
pub struct ConnectionRow {
    id: i64,
    client_type: String,
    note: Option<String>,
    created_at: i64,
    valid_until: Option<i64>,
    region_id: String,
    host: String,
    port: u16,
    username: String,
    ip_allowlist: Vec<String>,
    team_ids: Option<Vec<i64>>,
    created_by: Option<i64>,
    created_by_email: Option<String>,
    #[serde(default)]
    query_count: i64,
    #[serde(default)]
    response_bytes: i64,
    #[serde(default)]
    last_used_at: Option<i64>,
}

fn corrupt(what: &str, id: i64) -> StoreError {
    StoreError::Corrupt(format!("data connection {id}: {what}"))
}

impl ConnectionRow {
    fn into_domain(self) -> Result<DataConnection, StoreError> {
        let id = self.id;
        let allowlist = self
            .ip_allowlist
            .iter()
            .map(|s| {
                s.parse::<AllowEntry>()
                    .map_err(|_| corrupt("ip_allowlist entry", id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let created_by = match (self.created_by, self.created_by_email) {
            (Some(user_id), Some(email)) => Some(User { id: user_id, email }),
            (None, _) => None,
            (Some(_), None) => return Err(corrupt("created_by refers to no user", id)),
        };
        Ok(DataConnection {
            id,
            client_type: ClientType::parse(&self.client_type)
                .ok_or_else(|| corrupt("client_type", id))?,
            note: self.note,
            created_at: Timestamp::from_millis(self.created_at),
            valid_until: self.valid_until.map(Timestamp::from_millis),
            region_id: self.region_id,
            host: self.host,
            port: self.port,
            username: self.username,
            ip_allowlist: IpAllowlist::new(allowlist),
            teams: self.team_ids.map_or(TeamScope::All, TeamScope::Teams),
            created_by,
            usage: stored_usage(self.query_count, self.response_bytes, self.last_used_at),
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("data connection row: {e}")))
}

/// A data connection from its JSON object.
pub fn data_connection(json: &str) -> Result<DataConnection, StoreError> {
    parse_json::<ConnectionRow>(json)?.into_domain()
}

/// Usage from its columns: the counters, and the last use in milliseconds.
fn stored_usage(queries: i64, response_bytes: i64, last_used_at: Option<i64>) -> Usage {
    Usage {
        queries: queries.max(0) as u64,
        response_bytes: response_bytes.max(0) as u64,
        last_used_at: last_used_at.map(Timestamp::from_millis),
    }
}

/// A row of `sql::data_connection_usages`: a connection's id and its usage.
pub fn data_connection_usage(mut row: Row) -> Result<(i64, Usage), StoreError> {
    Ok((
        row.int(0)?,
        stored_usage(row.int(1)?, row.int(2)?, row.opt_int(3)?),
    ))
}

/// A row of (connection JSON, password hash, previous hash, previous until).
pub fn data_connection_credential(
    mut row: Row,
) -> Result<(DataConnection, PasswordHashes), StoreError> {
    let connection = data_connection(&row.text(0)?)?;
    let hash = |bytes: Vec<u8>| {
        CredentialHash::try_from(bytes.as_slice())
            .map_err(|_| corrupt("password_hash length", connection.id))
    };
    let current = hash(row.bytes(1)?)?;
    let previous = match (row.opt_bytes(2)?, row.opt_int(3)?) {
        (Some(bytes), Some(until)) => Some((hash(bytes)?, Timestamp::from_millis(until))),
        _ => None,
    };
    Ok((connection, PasswordHashes { current, previous }))
}

/// Columns of `integration_connections` in the order [`integration`] reads them, aliased
/// `c` in every query that reads them.
pub const INTEGRATION_COLUMNS: &str = "c.id, c.environment, c.platform, c.platform_version, c.name, c.connection_key, \
     c.identity, c.identity_type, CAST(c.tags AS TEXT) AS tags, c.version, c.active, c.state, c.created_at, \
     c.credential_generation, c.refresh_attempts, c.consecutive_failures, c.last_error, c.last_error_at, \
     c.last_refresh_at, c.expires_at, c.retry_at, c.last_used_at";

const INTEGRATION_KIND_LIST: [Kind; 22] = {
    use Kind::{Bool, Int, Text};
    [
        Text, Text, Text, Text, Text, Text, Text, Text, Text, Text, Bool, Text, Int, Int, Int, Int,
        Text, Int, Int, Int, Int, Int,
    ]
};

pub const INTEGRATION_KINDS: &[Kind] = &INTEGRATION_KIND_LIST;

/// [`INTEGRATION_KINDS`] and the sealed credential after them.
pub const SEALED_INTEGRATION_KINDS: &[Kind] = &{
    let mut kinds = [Kind::Bytes; 23];
    let mut i = 0;
    while i < INTEGRATION_KIND_LIST.len() {
        kinds[i] = INTEGRATION_KIND_LIST[i];
        i += 1;
    }
    kinds
};

/// A page of rows that start with [`INTEGRATION_COLUMNS`].
pub fn integrations(rows: Vec<Row>) -> Result<Vec<IntegrationConnection>, StoreError> {
    rows.into_iter().map(|mut r| integration(&mut r)).collect()
}

/// An integration connection from a row that starts with [`INTEGRATION_COLUMNS`].
pub fn integration(row: &mut Row) -> Result<IntegrationConnection, StoreError> {
    let id = row.text(0)?;
    let bad = |what: &str| StoreError::Corrupt(format!("integration connection {id}: {what}"));
    let environment = row.text(1)?;
    let identity_type = row.text(7)?;
    let tags = row.text(8)?;
    let state = row.text(11)?;
    Ok(IntegrationConnection {
        environment: Environment::parse(&environment).ok_or_else(|| bad("environment"))?,
        identity_type: IdentityType::parse(&identity_type).ok_or_else(|| bad("identity_type"))?,
        state: ConnectionState::parse(&state).ok_or_else(|| bad("state"))?,
        tags: serde_json::from_str(&tags).map_err(|_| bad("tags"))?,
        platform: row.text(2)?,
        platform_version: row.text(3)?,
        name: row.opt_text(4)?,
        key: row.text(5)?,
        identity: row.text(6)?,
        version: row.text(9)?,
        active: row.bool(10)?,
        created_at: row.int(12)?,
        credential_generation: row.int(13)?,
        health: Health {
            refresh_attempts: row.int(14)?,
            consecutive_failures: row.int(15)?,
            last_error: row.opt_text(16)?,
            last_error_at: row.opt_int(17)?,
            last_refresh_at: row.opt_int(18)?,
            expires_at: row.opt_int(19)?,
            retry_at: row.opt_int(20)?,
            last_used_at: row.opt_int(21)?,
        },
        id,
    })
}

/// A connection and, in the column after [`INTEGRATION_COLUMNS`], its sealed credential.
pub fn sealed_integration(mut row: Row) -> Result<SealedIntegration, StoreError> {
    Ok(SealedIntegration {
        connection: integration(&mut row)?,
        sealed: row.bytes(INTEGRATION_KIND_LIST.len())?,
    })
}

pub fn environment(text: &str) -> Result<Environment, StoreError> {
    Environment::parse(text).ok_or_else(|| StoreError::Corrupt(format!("environment {text}")))
}

/// A row of (id, environment, secret_hash, created_at).
pub fn vault_secret(mut row: Row) -> Result<VaultSecret, StoreError> {
    let id = row.int(0)?;
    Ok(VaultSecret {
        id,
        environment: environment(&row.text(1)?)?,
        hash: CredentialHash::try_from(row.bytes(2)?.as_slice())
            .map_err(|_| StoreError::Corrupt(format!("vault secret {id}: hash length")))?,
        created_at: Timestamp::from_millis(row.int(3)?),
    })
}

/// A row of (id, team_id, user_id, email, created_at).
pub fn api_token_info(mut row: Row) -> Result<ApiTokenInfo, StoreError> {
    let user = match row.opt_int(2)? {
        Some(id) => Some(User {
            id,
            email: row.text(3)?,
        }),
        None => None,
    };
    Ok(ApiTokenInfo {
        id: row.int(0)?,
        scope: row.opt_int(1)?.map_or(TokenScope::Global, TokenScope::Team),
        user,
        created_at: Timestamp::from_millis(row.int(4)?),
    })
}

/// A row of `sql::console_session_by_token`; `None` when its token or secret is gone.
pub fn console_session(mut row: Row) -> Result<Option<ConsoleSession>, StoreError> {
    let id = row.text(0)?;
    let expires_at = row.int(1)?;
    let actor = if let Some(token_id) = row.opt_int(2)? {
        let user = match row.opt_int(4)? {
            Some(user_id) => Some(User {
                id: user_id,
                email: row.text(5)?,
            }),
            None => None,
        };
        ConsoleActor::Token(Principal {
            token_id,
            scope: row.opt_int(3)?.map_or(TokenScope::Global, TokenScope::Team),
            user,
        })
    } else if let Some(secret_id) = row.opt_int(6)? {
        ConsoleActor::Vault {
            secret_id,
            environment: environment(&row.text(7)?)?,
        }
    } else {
        return Ok(None);
    };
    Ok(Some(ConsoleSession {
        id,
        actor,
        expires_at,
    }))
}

/// A row of (seq, entity, entity_id): its seq, and the change unless it names an entity
/// this build does not know (a newer replica's).
pub fn change(mut row: Row) -> Result<(ChangeSeq, Option<Change>), StoreError> {
    let seq = ChangeSeq(row.int(0)?);
    let entity = row.text(1)?;
    let id = row.text(2)?;
    Ok((
        seq,
        Entity::parse(&entity).map(|entity| Change { seq, entity, id }),
    ))
}

/// A connect session from a row of `sql::CONNECT_SESSION_KINDS`.
pub fn connect_session(mut row: Row) -> Result<ConnectSession, StoreError> {
    let id = row.text(0)?;
    let bad = |what: &str| StoreError::Corrupt(format!("connect session {id}: {what}"));
    let environment = row.text(1)?;
    let identity_type = row.text(3)?;
    let platforms = row.text(4)?;
    let tags = row.text(5)?;
    let status = row.text(9)?;
    let consent = match (row.opt_text(14)?, row.opt_bytes(15)?, row.opt_bytes(16)?) {
        (Some(platform), Some(hash), Some(sealed_verifier)) => Some(PendingConsent {
            platform,
            state_hash: hash.try_into().map_err(|_| bad("oauth_state_hash"))?,
            sealed_verifier,
        }),
        _ => None,
    };
    Ok(ConnectSession {
        environment: Environment::parse(&environment).ok_or_else(|| bad("environment"))?,
        identity: row.text(2)?,
        identity_type: IdentityType::parse(&identity_type).ok_or_else(|| bad("identity_type"))?,
        platforms: serde_json::from_str(&platforms).map_err(|_| bad("platforms"))?,
        tags: serde_json::from_str(&tags).map_err(|_| bad("tags"))?,
        name: row.opt_text(6)?,
        reconnect_key: row.opt_text(7)?,
        return_url: row.opt_text(8)?,
        status: StoredStatus::parse(&status).ok_or_else(|| bad("status"))?,
        connection_key: row.opt_text(10)?,
        error: row.opt_text(11)?,
        created_at: row.int(12)?,
        expires_at: row.int(13)?,
        consent,
        id,
    })
}

/// A row of `sql::AUDIT_EVENT_KINDS`.
pub fn audit_event(mut row: Row) -> Result<AuditEvent, StoreError> {
    let id = row.int(0)?;
    let bad = |what: &str| StoreError::Corrupt(format!("audit event {id}: {what}"));
    let kind = row.text(2)?;
    let outcome = row.text(9)?;
    Ok(AuditEvent {
        id,
        at: row.int(1)?,
        actor: Actor {
            kind: ActorKind::parse(&kind).ok_or_else(|| bad("actor kind"))?,
            id: row.opt_int(3)?,
            user: row.opt_text(4)?,
        },
        action: row.text(5)?,
        target: row.opt_text(6)?,
        request_id: row.opt_text(7)?,
        client_ip: row.opt_text(8)?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| bad("outcome"))?,
        status: row
            .opt_int(10)?
            .map(|s| u16::try_from(s).map_err(|_| bad("status")))
            .transpose()?,
    })
}
