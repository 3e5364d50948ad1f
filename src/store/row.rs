//! Connection rows as JSON objects built by the database: one decoding for every backend.

use serde::Deserialize;

use super::{SealedCredential, StoreError};
use crate::domain::allowlist::{AllowEntry, IpAllowlist};
use crate::domain::data_connection::{ClientType, DataConnection, TeamScope};
use crate::domain::time::Timestamp;
use crate::domain::token::User;

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
}

pub fn corrupt(what: &str, id: i64) -> StoreError {
    StoreError::Corrupt(format!("data connection {id}: {what}"))
}

impl ConnectionRow {
    pub fn into_domain(self) -> Result<DataConnection, StoreError> {
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
        })
    }
}

pub fn parse_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("data connection row: {e}")))
}

use crate::domain::integration::{
    ConnectionState, Environment, Health, IdentityType, IntegrationConnection,
};

/// Columns of `integration_connections` in the order [`integration_from_row`] reads them.
/// The table is aliased `c` in every query that reads them.
pub const INTEGRATION_COLUMNS: &str = "c.id, c.environment, c.platform, c.platform_version, c.name, c.connection_key, \
     c.identity, c.identity_type, CAST(c.tags AS TEXT) AS tags, c.version, c.active, c.state, c.created_at, \
     c.credential_generation, c.refresh_attempts, c.consecutive_failures, c.last_error, c.last_error_at, \
     c.last_refresh_at, c.expires_at, c.retry_at";

/// How many columns [`INTEGRATION_COLUMNS`] holds: the index of whatever a query adds after.
pub const INTEGRATION_COLUMN_COUNT: usize = {
    let list = INTEGRATION_COLUMNS.as_bytes();
    let (mut i, mut commas) = (0, 0);
    while i < list.len() {
        if list[i] == b',' {
            commas += 1;
        }
        i += 1;
    }
    commas + 1
};

/// An integration connection from a row that starts with [`INTEGRATION_COLUMNS`], for
/// either backend.
pub fn integration_from_row<'r, R>(row: &'r R) -> Result<IntegrationConnection, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = row.try_get(0)?;
    let bad = |what: &str| StoreError::Corrupt(format!("integration connection {id}: {what}"));
    let environment: String = row.try_get(1)?;
    let identity_type: String = row.try_get(7)?;
    let tags: String = row.try_get(8)?;
    let state: String = row.try_get(11)?;
    Ok(IntegrationConnection {
        environment: Environment::parse(&environment).ok_or_else(|| bad("environment"))?,
        identity_type: IdentityType::parse(&identity_type).ok_or_else(|| bad("identity_type"))?,
        state: ConnectionState::parse(&state).ok_or_else(|| bad("state"))?,
        tags: serde_json::from_str(&tags).map_err(|_| bad("tags"))?,
        platform: row.try_get(2)?,
        platform_version: row.try_get(3)?,
        name: row.try_get(4)?,
        key: row.try_get(5)?,
        identity: row.try_get(6)?,
        version: row.try_get(9)?,
        active: row.try_get(10)?,
        created_at: row.try_get(12)?,
        credential_generation: row.try_get(13)?,
        health: Health {
            refresh_attempts: row.try_get(14)?,
            consecutive_failures: row.try_get(15)?,
            last_error: row.try_get(16)?,
            last_error_at: row.try_get(17)?,
            last_refresh_at: row.try_get(18)?,
            expires_at: row.try_get(19)?,
            retry_at: row.try_get(20)?,
        },
        id,
    })
}

/// A connection and, in the column after [`INTEGRATION_COLUMNS`], its sealed credential.
pub fn integration_with_sealed_from_row<'r, R>(
    row: &'r R,
) -> Result<(IntegrationConnection, Vec<u8>), StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok((
        integration_from_row(row)?,
        row.try_get(INTEGRATION_COLUMN_COUNT)?,
    ))
}

/// A row of [`super::sql::LIST_SEALED`].
pub fn sealed_from_row<'r, R>(row: &'r R) -> Result<SealedCredential, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let environment: String = row.try_get(1)?;
    Ok(SealedCredential {
        id: row.try_get(0)?,
        environment: Environment::parse(&environment)
            .ok_or_else(|| StoreError::Corrupt(format!("environment {environment}")))?,
        generation: row.try_get(2)?,
        sealed: row.try_get(3)?,
    })
}
