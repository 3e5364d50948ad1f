//! Persistence: the domain's storage ports (`domain::ports`) implemented once, in
//! [`SqlStore`], for both databases. `sql` holds every statement, `row` decodes rows into
//! domain types, `engine` runs statements on either database, `dump` moves an install
//! between stores. The backend files keep only what truly differs: opening the pools and
//! their settings, migrations, and the database's own services (SQLite's checkpoint and
//! planner statistics, PostgreSQL's notifications).

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::crypto::CredentialHash;
use crate::domain::audit::{AuditEvent, AuditFilter};
use crate::domain::connect::{ConnectSession, PendingConsent, StoredStatus};
use crate::domain::console::{ConsoleActorRef, ConsoleSession};
use crate::domain::data_connection::{
    DataConnection, NewDataConnection, PasswordHashes, TeamScope,
};
use crate::domain::integration::{ConnectionState, Environment, IntegrationConnection, ListFilter};
pub use crate::domain::ports::StoreError;
use crate::domain::ports::{
    ApiTokenInfo, AuditStore, Change, ChangeLog, ChangeSeq, ChangeSignal, ConnectSessionStore,
    ConnectionUpdate, ConsoleSessionStore, DataConnectionStore, Entity, Health, IntegrationStore,
    MetaStore, RefreshFailure, RefreshStore, Revoked, SealedIntegration, Store, TokenStore,
    VaultSecret, VaultSecretStore,
};
use crate::domain::time::Timestamp;
use crate::domain::token::{Principal, TokenScope, User};
use crate::domain::usage::{Tally, Usage};
use crate::domain::webhook::{EventType, OutboxEvent};

mod dump;
mod engine;
pub mod postgres;
mod row;
mod sql;
pub mod sqlite;
mod webhooks;

pub use dump::{DUMP_FORMAT, DUMP_VERSION, Dump};
use engine::{Engine, Transaction};
use sql::{ConnectionQueries, Dialect};

/// What a backend does its own way.
#[async_trait]
trait BackendServices: Send + Sync {
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Refreshes the planner's statistics where the database does not do it itself.
    async fn optimize(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Called after a credential's ciphertext was replaced, so the old one can be purged
    /// from the database's files.
    async fn purge_replaced(&self) {}
    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeSignal>>, StoreError> {
        Ok(None)
    }
}

/// The store: every port, one implementation, either database.
pub struct SqlStore {
    /// Reads that may run beside writes (SQLite: a pool of read-only connections).
    reader: Box<dyn Engine>,
    /// Writes, and reads that must see the latest write (SQLite: a single connection).
    writer: Box<dyn Engine>,
    dialect: Dialect,
    connections: ConnectionQueries,
    services: Box<dyn BackendServices>,
}

impl Store for SqlStore {}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl SqlStore {
    fn new(
        reader: Box<dyn Engine>,
        writer: Box<dyn Engine>,
        dialect: Dialect,
        services: Box<dyn BackendServices>,
    ) -> Self {
        Self {
            reader,
            writer,
            dialect,
            connections: ConnectionQueries::new(dialect),
            services,
        }
    }

    /// Applies pending schema migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.services.migrate().await
    }

    /// Keeps the planner's statistics current (SQLite; cheap when little changed).
    pub async fn optimize(&self) -> Result<(), StoreError> {
        self.services.optimize().await
    }

    /// Runs `write` and records `entity`/`id` as changed, in one transaction. `write`
    /// returns false to roll back (it changed nothing): no change is recorded then.
    async fn write_recording<F>(
        &self,
        entity: Entity,
        id: &str,
        write: F,
    ) -> Result<Option<ChangeSeq>, StoreError>
    where
        F: for<'t> FnOnce(
                &'t mut Box<dyn Transaction>,
            )
                -> futures_util::future::BoxFuture<'t, Result<bool, StoreError>>
            + Send,
    {
        let mut tx = self.writer.begin().await?;
        if !write(&mut tx).await? {
            return Ok(None);
        }
        let seq = record_change(&mut tx, entity, id).await?;
        tx.commit().await?;
        Ok(Some(seq))
    }

    /// One statement as a recorded write; `None` when it changed no row.
    async fn execute_recording(
        &self,
        entity: Entity,
        id: &str,
        statement: engine::Statement,
    ) -> Result<Option<ChangeSeq>, StoreError> {
        self.write_recording(entity, id, move |tx| {
            Box::pin(async move { Ok(tx.execute(&statement).await? > 0) })
        })
        .await
    }

    /// A data connection as a write transaction sees it.
    async fn data_connection_in(
        &self,
        tx: &mut Box<dyn Transaction>,
        id: i64,
    ) -> Result<Option<DataConnection>, StoreError> {
        tx.fetch(&self.connections.one(id))
            .await?
            .into_iter()
            .next()
            .map(|mut r| row::data_connection(&r.text(0)?))
            .transpose()
    }

    /// Runs `statement` on data connection `id` and records the change, with the event
    /// `announce` makes of the connection as it now is; `None` if there is no such row.
    async fn change_data_connection(
        &self,
        id: i64,
        statement: engine::Statement,
        announce: impl FnOnce(&DataConnection) -> OutboxEvent,
    ) -> Result<Option<(DataConnection, ChangeSeq)>, StoreError> {
        let mut tx = self.writer.begin().await?;
        if tx.execute(&statement).await? == 0 {
            return Ok(None);
        }
        let Some(connection) = self.data_connection_in(&mut tx, id).await? else {
            return Ok(None);
        };
        let seq = record_change(&mut tx, Entity::DataConnection, &id.to_string()).await?;
        webhooks::announce(&mut tx, self.dialect, &announce(&connection)).await?;
        tx.commit().await?;
        Ok(Some((connection, seq)))
    }

    /// An integration connection as a write transaction sees it, locked until it ends.
    async fn integration_in(
        &self,
        tx: &mut Box<dyn Transaction>,
        id: &str,
    ) -> Result<Option<IntegrationConnection>, StoreError> {
        tx.fetch(&sql::integration_for_update(self.dialect, id))
            .await?
            .into_iter()
            .next()
            .map(|mut r| row::integration(&mut r))
            .transpose()
    }

    /// A write that sets an integration's state (and maybe records a failed refresh),
    /// recorded as a change even if no row changed; `integration.state_changed` announced
    /// when the state is not what it was, `integration.refresh_failed` with a failure.
    async fn write_integration_state(
        &self,
        id: &str,
        statement: engine::Statement,
        state: ConnectionState,
        error: Option<&str>,
        failure: Option<&RefreshFailure>,
    ) -> Result<ChangeSeq, StoreError> {
        let mut tx = self.writer.begin().await?;
        let before = self.integration_in(&mut tx, id).await?;
        tx.execute(&statement).await?;
        let seq = record_change(&mut tx, Entity::Integration, id).await?;
        if let Some(before) = before {
            if before.state != state {
                let event = OutboxEvent::state_changed(&before, state, error);
                webhooks::announce(&mut tx, self.dialect, &event).await?;
            }
            if let Some(failure) = failure {
                let event = OutboxEvent::refresh_failed(&before, failure);
                webhooks::announce(&mut tx, self.dialect, &event).await?;
            }
        }
        tx.commit().await?;
        Ok(seq)
    }

    /// Inserts the first token or secret (`insert` returns its id, or no row when one
    /// exists) under a lock, so replicas starting together insert one; records `entity` as
    /// changed when given.
    async fn insert_first(
        &self,
        lock: &str,
        insert: engine::Statement,
        entity: Option<Entity>,
    ) -> Result<Option<ChangeSeq>, StoreError> {
        self.writer.execute(&sql::lock_row(lock)).await?;
        let mut tx = self.writer.begin().await?;
        tx.execute(&sql::lock(lock)).await?;
        let Some(mut inserted) = tx.fetch(&insert).await?.into_iter().next() else {
            return Ok(None);
        };
        let id = inserted.int(0)?;
        let seq = match entity {
            Some(entity) => record_change(&mut tx, entity, &id.to_string()).await?,
            None => ChangeSeq::default(),
        };
        tx.commit().await?;
        Ok(Some(seq))
    }
}

async fn record_change(
    tx: &mut Box<dyn Transaction>,
    entity: Entity,
    id: &str,
) -> Result<ChangeSeq, StoreError> {
    let seq = tx
        .fetch_one(&sql::record_change(entity, id, now_micros()))
        .await?
        .int(0)?;
    Ok(ChangeSeq(seq))
}

#[async_trait]
impl Health for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.reader
            .execute(&engine::Statement::new("SELECT 1"))
            .await
            .map(drop)
    }
}

#[async_trait]
impl MetaStore for SqlStore {
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.writer
            .fetch_optional(&sql::get_meta(key))
            .await?
            .map(|mut r| r.bytes(0))
            .transpose()
    }

    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.writer.execute(&sql::init_meta(key, value)).await?;
        self.get_meta(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("meta key {key} vanished")))
    }

    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::set_meta(key, value))
            .await
            .map(drop)
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn ensure_user(&self, email: &str) -> Result<User, StoreError> {
        let mut row = self
            .writer
            .fetch_one(&sql::ensure_user(email, Timestamp::now().as_millis()))
            .await?;
        Ok(User {
            id: row.int(0)?,
            email: row.text(1)?,
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
        let statement =
            sql::insert_api_token(hash, team, user.map(|u| u.id), Timestamp::now().as_millis());
        self.writer.fetch_one(&statement).await?.int(0)
    }

    async fn insert_first_api_token(&self, hash: &CredentialHash) -> Result<bool, StoreError> {
        let insert = sql::insert_first_api_token(hash, Timestamp::now().as_millis());
        let inserted = self.insert_first("first_api_token", insert, None).await?;
        Ok(inserted.is_some())
    }

    async fn find_api_token(&self, hash: &CredentialHash) -> Result<Option<Principal>, StoreError> {
        let Some(mut row) = self
            .reader
            .fetch_optional(&sql::find_api_token(hash))
            .await?
        else {
            return Ok(None);
        };
        let user = match row.opt_int(2)? {
            Some(id) => Some(User {
                id,
                email: row.text(3)?,
            }),
            None => None,
        };
        Ok(Some(Principal {
            token_id: row.int(0)?,
            scope: row.opt_int(1)?.map_or(TokenScope::Global, TokenScope::Team),
            user,
        }))
    }

    async fn api_tokens(&self) -> Result<Vec<ApiTokenInfo>, StoreError> {
        self.reader
            .fetch(&sql::api_tokens())
            .await?
            .into_iter()
            .map(row::api_token_info)
            .collect()
    }

    async fn delete_api_token(&self, id: i64) -> Result<Revoked, StoreError> {
        // Under a lock, so two revocations at once cannot leave no global token.
        const LOCK: &str = "api_tokens";
        self.writer.execute(&sql::lock_row(LOCK)).await?;
        let mut tx = self.writer.begin().await?;
        tx.execute(&sql::lock(LOCK)).await?;
        let Some(mut token) = tx.fetch(&sql::api_token_team(id)).await?.into_iter().next() else {
            return Ok(Revoked::NotFound);
        };
        if token.opt_int(1)?.is_none() {
            let others = tx
                .fetch_one(&sql::count_other_global_tokens(id))
                .await?
                .int(0)?;
            if others == 0 {
                return Ok(Revoked::LastGlobalToken);
            }
        }
        tx.execute(&sql::delete_api_token(id)).await?;
        tx.execute(&sql::delete_console_sessions_of(ConsoleActorRef::ApiToken(
            id,
        )))
        .await?;
        let seq = record_change(&mut tx, Entity::ApiToken, &id.to_string()).await?;
        tx.commit().await?;
        Ok(Revoked::Done(seq))
    }
}

#[async_trait]
impl DataConnectionStore for SqlStore {
    async fn insert_data_connection(
        &self,
        new: NewDataConnection,
    ) -> Result<(DataConnection, ChangeSeq), StoreError> {
        let statement = sql::insert_data_connection(sql::NewConnectionRow {
            client_type: new.client_type.as_str(),
            note: new.note.as_deref(),
            created_at: new.created_at.as_millis(),
            valid_until: new.valid_until.map(Timestamp::as_millis),
            region_id: &new.region_id,
            host: &new.host,
            port: i64::from(new.port),
            username: &new.username,
            password_hash: new.password_hash.as_slice(),
            ip_allowlist: serde_json::Value::from(new.ip_allowlist.to_strings()),
            team_ids: match &new.teams {
                TeamScope::All => None,
                TeamScope::Teams(ids) => Some(serde_json::Value::from(ids.clone())),
            },
            created_by: new.created_by.as_ref().map(|u| u.id),
        });
        let mut tx = self.writer.begin().await?;
        let id = tx.fetch_one(&statement).await?.int(0)?;
        let seq = record_change(&mut tx, Entity::DataConnection, &id.to_string()).await?;
        let connection = DataConnection {
            id,
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
            usage: Usage::default(),
        };
        let event = OutboxEvent::data_connection(EventType::DataConnectionCreated, &connection);
        webhooks::announce(&mut tx, self.dialect, &event).await?;
        tx.commit().await?;
        Ok((connection, seq))
    }

    async fn list_team_data_connections(
        &self,
        team: i64,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<DataConnection>, u64), StoreError> {
        let rows = self
            .reader
            .fetch(&self.connections.team_page(team, offset, limit))
            .await?;
        let page = rows
            .into_iter()
            .map(|mut r| row::data_connection(&r.text(0)?))
            .collect::<Result<Vec<_>, _>>()?;
        let mut total = self
            .reader
            .fetch_one(&sql::count_team_data_connections(team))
            .await?;
        Ok((page, total.int(0)? as u64))
    }

    async fn get_data_connection(&self, id: i64) -> Result<Option<DataConnection>, StoreError> {
        self.reader
            .fetch_optional(&self.connections.one(id))
            .await?
            .map(|mut r| row::data_connection(&r.text(0)?))
            .transpose()
    }

    async fn delete_data_connection(&self, id: i64) -> Result<Option<ChangeSeq>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let Some(before) = self.data_connection_in(&mut tx, id).await? else {
            return Ok(None);
        };
        if tx.execute(&sql::delete_data_connection(id)).await? == 0 {
            return Ok(None);
        }
        let seq = record_change(&mut tx, Entity::DataConnection, &id.to_string()).await?;
        let event = OutboxEvent::data_connection(EventType::DataConnectionDeleted, &before);
        webhooks::announce(&mut tx, self.dialect, &event).await?;
        tx.commit().await?;
        Ok(Some(seq))
    }

    async fn data_connection_credential(
        &self,
        id: i64,
    ) -> Result<Option<(DataConnection, PasswordHashes)>, StoreError> {
        self.reader
            .fetch_optional(&self.connections.with_hash(id))
            .await?
            .map(row::data_connection_credential)
            .transpose()
    }

    async fn data_connection_credentials(
        &self,
    ) -> Result<Vec<(DataConnection, PasswordHashes)>, StoreError> {
        self.reader
            .fetch(&self.connections.all_with_hash())
            .await?
            .into_iter()
            .map(row::data_connection_credential)
            .collect()
    }

    async fn update_data_connection(
        &self,
        id: i64,
        update: &ConnectionUpdate,
    ) -> Result<Option<(DataConnection, ChangeSeq)>, StoreError> {
        self.change_data_connection(id, sql::update_data_connection(id, update), |c| {
            OutboxEvent::data_connection(EventType::DataConnectionUpdated, c)
        })
        .await
    }

    async fn add_data_connection_usage(&self, usage: &[(i64, Tally)]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for (id, tally) in usage {
            tx.execute(&sql::add_data_connection_usage(
                *id,
                tally.queries as i64,
                tally.response_bytes as i64,
                tally.last_used_at,
            ))
            .await?;
        }
        // So every process's in-memory list follows, as it follows any other change.
        for ids in usage.chunks(sql::USAGE_CHANGE_IDS) {
            let ids: Vec<String> = ids.iter().map(|(id, _)| id.to_string()).collect();
            record_change(&mut tx, Entity::DataConnectionUsage, &ids.join(",")).await?;
        }
        tx.commit().await
    }

    async fn data_connection_usages(&self, ids: &[i64]) -> Result<Vec<(i64, Usage)>, StoreError> {
        let mut usages = Vec::with_capacity(ids.len());
        for ids in ids.chunks(sql::USAGE_CHANGE_IDS) {
            for row in self.reader.fetch(&sql::data_connection_usages(ids)).await? {
                usages.push(row::data_connection_usage(row)?);
            }
        }
        Ok(usages)
    }

    async fn rotate_data_connection_password(
        &self,
        id: i64,
        new_hash: &CredentialHash,
        previous_until: Option<Timestamp>,
    ) -> Result<Option<ChangeSeq>, StoreError> {
        let rotate = sql::rotate_data_connection_password(
            id,
            new_hash,
            previous_until.map(Timestamp::as_millis),
        );
        let changed = self
            .change_data_connection(id, rotate, |c| {
                OutboxEvent::password_rotated(c, previous_until)
            })
            .await?;
        Ok(changed.map(|(_, seq)| seq))
    }
}

#[async_trait]
impl VaultSecretStore for SqlStore {
    async fn insert_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<ChangeSeq, StoreError> {
        let insert = sql::insert_vault_secret(environment, hash, Timestamp::now().as_millis());
        let mut tx = self.writer.begin().await?;
        let id = tx.fetch_one(&insert).await?.int(0)?;
        let seq = record_change(&mut tx, Entity::VaultSecret, &id.to_string()).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn insert_first_vault_secret(
        &self,
        environment: Environment,
        hash: &CredentialHash,
    ) -> Result<Option<ChangeSeq>, StoreError> {
        let lock = format!("first_vault_secret:{}", environment.as_str());
        let insert =
            sql::insert_first_vault_secret(environment, hash, Timestamp::now().as_millis());
        self.insert_first(&lock, insert, Some(Entity::VaultSecret))
            .await
    }

    async fn find_vault_secret(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<VaultSecret>, StoreError> {
        self.reader
            .fetch_optional(&sql::find_vault_secret(hash))
            .await?
            .map(row::vault_secret)
            .transpose()
    }

    async fn delete_vault_secret(&self, id: i64) -> Result<Revoked, StoreError> {
        let mut tx = self.writer.begin().await?;
        if tx.execute(&sql::delete_vault_secret(id)).await? == 0 {
            return Ok(Revoked::NotFound);
        }
        tx.execute(&sql::delete_console_sessions_of(
            ConsoleActorRef::VaultSecret(id),
        ))
        .await?;
        let seq = record_change(&mut tx, Entity::VaultSecret, &id.to_string()).await?;
        tx.commit().await?;
        Ok(Revoked::Done(seq))
    }

    async fn vault_secret(&self, id: i64) -> Result<Option<VaultSecret>, StoreError> {
        self.reader
            .fetch_optional(&sql::vault_secret(id))
            .await?
            .map(row::vault_secret)
            .transpose()
    }

    async fn vault_secrets(&self) -> Result<Vec<VaultSecret>, StoreError> {
        self.reader
            .fetch(&sql::vault_secrets())
            .await?
            .into_iter()
            .map(row::vault_secret)
            .collect()
    }
}

#[async_trait]
impl IntegrationStore for SqlStore {
    async fn insert_integration(
        &self,
        c: &IntegrationConnection,
        sealed_credentials: &[u8],
    ) -> Result<ChangeSeq, StoreError> {
        let insert = sql::insert_integration(c, sealed_credentials);
        let tags: Vec<_> = c.tags.iter().map(|t| sql::insert_tag(&c.id, t)).collect();
        let event = OutboxEvent::integration(EventType::IntegrationCreated, c);
        let dialect = self.dialect;
        let seq = self
            .write_recording(Entity::Integration, &c.id, move |tx| {
                Box::pin(async move {
                    tx.execute(&insert).await?;
                    for tag in &tags {
                        tx.execute(tag).await?;
                    }
                    webhooks::announce(tx, dialect, &event).await?;
                    Ok(true)
                })
            })
            .await?;
        Ok(seq.expect("an insert is always recorded"))
    }

    async fn list_integrations(
        &self,
        environment: Environment,
        filter: &ListFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<IntegrationConnection>, u64), StoreError> {
        let list = sql::integration_list(environment, filter, offset, limit);
        // One read transaction: the page and the total describe the same state.
        let mut tx = self.reader.begin().await?;
        let rows = tx.fetch(&list.page).await?;
        let total = tx.fetch_one(&list.count).await?.int(0)?;
        tx.commit().await?;
        Ok((row::integrations(rows)?, total as u64))
    }

    async fn integration_page(
        &self,
        environment: Environment,
        filter: &ListFilter,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<IntegrationConnection>, StoreError> {
        let list = sql::integration_list(environment, filter, offset, limit);
        row::integrations(self.reader.fetch(&list.page).await?)
    }

    async fn get_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<Option<IntegrationConnection>, StoreError> {
        self.reader
            .fetch_optional(&sql::get_integration(environment, id))
            .await?
            .map(|mut r| row::integration(&mut r))
            .transpose()
    }

    async fn update_integration(
        &self,
        c: &IntegrationConnection,
        previous_version: &str,
    ) -> Result<Option<ChangeSeq>, StoreError> {
        let update = sql::update_integration(c, previous_version);
        let delete_tags = sql::delete_tags(&c.id);
        let tags: Vec<_> = c.tags.iter().map(|t| sql::insert_tag(&c.id, t)).collect();
        let event = OutboxEvent::integration(EventType::IntegrationUpdated, c);
        let dialect = self.dialect;
        self.write_recording(Entity::Integration, &c.id, move |tx| {
            Box::pin(async move {
                // Only if nobody changed it meanwhile.
                if tx.execute(&update).await? != 1 {
                    return Ok(false);
                }
                tx.execute(&delete_tags).await?;
                for tag in &tags {
                    tx.execute(tag).await?;
                }
                webhooks::announce(tx, dialect, &event).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn delete_integration(
        &self,
        environment: Environment,
        id: &str,
    ) -> Result<Option<ChangeSeq>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let Some(before) = self.integration_in(&mut tx, id).await? else {
            return Ok(None);
        };
        if tx
            .execute(&sql::delete_integration(environment, id))
            .await?
            == 0
        {
            return Ok(None);
        }
        let seq = record_change(&mut tx, Entity::Integration, id).await?;
        let event = OutboxEvent::integration(EventType::IntegrationDeleted, &before);
        webhooks::announce(&mut tx, self.dialect, &event).await?;
        tx.commit().await?;
        Ok(Some(seq))
    }

    async fn set_integration_state(
        &self,
        id: &str,
        state: ConnectionState,
        error: Option<&str>,
        at: i64,
    ) -> Result<ChangeSeq, StoreError> {
        let statement = sql::set_integration_state(id, state, error, at);
        self.write_integration_state(id, statement, state, error, None)
            .await
    }

    async fn set_integration_credentials(
        &self,
        id: &str,
        sealed_credentials: &[u8],
        expires_at: Option<i64>,
    ) -> Result<ChangeSeq, StoreError> {
        let statement = sql::set_integration_credentials(id, sealed_credentials, expires_at);
        let seq = self
            .write_integration_state(id, statement, ConnectionState::Unknown, None, None)
            .await?;
        self.services.purge_replaced().await;
        Ok(seq)
    }

    async fn sealed_integration_by_key(
        &self,
        environment: Environment,
        key: &str,
    ) -> Result<Option<SealedIntegration>, StoreError> {
        self.reader
            .fetch_optional(&sql::sealed_integration_by_key(environment, key))
            .await?
            .map(row::sealed_integration)
            .transpose()
    }

    async fn sealed_integration(&self, id: &str) -> Result<Option<SealedIntegration>, StoreError> {
        self.reader
            .fetch_optional(&sql::sealed_integration(id))
            .await?
            .map(row::sealed_integration)
            .transpose()
    }

    async fn add_integration_uses(&self, last_used: &[(String, i64)]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for (id, at) in last_used {
            tx.execute(&sql::add_integration_use(id, *at)).await?;
        }
        tx.commit().await
    }

    async fn sealed_integrations(&self) -> Result<Vec<SealedIntegration>, StoreError> {
        self.reader
            .fetch(&sql::sealed_integrations())
            .await?
            .into_iter()
            .map(row::sealed_integration)
            .collect()
    }

    async fn reseal_integration(
        &self,
        id: &str,
        generation: i64,
        sealed_credentials: &[u8],
    ) -> Result<bool, StoreError> {
        let resealed = self
            .execute_recording(
                Entity::Integration,
                id,
                sql::reseal_integration(id, generation, sealed_credentials),
            )
            .await?;
        Ok(resealed.is_some())
    }
}

#[async_trait]
impl RefreshStore for SqlStore {
    async fn try_lease_refresh(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let taken = self
            .writer
            .execute(&sql::try_lease_refresh(id, owner, now, until))
            .await?;
        Ok(taken == 1)
    }

    async fn release_refresh_lease(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::release_refresh_lease(id, owner))
            .await
            .map(drop)
    }

    async fn store_refreshed_credentials(
        &self,
        id: &str,
        owner: &str,
        sealed_credentials: &[u8],
        expires_at: i64,
        at: i64,
    ) -> Result<ChangeSeq, StoreError> {
        let statement =
            sql::store_refreshed_credentials(id, owner, sealed_credentials, expires_at, at);
        let seq = self
            .write_integration_state(id, statement, ConnectionState::Operational, None, None)
            .await?;
        self.services.purge_replaced().await;
        Ok(seq)
    }

    async fn record_refresh_failure(
        &self,
        id: &str,
        owner: &str,
        failure: &RefreshFailure,
    ) -> Result<ChangeSeq, StoreError> {
        let statement = sql::record_refresh_failure(id, owner, failure);
        self.write_integration_state(
            id,
            statement,
            failure.state,
            Some(&failure.error),
            Some(failure),
        )
        .await
    }

    async fn due_refreshes(
        &self,
        now: i64,
        expiring_by: i64,
        limit: i64,
    ) -> Result<Vec<IntegrationConnection>, StoreError> {
        self.reader
            .fetch(&sql::due_refreshes(expiring_by, now, limit))
            .await?
            .into_iter()
            .map(|mut r| row::integration(&mut r))
            .collect()
    }
}

#[async_trait]
impl ConnectSessionStore for SqlStore {
    async fn insert_connect_session(
        &self,
        session: &ConnectSession,
        token_hash: &CredentialHash,
    ) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::insert_connect_session(session, token_hash))
            .await
            .map(drop)
    }

    async fn connect_session_by_token(
        &self,
        token_hash: &CredentialHash,
    ) -> Result<Option<ConnectSession>, StoreError> {
        self.reader
            .fetch_optional(&sql::connect_session_by_token(token_hash))
            .await?
            .map(row::connect_session)
            .transpose()
    }

    async fn connect_session(&self, id: &str) -> Result<Option<ConnectSession>, StoreError> {
        self.reader
            .fetch_optional(&sql::connect_session(id))
            .await?
            .map(row::connect_session)
            .transpose()
    }

    async fn begin_connect_consent(
        &self,
        id: &str,
        consent: &PendingConsent,
        now: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .writer
            .execute(&sql::begin_connect_consent(id, consent, now))
            .await?;
        Ok(changed == 1)
    }

    async fn claim_connect_session(
        &self,
        id: &str,
        state_hash: Option<&CredentialHash>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .writer
            .execute(&sql::claim_connect_session(id, state_hash, now))
            .await?;
        Ok(changed == 1)
    }

    async fn finish_connect_session(
        &self,
        id: &str,
        status: StoredStatus,
        connection_key: Option<&str>,
        platform: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let Some(mut session) = tx
            .fetch(&sql::connect_session(id))
            .await?
            .into_iter()
            .next()
            .map(row::connect_session)
            .transpose()?
        else {
            return Ok(false);
        };
        let finish = sql::finish_connect_session(id, status, connection_key, error, now);
        if tx.execute(&finish).await? != 1 {
            return Ok(false);
        }
        session.connection_key = connection_key.map(str::to_owned);
        session.error = error.map(str::to_owned);
        let completed = status == StoredStatus::Completed;
        let event = OutboxEvent::connect_session(completed, &session, platform);
        webhooks::announce(&mut tx, self.dialect, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_connect_sessions_expired_before(&self, before: i64) -> Result<u64, StoreError> {
        self.writer
            .execute(&sql::delete_connect_sessions_expired_before(before))
            .await
    }
}

#[async_trait]
impl ConsoleSessionStore for SqlStore {
    async fn insert_console_session(
        &self,
        session_id: &str,
        token_hash: &CredentialHash,
        actor: ConsoleActorRef,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::insert_console_session(
                session_id, token_hash, actor, created_at, expires_at,
            ))
            .await
            .map(drop)
    }

    async fn console_session_by_token(
        &self,
        token_hash: &CredentialHash,
        now: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        // A reader: every console request reads this, and a committed sign-in or revocation
        // is visible to the next read (WAL on SQLite), so the single writer is spared.
        match self
            .reader
            .fetch_optional(&sql::console_session_by_token(token_hash, now))
            .await?
        {
            Some(r) => row::console_session(r),
            None => Ok(None),
        }
    }

    async fn set_console_reveal(&self, session_id: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::set_console_reveal(session_id, sealed))
            .await
            .map(drop)
    }

    async fn take_console_reveal(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let Some(mut read) = tx
            .fetch(&sql::console_reveal(session_id))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let Some(sealed) = read.opt_bytes(0)? else {
            return Ok(None);
        };
        let cleared = tx
            .execute(&sql::clear_console_reveal(session_id, &sealed))
            .await?;
        tx.commit().await?;
        Ok((cleared == 1).then_some(sealed))
    }

    async fn delete_console_session(&self, session_id: &str) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::delete_console_session(session_id))
            .await
            .map(drop)
    }

    async fn delete_console_sessions_expired_before(&self, before: i64) -> Result<u64, StoreError> {
        self.writer
            .execute(&sql::delete_console_sessions_expired_before(before))
            .await
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for event in events {
            tx.execute(&sql::insert_audit_event(event)).await?;
        }
        tx.commit().await
    }

    async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<AuditEvent>, u64), StoreError> {
        let (page, count) = sql::audit_events(filter, offset, limit);
        let rows = self.reader.fetch(&page).await?;
        let events = rows
            .into_iter()
            .map(row::audit_event)
            .collect::<Result<Vec<_>, _>>()?;
        let total = self.reader.fetch_one(&count).await?.int(0)?;
        Ok((events, total.max(0) as u64))
    }

    async fn prune_audit_events(&self, before: i64) -> Result<u64, StoreError> {
        self.writer.execute(&sql::prune_audit_events(before)).await
    }
}

#[async_trait]
impl ChangeLog for SqlStore {
    async fn latest_change(&self) -> Result<ChangeSeq, StoreError> {
        let mut row = self.reader.fetch_one(&sql::latest_change()).await?;
        Ok(ChangeSeq(row.int(0)?))
    }

    async fn changes_after(
        &self,
        seq: ChangeSeq,
        limit: i64,
    ) -> Result<(Vec<Change>, ChangeSeq), StoreError> {
        let rows = self.writer.fetch(&sql::changes_after(seq.0, limit)).await?;
        let (mut changes, mut last) = (Vec::with_capacity(rows.len()), seq);
        for r in rows {
            let (read, change) = row::change(r)?;
            last = last.max(read);
            changes.extend(change);
        }
        Ok((changes, last))
    }

    async fn prune_changes(&self, before: i64) -> Result<u64, StoreError> {
        self.writer.execute(&sql::prune_changes(before)).await
    }

    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeSignal>>, StoreError> {
        self.services.subscribe().await
    }
}
