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
use sqlx::{Row, query};

use super::row::{
    ConnectionRow, corrupt, integration_from_row, integration_with_sealed_from_row, parse_json,
    sealed_from_row,
};
use super::sql::{self, Statement, bind_all};
use super::{DUMP_FORMAT, DUMP_VERSION, Dump, SealedCredential, Store, StoreError};
use crate::crypto::CredentialHash;
use crate::domain::data_connection::{DataConnection, NewDataConnection, TeamScope};
use crate::domain::integration::{Environment, IntegrationConnection, ListFilter};
use crate::domain::time::Timestamp;
use crate::domain::token::{Principal, TokenScope, User};

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://` URL and applies migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
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
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        Self::migrate_pool(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { reader, writer })
    }

    async fn migrate_pool(writer: &SqlitePool) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite").run(writer).await?;
        Ok(())
    }
}

fn map_write_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict(db.message().to_owned());
    }
    StoreError::Database(e)
}

/// A connection as one JSON object built by SQLite. A page of connections comes back as a
/// single row holding a JSON array: sqlx hands every row from its SQLite worker thread to
/// the async side separately, and those handoffs, not the query, dominated list latency.
const CONNECTION_JSON: &str = "json_object(\
     'id', c.id, 'client_type', c.client_type, 'note', c.note, 'created_at', c.created_at, \
     'valid_until', c.valid_until, 'region_id', c.region_id, 'host', c.host, 'port', c.port, \
     'username', c.username, 'ip_allowlist', json(c.ip_allowlist), 'team_ids', json(c.team_ids), \
     'created_by', c.created_by, 'created_by_email', u.email)";

fn credential_from_row(
    row: &sqlx::sqlite::SqliteRow,
) -> Result<(DataConnection, CredentialHash), StoreError> {
    let connection = parse_json::<ConnectionRow>(row.try_get::<&str, _>(0)?)?.into_domain()?;
    let hash: Vec<u8> = row.try_get(1)?;
    let hash = CredentialHash::try_from(hash.as_slice())
        .map_err(|_| corrupt("password_hash length", connection.id))?;
    Ok((connection, hash))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn optimize(&self) -> Result<(), StoreError> {
        // Re-analyses only tables whose size changed a lot, each from a bounded sample.
        query("PRAGMA analysis_limit = 1000")
            .execute(&self.writer)
            .await?;
        query("PRAGMA optimize").execute(&self.writer).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn export(&self) -> Result<Dump, StoreError> {
        let pool = &self.writer;
        Ok(Dump {
            format: DUMP_FORMAT.into(),
            version: DUMP_VERSION,
            meta: sqlx::query_as("SELECT key, value FROM meta ORDER BY key").fetch_all(pool).await?,
            users: sqlx::query_as("SELECT id, email, created_at FROM users ORDER BY id").fetch_all(pool).await?,
            api_tokens: sqlx::query_as(
                "SELECT id, token_hash, team_id, user_id, created_at FROM api_tokens ORDER BY id",
            )
            .fetch_all(pool)
            .await?,
            data_connections: sqlx::query_as(
                "SELECT id, client_type, note, created_at, valid_until, region_id, host, CAST(port AS INTEGER) AS port, \
                 username, password_hash, CAST(ip_allowlist AS TEXT) AS ip_allowlist, CAST(team_ids AS TEXT) AS team_ids, created_by \
                 FROM data_connections ORDER BY id",
            )
            .fetch_all(pool)
            .await?,
            vault_secrets: sqlx::query_as("SELECT id, environment, secret_hash, created_at FROM vault_secrets ORDER BY id")
                .fetch_all(pool)
                .await?,
            integration_connections: sqlx::query_as(
                "SELECT id, environment, platform, platform_version, name, connection_key, identity, identity_type, \
                 CAST(tags AS TEXT) AS tags, version, active, state, created_at, sealed_credentials, \
                 credential_generation, expires_at, retry_at, refresh_attempts, consecutive_failures, last_error, \
                 last_error_at, last_refresh_at \
                 FROM integration_connections ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await?,
        })
    }

    async fn import(&self, dump: &Dump) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let occupied: i64 = query(
            "SELECT (SELECT COUNT(*) FROM api_tokens) + (SELECT COUNT(*) FROM data_connections) + (SELECT COUNT(*) FROM meta) \
             + (SELECT COUNT(*) FROM vault_secrets) + (SELECT COUNT(*) FROM integration_connections)",
        )
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        if occupied > 0 {
            return Err(StoreError::NotEmpty(
                "the target database already holds data; import needs an empty one",
            ));
        }
        for m in &dump.meta {
            query("INSERT INTO meta (key, value) VALUES (?, ?)")
                .bind(&m.key)
                .bind(&m.value)
                .execute(&mut *tx)
                .await?;
        }
        for u in &dump.users {
            query("INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)")
                .bind(u.id)
                .bind(&u.email)
                .bind(u.created_at)
                .execute(&mut *tx)
                .await?;
        }
        for t in &dump.api_tokens {
            query("INSERT INTO api_tokens (id, token_hash, team_id, user_id, created_at) VALUES (?, ?, ?, ?, ?)")
                .bind(t.id).bind(&t.token_hash).bind(t.team_id).bind(t.user_id).bind(t.created_at)
                .execute(&mut *tx).await?;
        }
        for c in &dump.data_connections {
            query(
                "INSERT INTO data_connections (id, client_type, note, created_at, valid_until, region_id, host, port, \
                 username, password_hash, ip_allowlist, team_ids, created_by) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(c.id).bind(&c.client_type).bind(&c.note).bind(c.created_at).bind(c.valid_until)
            .bind(&c.region_id).bind(&c.host).bind(c.port).bind(&c.username).bind(&c.password_hash)
            .bind(&c.ip_allowlist).bind(&c.team_ids).bind(c.created_by)
            .execute(&mut *tx).await?;
        }

        for v in &dump.vault_secrets {
            query("INSERT INTO vault_secrets (id, environment, secret_hash, created_at) VALUES (?, ?, ?, ?)")
                .bind(v.id)
                .bind(&v.environment)
                .bind(&v.secret_hash)
                .bind(v.created_at)
                .execute(&mut *tx)
                .await?;
        }
        for c in &dump.integration_connections {
            query(
                "INSERT INTO integration_connections (id, environment, platform, platform_version, name, connection_key, \
                 identity, identity_type, tags, version, active, state, created_at, sealed_credentials, \
                 credential_generation, expires_at, retry_at, refresh_attempts, consecutive_failures, last_error, \
                 last_error_at, last_refresh_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.id)
            .bind(&c.environment)
            .bind(&c.platform)
            .bind(&c.platform_version)
            .bind(&c.name)
            .bind(&c.connection_key)
            .bind(&c.identity)
            .bind(&c.identity_type)
            .bind(&c.tags)
            .bind(&c.version)
            .bind(c.active)
            .bind(&c.state)
            .bind(c.created_at)
            .bind(&c.sealed_credentials)
            .bind(c.credential_generation)
            .bind(c.expires_at)
            .bind(c.retry_at)
            .bind(c.refresh_attempts)
            .bind(c.consecutive_failures)
            .bind(&c.last_error)
            .bind(c.last_error_at)
            .bind(c.last_refresh_at)
            .execute(&mut *tx)
            .await?;
            let tags: Vec<String> = serde_json::from_str(&c.tags).map_err(|_| {
                StoreError::Corrupt(format!("integration connection {}: tags", c.id))
            })?;
            for tag in tags {
                query(sql::INSERT_TAG)
                    .bind(tag)
                    .bind(&c.id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.writer)
            .await?
            .map(|r| r.get(0)))
    }

    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.writer)
            .await?;
        self.get_meta(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("meta key {key} vanished")))
    }

    async fn ensure_user(&self, email: &str) -> Result<User, StoreError> {
        let row = query(
            "INSERT INTO users (email, created_at) VALUES (?, ?) \
             ON CONFLICT (email) DO UPDATE SET email = excluded.email RETURNING id, email",
        )
        .bind(email)
        .bind(Timestamp::now().as_millis())
        .fetch_one(&self.writer)
        .await?;
        Ok(User {
            id: row.get(0),
            email: row.get(1),
        })
    }

    async fn insert_api_token(
        &self,
        hash: &CredentialHash,
        scope: TokenScope,
        user: Option<&User>,
    ) -> Result<i64, StoreError> {
        let team = match scope {
            TokenScope::Global => None,
            TokenScope::Team(id) => Some(id),
        };
        let row = query(
            "INSERT INTO api_tokens (token_hash, team_id, user_id, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(hash.as_slice())
        .bind(team)
        .bind(user.map(|u| u.id))
        .bind(Timestamp::now().as_millis())
        .fetch_one(&self.writer)
        .await
        .map_err(map_write_error)?;
        Ok(row.get(0))
    }

    async fn insert_first_api_token(&self, hash: &CredentialHash) -> Result<bool, StoreError> {
        let done = query(
            "INSERT INTO api_tokens (token_hash, team_id, user_id, created_at) \
             SELECT ?, NULL, NULL, ? WHERE NOT EXISTS (SELECT 1 FROM api_tokens)",
        )
        .bind(hash.as_slice())
        .bind(Timestamp::now().as_millis())
        .execute(&self.writer)
        .await
        .map_err(map_write_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_api_token(&self, hash: &CredentialHash) -> Result<Option<Principal>, StoreError> {
        let row = query(
            "SELECT t.id, t.team_id, t.user_id, u.email FROM api_tokens t \
             LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user = match row.try_get::<Option<i64>, _>(2)? {
            Some(id) => Some(User {
                id,
                email: row.try_get(3)?,
            }),
            None => None,
        };
        Ok(Some(Principal {
            token_id: row.try_get(0)?,
            scope: match row.try_get::<Option<i64>, _>(1)? {
                None => TokenScope::Global,
                Some(team) => TokenScope::Team(team),
            },
            user,
        }))
    }

    async fn insert_data_connection(
        &self,
        new: NewDataConnection,
    ) -> Result<DataConnection, StoreError> {
        let allowlist =
            serde_json::to_string(&new.ip_allowlist.to_strings()).expect("strings serialise");
        let team_ids = match &new.teams {
            TeamScope::All => None,
            TeamScope::Teams(ids) => Some(serde_json::to_string(ids).expect("ints serialise")),
        };
        let row = query(
            "INSERT INTO data_connections (client_type, note, created_at, valid_until, region_id, \
             host, port, username, password_hash, ip_allowlist, team_ids, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(new.client_type.as_str())
        .bind(new.note.as_deref())
        .bind(new.created_at.as_millis())
        .bind(new.valid_until.map(Timestamp::as_millis))
        .bind(&new.region_id)
        .bind(&new.host)
        .bind(i64::from(new.port))
        .bind(&new.username)
        .bind(new.password_hash.as_slice())
        .bind(allowlist)
        .bind(team_ids)
        .bind(new.created_by.as_ref().map(|u| u.id))
        .fetch_one(&self.writer)
        .await
        .map_err(map_write_error)?;
        Ok(DataConnection {
            id: row.get(0),
            client_type: new.client_type,
            note: new.note,
            created_at: new.created_at,
            valid_until: new.valid_until,
            region_id: new.region_id,
            host: new.host,
            port: new.port,
            username: new.username,
            ip_allowlist: new.ip_allowlist,
            teams: new.teams,
            created_by: new.created_by,
        })
    }

    async fn list_data_connections(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<DataConnection>, u64), StoreError> {
        // One statement, so the page and the total describe the same state. The page's ids
        // come from the narrow index; only those rows are read in full.
        let row = query(&format!(
            "SELECT json_group_array({CONNECTION_JSON} ORDER BY c.id), \
             (SELECT COUNT(*) FROM data_connections) FROM \
             (SELECT id FROM data_connections INDEXED BY data_connections_page ORDER BY id LIMIT ? OFFSET ?) p \
             JOIN data_connections c ON c.id = p.id \
             LEFT JOIN users u ON u.id = c.created_by"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_one(&self.reader)
        .await?;
        let page: Vec<ConnectionRow> = parse_json(row.try_get::<&str, _>(0)?)?;
        let total: i64 = row.try_get(1)?;
        let connections = page
            .into_iter()
            .map(ConnectionRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok((connections, total as u64))
    }

    async fn list_data_connection_credentials(
        &self,
    ) -> Result<Vec<(DataConnection, CredentialHash)>, StoreError> {
        let rows = query(&format!(
            "SELECT {CONNECTION_JSON}, c.password_hash FROM data_connections c \
             LEFT JOIN users u ON u.id = c.created_by"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    async fn get_data_connection_credential(
        &self,
        id: i64,
    ) -> Result<Option<(DataConnection, CredentialHash)>, StoreError> {
        let row = query(&format!(
            "SELECT {CONNECTION_JSON}, c.password_hash FROM data_connections c \
             LEFT JOIN users u ON u.id = c.created_by WHERE c.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    async fn insert_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<(), StoreError> {
        query("INSERT INTO vault_secrets (environment, secret_hash, created_at) VALUES (?, ?, ?)")
            .bind(environment.as_str())
            .bind(hash.as_slice())
            .bind(Timestamp::now().as_millis())
            .execute(&self.writer)
            .await
            .map_err(map_write_error)?;
        Ok(())
    }

    async fn insert_first_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;

        let done = query(
            "INSERT INTO vault_secrets (environment, secret_hash, created_at) \
             SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM vault_secrets WHERE environment = ?)",
        )
        .bind(environment.as_str())
        .bind(hash.as_slice())
        .bind(Timestamp::now().as_millis())
        .bind(environment.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_write_error)?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_vault_secret(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<Environment>, StoreError> {
        let row = query("SELECT environment FROM vault_secrets WHERE secret_hash = ?")
            .bind(hash.as_slice())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| {
            let env: String = r.try_get(0)?;
            Environment::parse(&env)
                .ok_or_else(|| StoreError::Corrupt(format!("vault secret environment {env}")))
        })
        .transpose()
    }

    async fn insert_integration(
        &self,
        c: &IntegrationConnection,
        sealed_credentials: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        query(
            "INSERT INTO integration_connections (id, environment, platform, platform_version, name, \
             connection_key, identity, identity_type, tags, version, active, state, created_at, sealed_credentials, \
             expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(c.environment.as_str())
        .bind(&c.platform)
        .bind(&c.platform_version)
        .bind(&c.name)
        .bind(&c.key)
        .bind(&c.identity)
        .bind(c.identity_type.as_str())
        .bind(serde_json::to_string(&c.tags).expect("strings serialise"))
        .bind(&c.version)
        .bind(c.active)
        .bind(c.state.as_str())
        .bind(c.created_at)
        .bind(sealed_credentials)
        .bind(c.health.expires_at)
        .execute(&mut *tx).await
        .map_err(map_write_error)?;
        for tag in &c.tags {
            query(sql::INSERT_TAG)
                .bind(tag)
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_integrations(
        &self,
        environment: Environment,
        filter: &ListFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<IntegrationConnection>, u64), StoreError> {
        let list = sql::integration_list_sql(environment, filter);
        // One read transaction: the page and the total describe the same state.
        let mut tx = self.reader.begin().await?;
        let rows = bind_all(query(&list.page), &list.binds)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *tx)
            .await?;
        let total: i64 = bind_all(query(&list.count), &list.binds)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        tx.commit().await?;
        let connections = rows
            .iter()
            .map(integration_from_row)
            .collect::<Result<_, _>>()?;
        Ok((connections, total as u64))
    }

    async fn get_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<Option<IntegrationConnection>, StoreError> {
        query(&sql::GET_INTEGRATION)
            .bind(environment.as_str())
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(integration_from_row)
            .transpose()
    }

    async fn update_integration(
        &self,
        c: &IntegrationConnection,
        previous_version: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let done = query(
            "UPDATE integration_connections SET name = ?, tags = ?, active = ?, version = ? \
             WHERE environment = ? AND id = ? AND version = ?",
        )
        .bind(&c.name)
        .bind(serde_json::to_string(&c.tags).expect("strings serialise"))
        .bind(c.active)
        .bind(&c.version)
        .bind(c.environment.as_str())
        .bind(&c.id)
        .bind(previous_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        query("DELETE FROM integration_tags WHERE connection_id = ?")
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
        for tag in &c.tags {
            query(sql::INSERT_TAG)
                .bind(tag)
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = query("DELETE FROM integration_connections WHERE environment = ? AND id = ?")
            .bind(environment.as_str())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn execute(&self, statement: Statement) -> Result<u64, StoreError> {
        let done = bind_all(query(statement.sql()), statement.binds())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn purge_replaced(&self) {
        // secure_delete zeroed the old ciphertext's cell; the WAL may still hold the page
        // as it was, so it is checkpointed and emptied.
        if let Err(e) = query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
        {
            tracing::warn!(error = %e, "checkpoint after a credential replacement failed");
        }
    }

    async fn list_sealed_integrations(&self) -> Result<Vec<SealedCredential>, StoreError> {
        let rows = query(sql::LIST_SEALED).fetch_all(&self.writer).await?;
        rows.iter().map(sealed_from_row).collect()
    }

    async fn due_refreshes(
        &self,
        now: i64,
        expiring_by: i64,
        limit: i64,
    ) -> Result<Vec<IntegrationConnection>, StoreError> {
        let due = sql::due_refreshes(expiring_by, now, limit);
        bind_all(query(due.sql()), due.binds())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(integration_from_row)
            .collect()
    }

    async fn get_integration_by_key(
        &self,
        environment: Environment,
        key: &str,
    ) -> Result<Option<(IntegrationConnection, Vec<u8>)>, StoreError> {
        let row = query(&sql::GET_INTEGRATION_BY_KEY)
            .bind(environment.as_str())
            .bind(key)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref()
            .map(integration_with_sealed_from_row)
            .transpose()
    }

    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn count_data_connections(&self) -> Result<u64, StoreError> {
        let total: i64 = query("SELECT COUNT(*) FROM data_connections")
            .fetch_one(&self.reader)
            .await?
            .get(0);
        Ok(total as u64)
    }

    async fn get_data_connection(&self, id: i64) -> Result<Option<DataConnection>, StoreError> {
        let row = query(&format!(
            "SELECT {CONNECTION_JSON} FROM data_connections c \
             LEFT JOIN users u ON u.id = c.created_by WHERE c.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        match row {
            Some(row) => parse_json::<ConnectionRow>(row.try_get::<&str, _>(0)?)?
                .into_domain()
                .map(Some),
            None => Ok(None),
        }
    }

    async fn delete_data_connection(&self, id: i64) -> Result<bool, StoreError> {
        let done = query("DELETE FROM data_connections WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
