//! SQL both backends run as written. Placeholders are `$1`, `$2`, ...: PostgreSQL's own,
//! and sqlx's SQLite driver binds them the same way (by number, a repeated number being one
//! value), so one text serves both.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::query::Query;

use super::row::INTEGRATION_COLUMNS;
use crate::domain::integration::{ConnectionState, Environment, ListFilter};

/// A value bound into a shared statement.
pub enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// Binds `binds` in order onto a query of either backend.
pub fn bind_all<'q, DB>(
    mut query: Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    binds: &'q [Bind],
) -> Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for b in binds {
        query = match b {
            Bind::Text(v) => query.bind(v.as_str()),
            Bind::OptText(v) => query.bind(v.as_deref()),
            Bind::Int(v) => query.bind(*v),
            Bind::OptInt(v) => query.bind(*v),
            Bind::Bool(v) => query.bind(*v),
            Bind::Bytes(v) => query.bind(v.as_slice()),
        };
    }
    query
}

/// One shared statement and its values; built only here, run by [`super::Store::execute`].
pub struct Statement {
    sql: Cow<'static, str>,
    binds: Vec<Bind>,
}

impl Statement {
    pub fn sql(&self) -> &str {
        &self.sql
    }

    pub fn binds(&self) -> &[Bind] {
        &self.binds
    }
}

/// Adds one tag (`$1`) of a stored connection (`$2`), copying the columns lists filter
/// and sort on from the connection row.
pub const INSERT_TAG: &str = "INSERT INTO integration_tags (environment, tag, active, created_at, connection_id, platform) \
     SELECT environment, $1, active, created_at, id, platform FROM integration_connections WHERE id = $2 \
     ON CONFLICT DO NOTHING";

pub fn set_integration_state(
    id: &str,
    state: ConnectionState,
    error: Option<&str>,
    at: i64,
) -> Statement {
    Statement {
        sql: Cow::Borrowed(
            "UPDATE integration_connections SET state = $1, last_error = COALESCE($2, last_error), \
              last_error_at = CASE WHEN $2 IS NULL THEN last_error_at ELSE $3 END WHERE id = $4",
        ),
        binds: vec![
            Bind::Text(state.as_str().into()),
            Bind::OptText(error.map(str::to_owned)),
            Bind::Int(at),
            Bind::Text(id.into()),
        ],
    }
}

pub fn set_integration_credentials(
    id: &str,
    sealed_credentials: &[u8],
    expires_at: Option<i64>,
) -> Statement {
    Statement {
        sql: Cow::Borrowed(
            "UPDATE integration_connections SET sealed_credentials = $1, state = 'unknown', \
              credential_generation = credential_generation + 1, expires_at = $2, retry_at = NULL, \
              consecutive_failures = 0 WHERE id = $3",
        ),
        binds: vec![
            Bind::Bytes(sealed_credentials.to_vec()),
            Bind::OptInt(expires_at),
            Bind::Text(id.into()),
        ],
    }
}

pub fn reseal_integration(id: &str, generation: i64, sealed_credentials: &[u8]) -> Statement {
    Statement {
        sql: Cow::Borrowed(
            "UPDATE integration_connections SET sealed_credentials = $1 \
              WHERE id = $2 AND credential_generation = $3",
        ),
        binds: vec![
            Bind::Bytes(sealed_credentials.to_vec()),
            Bind::Text(id.into()),
            Bind::Int(generation),
        ],
    }
}

pub fn try_lease_refresh(id: &str, owner: &str, now: i64, until: i64) -> Statement {
    Statement {
        sql: Cow::Borrowed(
            "UPDATE integration_connections SET lease_owner = $1, lease_until = $2 \
              WHERE id = $3 AND (lease_until IS NULL OR lease_until < $4 OR lease_owner = $1)",
        ),
        binds: vec![
            Bind::Text(owner.into()),
            Bind::Int(until),
            Bind::Text(id.into()),
            Bind::Int(now),
        ],
    }
}

pub fn release_refresh_lease(id: &str, owner: &str) -> Statement {
    Statement {
        sql: Cow::Borrowed(
            "UPDATE integration_connections SET lease_owner = NULL, lease_until = NULL \
              WHERE id = $1 AND lease_owner = $2",
        ),
        binds: vec![Bind::Text(id.into()), Bind::Text(owner.into())],
    }
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
    Statement {
        sql: Cow::Borrowed(
            "UPDATE integration_connections SET sealed_credentials = $1, \
              credential_generation = credential_generation + 1, expires_at = $2, retry_at = NULL, \
              state = 'operational', refresh_attempts = refresh_attempts + 1, consecutive_failures = 0, \
              last_refresh_at = $3, \
              lease_owner = CASE WHEN lease_owner = $4 THEN NULL ELSE lease_owner END, \
              lease_until = CASE WHEN lease_owner = $4 THEN NULL ELSE lease_until END \
              WHERE id = $5",
        ),
        binds: vec![
            Bind::Bytes(sealed_credentials.to_vec()),
            Bind::Int(expires_at),
            Bind::Int(at),
            Bind::Text(owner.into()),
            Bind::Text(id.into()),
        ],
    }
}

pub fn record_refresh_failure(id: &str, owner: &str, failure: &super::RefreshFailure) -> Statement {
    Statement {
        sql: Cow::Borrowed(
            "UPDATE integration_connections SET state = $1, consecutive_failures = $2, \
              refresh_attempts = refresh_attempts + 1, last_error = $3, last_error_at = $4, retry_at = $5, \
              lease_owner = CASE WHEN lease_owner = $6 THEN NULL ELSE lease_owner END, \
              lease_until = CASE WHEN lease_owner = $6 THEN NULL ELSE lease_until END \
              WHERE id = $7",
        ),
        binds: vec![
            Bind::Text(failure.state.as_str().into()),
            Bind::Int(failure.consecutive_failures),
            Bind::Text(failure.error.clone()),
            Bind::Int(failure.at),
            Bind::OptInt(failure.retry_at),
            Bind::Text(owner.into()),
            Bind::Text(id.into()),
        ],
    }
}

/// Active, not failed connections whose retry time has come (`$2` = now) or, not retrying,
/// whose token expires by `$1`, and that nobody holds a lease on; soonest first, `$3` at most.
pub fn due_refreshes(expiring_by: i64, now: i64, limit: i64) -> Statement {
    Statement {
        sql: Cow::Owned(format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integration_connections c \
             WHERE ((c.retry_at IS NULL AND c.expires_at <= $1) OR c.retry_at <= $2) \
             AND c.active = $4 AND c.state <> 'failed' AND (c.lease_until IS NULL OR c.lease_until < $2) \
             ORDER BY COALESCE(c.retry_at, c.expires_at) LIMIT $3"
        )),
        binds: vec![
            Bind::Int(expiring_by),
            Bind::Int(now),
            Bind::Int(limit),
            Bind::Bool(true),
        ],
    }
}

/// One connection by environment (`$1`) and id (`$2`).
pub static GET_INTEGRATION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {INTEGRATION_COLUMNS} FROM integration_connections c WHERE c.environment = $1 AND c.id = $2"
    )
});

/// One connection by environment (`$1`) and key (`$2`), its sealed credential last.
pub static GET_INTEGRATION_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {INTEGRATION_COLUMNS}, c.sealed_credentials FROM integration_connections c \
         WHERE c.environment = $1 AND c.connection_key = $2"
    )
});

/// Every integration connection's credential, for key rotation.
pub const LIST_SEALED: &str = "SELECT id, environment, credential_generation, sealed_credentials FROM integration_connections";

/// One list call as SQL for a backend: `page` takes `binds` then the limit and the offset;
/// `count` takes `binds` alone.
pub struct ListSql {
    pub page: String,
    pub count: String,
    pub binds: Vec<Bind>,
}

/// Numbers values as they are bound.
#[derive(Default)]
struct Binder {
    binds: Vec<Bind>,
}

impl Binder {
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }
}

/// The SQL of a list call. With a tag filter the query is driven by the tag table's index range
/// (environment, tag, active, created_at), which also carries the platform: the page order
/// and, unless another column is filtered, the exact total come from that range alone.
pub fn integration_list_sql(environment: Environment, filter: &ListFilter) -> ListSql {
    let mut b = Binder::default();
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
    let (limit, offset) = (format!("${}", n + 1), format!("${}", n + 2));
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
