//! Connection rows as JSON objects built by the database: one decoding for every backend.

use serde::Deserialize;

use super::StoreError;
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
    ConnectionState, Environment, Health, IdentityType, IntegrationConnection, ListFilter,
};

/// Columns of `integration_connections` in the order [`integration_from_row`] reads them.
/// The table is aliased `c` in every query that reads them.
pub const INTEGRATION_COLUMNS: &str = "c.id, c.environment, c.platform, c.platform_version, c.name, c.connection_key, \
     c.identity, c.identity_type, CAST(c.tags AS TEXT) AS tags, c.version, c.active, c.state, c.created_at, \
     c.credential_generation, c.refresh_attempts, c.consecutive_failures, c.last_error, c.last_error_at, \
     c.last_refresh_at, c.expires_at, c.retry_at";

/// How many columns [`INTEGRATION_COLUMNS`] holds: the index of whatever a query adds after.
pub const INTEGRATION_COLUMN_COUNT: usize = 21;

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

/// A value bound into a list query.
pub enum Bind {
    Text(String),
    Bool(bool),
}

/// One list call as SQL for a backend: `page` takes `binds` then the limit and the offset;
/// `count` takes `binds` alone.
pub struct ListSql {
    pub page: String,
    pub count: String,
    pub binds: Vec<Bind>,
}

/// Numbers values as they are bound, in a backend's placeholder style.
struct Binder<P> {
    binds: Vec<Bind>,
    placeholder: P,
}

impl<P: Fn(usize) -> String> Binder<P> {
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        (self.placeholder)(self.binds.len())
    }
}

/// The SQL of a list call, for a backend's placeholder style (`placeholder(n)` for the n-th
/// value, from 1). With a tag filter the query is driven by the tag table's index range
/// (environment, tag, active, created_at), which also carries the platform: the page order
/// and, unless another column is filtered, the exact total come from that range alone.
pub fn integration_list_sql(
    environment: Environment,
    filter: &ListFilter,
    placeholder: impl Fn(usize) -> String,
) -> ListSql {
    let mut b = Binder {
        binds: Vec::new(),
        placeholder,
    };
    let first_tag = filter.tags.first();
    let d = if first_tag.is_some() { "t" } else { "c" };
    let mut on_driver = vec![format!(
        "{d}.environment = {}",
        b.bind(Bind::Text(environment.as_str().into()))
    )];
    if let Some(tag) = first_tag {
        on_driver.push(format!("t.tag = {}", b.bind(Bind::Text(tag.clone()))));
    }
    on_driver.push(format!(
        "{d}.active = {}",
        b.bind(Bind::Bool(filter.active))
    ));
    if let Some(platform) = &filter.platform {
        on_driver.push(format!(
            "{d}.platform = {}",
            b.bind(Bind::Text(platform.clone()))
        ));
    }
    for tag in filter.tags.iter().skip(1) {
        on_driver.push(format!(
            "EXISTS (SELECT 1 FROM integration_tags o WHERE o.environment = t.environment \
             AND o.tag = {} AND o.active = t.active AND o.created_at = t.created_at \
             AND o.connection_id = t.connection_id)",
            b.bind(Bind::Text(tag.clone()))
        ));
    }
    let mut on_connection = Vec::new();
    for (column, value) in [
        ("platform_version", &filter.platform_version),
        ("name", &filter.name),
        ("identity", &filter.identity),
    ] {
        if let Some(v) = value {
            on_connection.push(format!("c.{column} = {}", b.bind(Bind::Text(v.clone()))));
        }
    }
    if let Some(t) = filter.identity_type {
        on_connection.push(format!(
            "c.identity_type = {}",
            b.bind(Bind::Text(t.as_str().into()))
        ));
    }
    if !filter.keys.is_empty() {
        let list: Vec<String> = filter
            .keys
            .iter()
            .map(|k| b.bind(Bind::Text(k.clone())))
            .collect();
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
    let n = b.binds.len();
    let (limit, offset) = ((b.placeholder)(n + 1), (b.placeholder)(n + 2));
    let (page, count) = if driver_only {
        // The page's keys come from the driver's index alone (skipping `offset` entries
        // there, not rows); only the page's rows are read from the table.
        (
            format!(
                "SELECT {INTEGRATION_COLUMNS} FROM (SELECT {d}.{id} AS id, {d}.created_at FROM {driver_table} \
                 WHERE {driver_clause} ORDER BY {d}.created_at DESC, {d}.{id} DESC LIMIT {limit} OFFSET {offset}) p \
                 JOIN integration_connections c ON c.id = p.id ORDER BY p.created_at DESC, p.id DESC"
            ),
            format!("SELECT COUNT(*) FROM {driver_table} WHERE {driver_clause}"),
        )
    } else {
        (
            format!(
                "SELECT {INTEGRATION_COLUMNS} FROM {from} WHERE {clause} \
                 ORDER BY {d}.created_at DESC, {d}.{id} DESC LIMIT {limit} OFFSET {offset}"
            ),
            format!("SELECT COUNT(*) FROM {from} WHERE {clause}"),
        )
    };
    ListSql {
        page,
        count,
        binds: b.binds,
    }
}
