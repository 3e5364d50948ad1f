//! The shared store: PostgreSQL, for several replicas behind a load balancer. Changes to
//! who may authenticate reach every replica through LISTEN/NOTIFY (see the migration's
//! trigger).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Row, query};
use tokio::sync::mpsc;

use super::row::{
    ConnectionRow, corrupt, integration_from_row, integration_with_sealed_from_row, parse_json,
    sealed_from_row,
};
use super::sql::{self, Statement, bind_all};
use super::{DUMP_FORMAT, DUMP_VERSION, Dump, SealedCredential, Store, StoreError, StoreEvent};
use crate::crypto::CredentialHash;
use crate::domain::data_connection::{DataConnection, NewDataConnection, TeamScope};
use crate::domain::integration::{Environment, IntegrationConnection, ListFilter};
use crate::domain::time::Timestamp;
use crate::domain::token::{Principal, TokenScope, User};

const CHANNEL: &str = "switchboard_credentials";
/// Serialises the first-token bootstrap of replicas starting at once.
const BOOTSTRAP_LOCK: i64 = 0x5357_4254_424f_4f54;

pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
}

impl PostgresStore {
    /// Connects and, unless `migrate` is false, applies pending migrations (sqlx holds an
    /// advisory lock meanwhile, so replicas starting together do not race).
    pub async fn open(url: &str, migrate: bool) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("switchboard")
            .options([("statement_timeout", "30s"), ("lock_timeout", "10s")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        if migrate {
            Self::migrate_pool(&pool).await?;
        }
        Ok(Self { pool, options })
    }

    async fn migrate_pool(pool: &PgPool) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres").run(pool).await?;
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

const CONNECTION_JSON: &str = "json_build_object(\
     'id', c.id, 'client_type', c.client_type, 'note', c.note, 'created_at', c.created_at, \
     'valid_until', c.valid_until, 'region_id', c.region_id, 'host', c.host, 'port', c.port, \
     'username', c.username, 'ip_allowlist', c.ip_allowlist, 'team_ids', c.team_ids, \
     'created_by', c.created_by, 'created_by_email', u.email)";

fn credential_from_row(row: &PgRow) -> Result<(DataConnection, CredentialHash), StoreError> {
    let connection = parse_json::<ConnectionRow>(row.try_get::<&str, _>(0)?)?.into_domain()?;
    let hash: Vec<u8> = row.try_get(1)?;
    let hash = CredentialHash::try_from(hash.as_slice())
        .map_err(|_| corrupt("password_hash length", connection.id))?;
    Ok((connection, hash))
}

fn parse_event(payload: &str) -> Option<StoreEvent> {
    let (op, id) = payload.split_once(':')?;
    let id = id.parse().ok()?;
    match op {
        "issued" => Some(StoreEvent::Issued(id)),
        "revoked" => Some(StoreEvent::Revoked(id)),
        _ => None,
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        Self::migrate_pool(&self.pool).await
    }

    async fn export(&self) -> Result<Dump, StoreError> {
        let pool = &self.pool;
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
        let mut tx = self.pool.begin().await?;
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
            query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(&m.key)
                .bind(&m.value)
                .execute(&mut *tx)
                .await?;
        }
        for u in &dump.users {
            query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
                .bind(u.id)
                .bind(&u.email)
                .bind(u.created_at)
                .execute(&mut *tx)
                .await?;
        }
        for t in &dump.api_tokens {
            query("INSERT INTO api_tokens (id, token_hash, team_id, user_id, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(t.id).bind(&t.token_hash).bind(t.team_id).bind(t.user_id).bind(t.created_at)
                .execute(&mut *tx).await?;
        }
        for c in &dump.data_connections {
            query(
                "INSERT INTO data_connections (id, client_type, note, created_at, valid_until, region_id, host, port, \
                 username, password_hash, ip_allowlist, team_ids, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13)",
            )
            .bind(c.id).bind(&c.client_type).bind(&c.note).bind(c.created_at).bind(c.valid_until)
            .bind(&c.region_id).bind(&c.host).bind(c.port).bind(&c.username).bind(&c.password_hash)
            .bind(&c.ip_allowlist).bind(&c.team_ids).bind(c.created_by)
            .execute(&mut *tx).await?;
        }
        for v in &dump.vault_secrets {
            query("INSERT INTO vault_secrets (id, environment, secret_hash, created_at) VALUES ($1, $2, $3, $4)")
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
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
        // Ids were given explicitly: move each sequence past them.
        for table in ["users", "api_tokens", "data_connections", "vault_secrets"] {
            query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0)))
    }

    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        self.get_meta(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("meta key {key} vanished")))
    }

    async fn ensure_user(&self, email: &str) -> Result<User, StoreError> {
        let row = query(
            "INSERT INTO users (email, created_at) VALUES ($1, $2) \
             ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id, email",
        )
        .bind(email)
        .bind(Timestamp::now().as_millis())
        .fetch_one(&self.pool)
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
            "INSERT INTO api_tokens (token_hash, team_id, user_id, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(hash.as_slice())
        .bind(team)
        .bind(user.map(|u| u.id))
        .bind(Timestamp::now().as_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(map_write_error)?;
        Ok(row.get(0))
    }

    async fn insert_first_api_token(&self, hash: &CredentialHash) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(BOOTSTRAP_LOCK)
            .execute(&mut *tx)
            .await?;
        let done = query(
            "INSERT INTO api_tokens (token_hash, team_id, user_id, created_at) \
             SELECT $1, NULL, NULL, $2 WHERE NOT EXISTS (SELECT 1 FROM api_tokens)",
        )
        .bind(hash.as_slice())
        .bind(Timestamp::now().as_millis())
        .execute(&mut *tx)
        .await
        .map_err(map_write_error)?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_api_token(&self, hash: &CredentialHash) -> Result<Option<Principal>, StoreError> {
        let row = query(
            "SELECT t.id, t.team_id, t.user_id, u.email FROM api_tokens t \
             LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12) RETURNING id",
        )
        .bind(new.client_type.as_str())
        .bind(new.note.as_deref())
        .bind(new.created_at.as_millis())
        .bind(new.valid_until.map(Timestamp::as_millis))
        .bind(&new.region_id)
        .bind(&new.host)
        .bind(i32::from(new.port))
        .bind(&new.username)
        .bind(new.password_hash.as_slice())
        .bind(allowlist)
        .bind(team_ids)
        .bind(new.created_by.as_ref().map(|u| u.id))
        .fetch_one(&self.pool)
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
        // One statement, so the page and the total describe the same snapshot. The page's
        // ids come from the primary key index first, so only its rows become JSON.
        let row = query(&format!(
            "SELECT COALESCE((SELECT json_agg(page.j ORDER BY page.id)::text FROM \
               (SELECT c.id, {CONNECTION_JSON} AS j \
                FROM (SELECT id FROM data_connections ORDER BY id LIMIT $1 OFFSET $2) ids \
                JOIN data_connections c ON c.id = ids.id \
                LEFT JOIN users u ON u.id = c.created_by) page), '[]'), \
             (SELECT SUM(n)::BIGINT FROM data_connection_counts)"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_one(&self.pool)
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
            "SELECT {CONNECTION_JSON}::text, c.password_hash FROM data_connections c \
             LEFT JOIN users u ON u.id = c.created_by"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    async fn get_data_connection_credential(
        &self,
        id: i64,
    ) -> Result<Option<(DataConnection, CredentialHash)>, StoreError> {
        let row = query(&format!(
            "SELECT {CONNECTION_JSON}::text, c.password_hash FROM data_connections c \
             LEFT JOIN users u ON u.id = c.created_by WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    async fn credential_events(&self) -> Result<Option<mpsc::Receiver<StoreEvent>>, StoreError> {
        let mut listener =
            PgListener::connect_with(&PgPool::connect_lazy_with(self.options.clone())).await?;
        listener.listen(CHANNEL).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                // `None`: the connection was lost and re-established; anything sent
                // meanwhile is gone, so the receiver reloads everything.
                let event = match listener.try_recv().await {
                    Ok(Some(n)) => match parse_event(n.payload()) {
                        Some(e) => e,
                        None => continue,
                    },
                    Ok(None) => StoreEvent::Resync,
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed interrupted; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        StoreEvent::Resync
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn insert_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<(), StoreError> {
        query(
            "INSERT INTO vault_secrets (environment, secret_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(environment.as_str())
        .bind(hash.as_slice())
        .bind(Timestamp::now().as_millis())
        .execute(&self.pool)
        .await
        .map_err(map_write_error)?;
        Ok(())
    }

    async fn insert_first_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(BOOTSTRAP_LOCK + 1)
            .execute(&mut *tx)
            .await?;
        let done = query(
            "INSERT INTO vault_secrets (environment, secret_hash, created_at) \
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM vault_secrets WHERE environment = $1)",
        )
        .bind(environment.as_str())
        .bind(hash.as_slice())
        .bind(Timestamp::now().as_millis())
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
        let row = query("SELECT environment FROM vault_secrets WHERE secret_hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        query(
            "INSERT INTO integration_connections (id, environment, platform, platform_version, name, \
             connection_key, identity, identity_type, tags, version, active, state, created_at, sealed_credentials, \
             expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15)",
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
        let mut tx = self.pool.begin().await?;
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
            .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let done = query(
            "UPDATE integration_connections SET name = $1, tags = $2::jsonb, active = $3, version = $4 \
             WHERE environment = $5 AND id = $6 AND version = $7",
        )
        .bind(&c.name)
        .bind(serde_json::to_string(&c.tags).expect("strings serialise"))
        .bind(c.active)
        .bind(&c.version)
        .bind(c.environment.as_str())
        .bind(&c.id)
        .bind(previous_version)
        .execute(&mut *tx).await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        query("DELETE FROM integration_tags WHERE connection_id = $1")
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
        let done = query("DELETE FROM integration_connections WHERE environment = $1 AND id = $2")
            .bind(environment.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn execute(&self, statement: Statement) -> Result<u64, StoreError> {
        let done = bind_all(query(statement.sql()), statement.binds())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn list_sealed_integrations(&self) -> Result<Vec<SealedCredential>, StoreError> {
        let rows = query(sql::LIST_SEALED).fetch_all(&self.pool).await?;
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
            .fetch_all(&self.pool)
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
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(integration_with_sealed_from_row)
            .transpose()
    }

    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn count_data_connections(&self) -> Result<u64, StoreError> {
        let total: i64 = query("SELECT SUM(n)::BIGINT FROM data_connection_counts")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(total as u64)
    }

    async fn get_data_connection(&self, id: i64) -> Result<Option<DataConnection>, StoreError> {
        let row = query(&format!(
            "SELECT {CONNECTION_JSON}::text FROM data_connections c \
             LEFT JOIN users u ON u.id = c.created_by WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => parse_json::<ConnectionRow>(row.try_get::<&str, _>(0)?)?
                .into_domain()
                .map(Some),
            None => Ok(None),
        }
    }

    async fn delete_data_connection(&self, id: i64) -> Result<bool, StoreError> {
        let done = query("DELETE FROM data_connections WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        assert_eq!(parse_event("issued:42"), Some(StoreEvent::Issued(42)));
        assert_eq!(parse_event("revoked:7"), Some(StoreEvent::Revoked(7)));
        assert_eq!(parse_event("other:7"), None);
        assert_eq!(parse_event("issued:x"), None);
    }
}
