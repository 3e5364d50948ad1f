//! How data connections are used: queries, response bytes and the last use, counted in
//! memory by the gateway and added to the store in batches, so a query never waits on the
//! database (and the data plane keeps serving without it: a failed batch is kept for the
//! next).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ports::{DataConnectionStore, IntegrationStore, StoreError};
use super::time::Timestamp;

/// Independent locks, so concurrent queries of different connections rarely meet.
const SHARDS: usize = 16;

/// Usage since the last batch, or (in the store) since the connection was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub queries: u64,
    pub response_bytes: u64,
    /// Milliseconds since the Unix epoch; 0: not used.
    pub last_used_at: i64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.queries += other.queries;
        self.response_bytes += other.response_bytes;
        self.last_used_at = self.last_used_at.max(other.last_used_at);
    }
}

/// A connection's usage as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub queries: u64,
    pub response_bytes: u64,
    pub last_used_at: Option<Timestamp>,
}

#[derive(Default)]
pub struct UsageMeter {
    shards: [Mutex<HashMap<i64, Tally>>; SHARDS],
}

impl UsageMeter {
    fn shard(&self, connection_id: i64) -> &Mutex<HashMap<i64, Tally>> {
        &self.shards[connection_id.rem_euclid(SHARDS as i64) as usize]
    }

    /// A ticket for one admitted query, counted (with its response's bytes) when dropped:
    /// one lock per query, whichever way it ends.
    pub fn ticket(self: &Arc<Self>, connection_id: i64) -> UsageTicket {
        UsageTicket {
            meter: self.clone(),
            connection_id,
            response_bytes: 0,
        }
    }

    fn record(&self, connection_id: i64, response_bytes: u64) {
        let now = Timestamp::now().as_millis();
        let mut shard = self.shard(connection_id).lock().expect("not poisoned");
        let tally = shard.entry(connection_id).or_default();
        tally.queries += 1;
        tally.response_bytes += response_bytes;
        tally.last_used_at = tally.last_used_at.max(now);
    }

    fn take(&self) -> Vec<(i64, Tally)> {
        self.shards
            .iter()
            .flat_map(|s| std::mem::take(&mut *s.lock().expect("not poisoned")))
            .collect()
    }

    fn put_back(&self, tallies: Vec<(i64, Tally)>) {
        for (id, tally) in tallies {
            self.shard(id)
                .lock()
                .expect("not poisoned")
                .entry(id)
                .or_default()
                .add(tally);
        }
    }

    /// Adds what was counted to the store; on failure keeps it for the next try.
    pub async fn flush(&self, store: &dyn DataConnectionStore) -> Result<usize, StoreError> {
        let tallies = self.take();
        if tallies.is_empty() {
            return Ok(0);
        }
        match store.add_data_connection_usage(&tallies).await {
            Ok(()) => Ok(tallies.len()),
            Err(e) => {
                self.put_back(tallies);
                Err(e)
            }
        }
    }
}

/// One query's use of its connection; see [`UsageMeter::ticket`].
pub struct UsageTicket {
    meter: Arc<UsageMeter>,
    connection_id: i64,
    response_bytes: u64,
}

impl UsageTicket {
    pub fn add_response_bytes(&mut self, bytes: u64) {
        self.response_bytes += bytes;
    }
}

impl Drop for UsageTicket {
    fn drop(&mut self) {
        self.meter.record(self.connection_id, self.response_bytes);
    }
}

/// When integration connections were last called, by connection id, since the last batch.
#[derive(Default)]
pub struct LastUses {
    shards: [Mutex<HashMap<String, i64>>; SHARDS],
}

impl LastUses {
    fn shard(&self, connection_id: &str) -> &Mutex<HashMap<String, i64>> {
        // The id's last byte is random enough (a UUID's hex digit) to spread the calls.
        let last = connection_id.as_bytes().last().copied().unwrap_or(0);
        &self.shards[usize::from(last) % SHARDS]
    }

    /// A passthrough call was made with this connection.
    pub fn used(&self, connection_id: &str) {
        let now = chrono::Utc::now().timestamp_micros();
        let mut calls = self.shard(connection_id).lock().expect("not poisoned");
        // A key is copied only on its first call of a batch.
        match calls.get_mut(connection_id) {
            Some(at) => *at = (*at).max(now),
            None => {
                calls.insert(connection_id.to_owned(), now);
            }
        }
    }

    /// Records the batch in the store; on failure keeps it for the next try.
    pub async fn flush(&self, store: &dyn IntegrationStore) -> Result<usize, StoreError> {
        let batch: Vec<(String, i64)> = self
            .shards
            .iter()
            .flat_map(|s| std::mem::take(&mut *s.lock().expect("not poisoned")))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.add_integration_uses(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                for (id, at) in batch {
                    let mut calls = self.shard(&id).lock().expect("not poisoned");
                    let kept = calls.entry(id).or_insert(at);
                    *kept = (*kept).max(at);
                }
                Err(e)
            }
        }
    }
}

/// What the data planes count, and where it goes.
pub struct UsageSinks {
    pub data_connections: (Arc<UsageMeter>, Arc<dyn DataConnectionStore>),
    pub integrations: (Arc<LastUses>, Arc<dyn IntegrationStore>),
}

impl UsageSinks {
    pub async fn flush(&self) {
        let (meter, store) = &self.data_connections;
        if let Err(e) = meter.flush(store.as_ref()).await {
            tracing::warn!(error = %e, "recording data connections' usage failed; kept for the next try");
        }
        let (uses, store) = &self.integrations;
        if let Err(e) = uses.flush(store.as_ref()).await {
            tracing::warn!(error = %e, "recording integration connections' last use failed; kept for the next try");
        }
    }
}

/// Flushes every `interval` until `stop`, then once more.
pub async fn flush_periodically(
    sinks: Arc<UsageSinks>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            _ = stop.changed() => true,
        };
        sinks.flush().await;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_and_go_back_on_failure() {
        let meter = Arc::new(UsageMeter::default());
        let mut first = meter.ticket(7);
        first.add_response_bytes(10);
        first.add_response_bytes(5);
        drop(first);
        drop(meter.ticket(7));
        drop(meter.ticket(7));
        drop(meter.ticket(-3));
        let mut taken = meter.take();
        taken.sort_by_key(|(id, _)| *id);
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[1].1.queries, taken[1].1.response_bytes), (3, 15));
        assert!(taken[1].1.last_used_at > 0);
        assert!(meter.take().is_empty(), "taken once");
        meter.put_back(taken);
        drop(meter.ticket(7));
        let again: HashMap<_, _> = meter.take().into_iter().collect();
        assert_eq!(again[&7].queries, 4, "kept through a failed batch");
    }
}
