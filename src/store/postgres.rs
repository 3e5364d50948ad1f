//! The shared store: PostgreSQL, for several replicas behind a load balancer. Every
//! committed change reaches every replica through LISTEN/NOTIFY (a trigger on the change
//! log notifies; see the migrations).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::engine::store_error;
use super::sql::Dialect;
use super::{BackendServices, SqlStore, StoreError};
use crate::domain::ports::{Change, ChangeSeq, ChangeSignal, Entity};

const CHANNEL: &str = "switchboard_changes";

struct Postgres {
    pool: PgPool,
    options: PgConnectOptions,
}

/// Connects and, unless `migrate` is false, applies pending migrations (sqlx holds an
/// advisory lock meanwhile, so replicas starting together do not race).
pub async fn open(
    url: &str,
    migrate: bool,
    acquire_timeout: Duration,
) -> Result<SqlStore, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(store_error)?
        .application_name("switchboard")
        .options([("statement_timeout", "30s"), ("lock_timeout", "10s")]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(acquire_timeout)
        .connect_with(options.clone())
        .await
        .map_err(store_error)?;
    let services = Postgres {
        pool: pool.clone(),
        options,
    };
    if migrate {
        services.migrate().await?;
    }
    Ok(SqlStore::new(
        Box::new(pool.clone()),
        Box::new(pool),
        Dialect::Postgres,
        Box::new(services),
    ))
}

/// `seq:entity:id`, as the change log's trigger sends it.
fn parse_notification(payload: &str) -> Option<Change> {
    let mut parts = payload.splitn(3, ':');
    let seq = parts.next()?.parse().ok()?;
    let entity = Entity::parse(parts.next()?)?;
    let id = parts.next()?.to_owned();
    Some(Change {
        seq: ChangeSeq(seq),
        entity,
        id,
    })
}

#[async_trait]
impl BackendServices for Postgres {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeSignal>>, StoreError> {
        let mut listener =
            PgListener::connect_with(&PgPool::connect_lazy_with(self.options.clone()))
                .await
                .map_err(store_error)?;
        listener.listen(CHANNEL).await.map_err(store_error)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                // `None`: the connection was lost and re-established; anything sent
                // meanwhile is gone, so the follower reloads everything.
                let signal = match listener.try_recv().await {
                    Ok(Some(n)) => match parse_notification(n.payload()) {
                        Some(change) => ChangeSignal::Changed(change),
                        None => continue,
                    },
                    Ok(None) => ChangeSignal::Missed,
                    Err(e) => {
                        tracing::warn!(error = %e, "change notifications interrupted; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        ChangeSignal::Missed
                    }
                };
                if tx.send(signal).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        assert_eq!(
            parse_notification("42:data_connection:7"),
            Some(Change {
                seq: ChangeSeq(42),
                entity: Entity::DataConnection,
                id: "7".into()
            })
        );
        assert_eq!(
            parse_notification("3:integration:a:b").map(|c| c.id),
            Some("a:b".into())
        );
        assert_eq!(parse_notification("x:data_connection:7"), None);
        assert_eq!(parse_notification("1:unknown:7"), None);
        assert_eq!(parse_notification("1:data_connection"), None);
    }
}
