//! The webhook outbox in the store: events enter it inside the writes of the changes they
//! announce ([`announce`]); the [`WebhookStore`] port manages endpoints and moves
//! deliveries along.

use async_trait::async_trait;

use super::SqlStore;
use super::engine::{Row, Transaction};
use super::sql::{self, Dialect};
use crate::domain::ports::{StoreError, WebhookStore};
use crate::domain::time::Timestamp;
use crate::domain::webhook::{
    AfterAttempt, Attempt, Delivery, DeliveryFilter, DeliveryState, DueDelivery, Endpoint,
    EndpointSource, EventFilter, OutboxEvent,
};

/// Puts `event` in the outbox, with a delivery for each endpoint that takes it, inside the
/// caller's transaction: it is delivered exactly when the change commits. An event no
/// endpoint takes is not kept.
pub(super) async fn announce(
    tx: &mut Box<dyn Transaction>,
    dialect: Dialect,
    event: &OutboxEvent,
) -> Result<(), StoreError> {
    let deliveries = tx
        .execute(&sql::fan_out_webhook_event(dialect, event))
        .await?;
    if deliveries > 0 {
        tx.execute(&sql::insert_webhook_event(event)).await?;
    }
    Ok(())
}

fn endpoint(row: &mut Row, first: usize) -> Result<Endpoint, StoreError> {
    let id = row.text(first)?;
    let bad = |what: &str| StoreError::Corrupt(format!("webhook endpoint {id}: {what}"));
    let source = EndpointSource::parse(&row.text(first + 1)?).ok_or_else(|| bad("source"))?;
    let url = url::Url::parse(&row.text(first + 2)?).map_err(|_| bad("url"))?;
    Ok(Endpoint {
        source,
        url,
        events: EventFilter::from_stored(&row.text(first + 3)?),
        created_at: Timestamp::from_millis(row.int(first + 4)?),
        sealed_secret: row.opt_bytes(first + 5)?,
        id,
    })
}

fn delivery(mut row: Row) -> Result<Delivery, StoreError> {
    let id = row.int(0)?;
    let state = row.text(4)?;
    let at = |v: Option<i64>| v.map(Timestamp::from_millis);
    let state = DeliveryState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("webhook delivery {id}: state {state}")))?;
    let next = row.int(6)?;
    Ok(Delivery {
        id,
        event_id: row.text(1)?,
        event_type: row.text(2)?,
        endpoint_id: row.text(3)?,
        attempts: row.int(5)?,
        next_attempt_at: (state == DeliveryState::Pending).then(|| Timestamp::from_millis(next)),
        state,
        last_status: row.opt_int(7)?,
        last_error: row.opt_text(8)?,
        last_attempt_at: at(row.opt_int(9)?),
        delivered_at: at(row.opt_int(10)?),
        created_at: Timestamp::from_millis(row.int(11)?),
    })
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn sync_configured_webhook_endpoints(
        &self,
        endpoints: &[Endpoint],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for e in endpoints {
            tx.execute(&sql::upsert_webhook_endpoint(e)).await?;
        }
        let stored = tx.fetch(&sql::webhook_endpoints()).await?;
        for mut r in stored {
            let e = endpoint(&mut r, 0)?;
            if e.source == EndpointSource::Config && !endpoints.iter().any(|c| c.id == e.id) {
                for statement in sql::delete_webhook_endpoint(&e.id) {
                    tx.execute(&statement).await?;
                }
                tracing::info!(endpoint_id = %e.id, host = e.url.host_str().unwrap_or(""), "a webhook endpoint no longer in the configuration was removed");
            }
        }
        tx.commit().await
    }

    async fn insert_webhook_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::upsert_webhook_endpoint(endpoint))
            .await
            .map(drop)
    }

    async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.reader
            .fetch(&sql::webhook_endpoints())
            .await?
            .into_iter()
            .map(|mut r| endpoint(&mut r, 0))
            .collect()
    }

    async fn reseal_webhook_endpoint(
        &self,
        id: &str,
        previous: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let changed = self
            .writer
            .execute(&sql::reseal_webhook_endpoint(id, previous, sealed))
            .await?;
        Ok(changed == 1)
    }

    async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let [attempts, deliveries, endpoint] = sql::delete_webhook_endpoint(id);
        tx.execute(&attempts).await?;
        tx.execute(&deliveries).await?;
        let deleted = tx.execute(&endpoint).await? == 1;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn webhook_deliveries_due(&self, now: i64) -> Result<bool, StoreError> {
        Ok(self
            .reader
            .fetch_optional(&sql::any_webhook_delivery_due(now))
            .await?
            .is_some())
    }

    async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let claimed = self
            .writer
            .execute(&sql::claim_webhook_deliveries(owner, now, until, limit))
            .await?;
        if claimed == 0 {
            return Ok(Vec::new());
        }
        self.writer
            .fetch(&sql::claimed_webhook_deliveries(owner))
            .await?
            .into_iter()
            .map(|mut r| {
                Ok(DueDelivery {
                    id: r.int(0)?,
                    attempts: r.int(1)?,
                    event_id: r.text(2)?,
                    event_type: r.text(3)?,
                    occurred_at: Timestamp::from_millis(r.int(4)?),
                    body: r.text(5)?,
                    endpoint: endpoint(&mut r, 6)?,
                })
            })
            .collect()
    }

    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        attempt_number: i64,
        attempt: &Attempt,
        after: AfterAttempt,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        tx.execute(&sql::insert_webhook_attempt(
            delivery_id,
            attempt_number,
            attempt,
        ))
        .await?;
        tx.execute(&sql::finish_webhook_attempt(delivery_id, attempt, after))
            .await?;
        tx.commit().await
    }

    async fn release_webhook_delivery(
        &self,
        delivery_id: i64,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.writer
            .execute(&sql::release_webhook_delivery(delivery_id, owner))
            .await
            .map(drop)
    }

    async fn list_webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Delivery>, u64), StoreError> {
        let (page, count) = sql::webhook_deliveries(filter, offset, limit);
        let deliveries = self
            .reader
            .fetch(&page)
            .await?
            .into_iter()
            .map(delivery)
            .collect::<Result<Vec<_>, _>>()?;
        let total = self.reader.fetch_one(&count).await?.int(0)?;
        Ok((deliveries, total.max(0) as u64))
    }

    async fn webhook_delivery(
        &self,
        id: i64,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        let Some(found) = self
            .reader
            .fetch_optional(&sql::webhook_delivery(id))
            .await?
        else {
            return Ok(None);
        };
        let attempts = self
            .reader
            .fetch(&sql::webhook_attempts(id))
            .await?
            .into_iter()
            .map(|mut r| {
                Ok(Attempt {
                    at: Timestamp::from_millis(r.int(0)?),
                    status: r.opt_int(1)?.and_then(|s| u16::try_from(s).ok()),
                    latency_ms: r.int(2)?,
                    error: r.opt_text(3)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((delivery(found)?, attempts)))
    }

    async fn count_pending_webhook_deliveries(&self) -> Result<u64, StoreError> {
        let mut row = self
            .reader
            .fetch_one(&sql::count_pending_webhook_deliveries())
            .await?;
        Ok(row.int(0)?.max(0) as u64)
    }

    async fn announce_expiries(
        &self,
        now: i64,
        leads_ms: &[i64],
        expired_since: i64,
    ) -> Result<u64, StoreError> {
        const BATCH: i64 = 500;
        let mut leads: Vec<i64> = leads_ms.iter().copied().filter(|l| *l > 0).collect();
        leads.sort_unstable();
        leads.dedup();
        let mut announced = 0;
        // Expired first (lead 0), then the shortest lead: a connection inside several
        // windows at once hears of the nearest only, and the longer ones are noted with it.
        let windows = std::iter::once((now - expired_since, now, 0))
            .chain(leads.iter().map(|&lead| (now, now + lead, lead)));
        for (after, by, lead) in windows {
            let due = self
                .reader
                .fetch(&sql::unannounced_expiries(after, by, lead, BATCH))
                .await?;
            for mut candidate in due {
                let (id, valid_until) = (candidate.int(0)?, candidate.int(1)?);
                // A connection created while this scan ran can be missed by a shorter
                // window's query and found by a longer one's: it is announced at the
                // nearest lead its expiry is within all the same, not once for each.
                let lead = nearest_lead(lead, &leads, valid_until - now);
                let mut tx = self.writer.begin().await?;
                // Whoever inserts the notice announces it: replicas scanning together
                // announce each expiry once.
                let noted = tx
                    .execute(&sql::insert_expiry_notice(id, valid_until, lead))
                    .await?;
                if noted == 0 {
                    continue;
                }
                for longer in leads.iter().filter(|l| **l > lead) {
                    tx.execute(&sql::insert_expiry_notice(id, valid_until, *longer))
                        .await?;
                }
                let Some(connection) = self.data_connection_in(&mut tx, id).await? else {
                    continue;
                };
                if connection.valid_until.map(Timestamp::as_millis) != Some(valid_until) {
                    // Changed since the scan read it; the next scan sees the new expiry.
                    continue;
                }
                let lead = (lead > 0).then(|| std::time::Duration::from_millis(lead as u64));
                announce(
                    &mut tx,
                    self.dialect,
                    &OutboxEvent::expiry(&connection, lead),
                )
                .await?;
                tx.commit().await?;
                announced += 1;
            }
        }
        Ok(announced)
    }

    async fn prune_webhook_events(&self, before: i64) -> Result<u64, StoreError> {
        let [attempts, deliveries, events, notices] = sql::prune_webhook_events(before);
        let mut tx = self.writer.begin().await?;
        tx.execute(&attempts).await?;
        tx.execute(&deliveries).await?;
        let pruned = tx.execute(&events).await?;
        tx.execute(&notices).await?;
        tx.commit().await?;
        Ok(pruned)
    }
}

/// The lead an expiry `remaining_ms` away is announced at: the shortest of `leads`
/// (ascending) it is within, or the `found` window's own lead (0 for an expiry passed).
fn nearest_lead(found: i64, leads: &[i64], remaining_ms: i64) -> i64 {
    if found == 0 {
        return 0;
    }
    leads
        .iter()
        .copied()
        .find(|lead| remaining_ms <= *lead)
        .unwrap_or(found)
}

#[cfg(test)]
mod tests {
    use super::nearest_lead;

    #[test]
    fn an_expiry_is_announced_at_the_nearest_lead_it_is_within() {
        let leads = [86_400_000, 604_800_000];
        // Found by the 7-day window but due within a day: the 1-day lead.
        assert_eq!(nearest_lead(604_800_000, &leads, 1_500), 86_400_000);
        assert_eq!(nearest_lead(604_800_000, &leads, 86_400_000), 86_400_000);
        assert_eq!(nearest_lead(604_800_000, &leads, 86_400_001), 604_800_000);
        assert_eq!(nearest_lead(86_400_000, &leads, 1_500), 86_400_000);
        // An expiry passed stays an expiry passed.
        assert_eq!(nearest_lead(0, &leads, -5), 0);
    }
}
