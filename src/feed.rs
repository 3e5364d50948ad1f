//! The change feed: the one way the data planes' in-memory snapshots learn what changed.
//! One per process. It follows the store's change log (pushed by PostgreSQL as changes
//! commit, polled on SQLite) and applies each change once, this process's own writes
//! included, by asking every [`Follower`] to read the changed row again. A full reload
//! every [`RELOAD_INTERVAL`] (and whenever changes may have been missed) is the safety net.
//!
//! A write the API acknowledges waits until its change is applied here ([`ChangeSync`]),
//! so the next data-plane request on this process sees it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::domain::ports::{
    Change, ChangeLog, ChangeSeq, ChangeSignal, ChangeSync, Entity, StoreError,
};

/// Every snapshot is rebuilt from the store this often.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// How often a store that cannot push its changes (SQLite) is asked for new ones.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// After a failure (the store unreachable), how long until the next full reload.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// A writer waits at most this long for its change to be applied; the snapshot converges
/// by the next reload anyway.
const APPLY_WAIT: Duration = Duration::from_secs(5);
const BATCH: i64 = 1000;
/// Seqs applied out of order (PostgreSQL) that are remembered for waiters.
const REMEMBERED: usize = 10_000;

/// An in-memory snapshot kept from the store.
#[async_trait]
pub trait Follower: Send + Sync {
    /// Reads the row `change` names again and updates the snapshot (changes of entities it
    /// does not hold are ignored).
    async fn apply(&self, change: &Change) -> Result<(), StoreError>;
    /// Rebuilds the whole snapshot from the store.
    async fn reload(&self) -> Result<(), StoreError>;
}

/// A writer waiting for its change: registered during `epoch`.
struct Waiter {
    seq: ChangeSeq,
    epoch: u64,
    done: oneshot::Sender<()>,
}

#[derive(Default)]
struct Applied {
    /// Every change up to here is applied: the poll position, where changes commit in seq
    /// order (SQLite's one writer). PostgreSQL commits out of seq order, so there only
    /// `beyond` counts.
    through: ChangeSeq,
    /// Applied as pushed, out of seq order.
    beyond: BTreeSet<ChangeSeq>,
    /// Counts full reloads begun; a reload covers every waiter registered before it began
    /// (its change committed before the reload read the store).
    epoch: u64,
    waiters: Vec<Waiter>,
}

impl Applied {
    fn contains(&self, seq: ChangeSeq) -> bool {
        seq <= self.through || self.beyond.contains(&seq)
    }

    /// Wakes the waiters whose change is applied, or that a reload begun at `reloaded`
    /// covers.
    fn wake(&mut self, reloaded: Option<u64>) {
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            if self.contains(w.seq) || reloaded.is_some_and(|e| w.epoch < e) {
                let _ = w.done.send(());
            } else {
                self.waiters.push(w);
            }
        }
    }
}

pub struct ChangeFeed {
    log: Arc<dyn ChangeLog>,
    followers: Vec<Arc<dyn Follower>>,
    applied: Mutex<Applied>,
    /// Wakes the poller at once when a writer waits (SQLite).
    poke: Notify,
    signals: tokio::sync::Mutex<Option<mpsc::Receiver<ChangeSignal>>>,
    /// The store cannot push its changes: they are polled, in seq order.
    polled: std::sync::atomic::AtomicBool,
    /// Per entity ([`Entity::ALL`]'s order): see [`ChangeSync::generation`].
    generations: [AtomicU64; Entity::ALL.len()],
}

impl ChangeFeed {
    pub fn new(log: Arc<dyn ChangeLog>, followers: Vec<Arc<dyn Follower>>) -> Self {
        Self {
            log,
            followers,
            applied: Mutex::default(),
            poke: Notify::new(),
            signals: tokio::sync::Mutex::new(None),
            polled: std::sync::atomic::AtomicBool::new(false),
            generations: Default::default(),
        }
    }

    /// Subscribes to the store's changes, then loads every snapshot: after this the
    /// snapshots are complete, and [`Self::run`] keeps them so.
    pub async fn start(&self) -> Result<(), StoreError> {
        // Subscribed first: a change committed during the load is then delivered after it.
        let signals = self.log.subscribe().await?;
        self.polled
            .store(signals.is_none(), std::sync::atomic::Ordering::Relaxed);
        *self.signals.lock().await = signals;
        self.reload().await
    }

    /// Reloads every follower; everything committed before it began is applied after.
    async fn reload(&self) -> Result<(), StoreError> {
        let began = {
            let mut applied = self.applied.lock().expect("not poisoned");
            applied.epoch += 1;
            applied.epoch
        };
        let mark = self.log.latest_change().await?;
        for follower in &self.followers {
            follower.reload().await?;
        }
        for generation in &self.generations {
            generation.fetch_add(1, Ordering::Release);
        }
        metrics::counter!("switchboard_feed_reloads_total").increment(1);
        let polled = self.polled.load(std::sync::atomic::Ordering::Relaxed);
        let mut applied = self.applied.lock().expect("not poisoned");
        if polled {
            // In seq order: everything up to the mark was committed, so is now loaded.
            applied.through = applied.through.max(mark);
        }
        applied.wake(Some(began));
        Ok(())
    }

    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        for follower in &self.followers {
            follower.apply(change).await?;
        }
        self.generations[change.entity as usize].fetch_add(1, Ordering::Release);
        metrics::counter!("switchboard_feed_changes_applied_total", "entity" => change.entity.as_str())
            .increment(1);
        Ok(())
    }

    /// Applies what the log holds after `through` (the store cannot push: SQLite).
    async fn catch_up(&self) -> Result<(), StoreError> {
        loop {
            let after = self.applied.lock().expect("not poisoned").through;
            let (changes, last) = self.log.changes_after(after, BATCH).await?;
            for change in &changes {
                self.apply(change).await?;
            }
            let mut applied = self.applied.lock().expect("not poisoned");
            applied.through = applied.through.max(last);
            applied.wake(None);
            if last.0 - after.0 < BATCH {
                return Ok(());
            }
        }
    }

    async fn apply_pushed(&self, change: Change) -> Result<(), StoreError> {
        self.apply(&change).await?;
        let mut applied = self.applied.lock().expect("not poisoned");
        applied.beyond.insert(change.seq);
        while applied.beyond.len() > REMEMBERED {
            applied.beyond.pop_first();
        }
        applied.wake(None);
        Ok(())
    }

    /// Follows the store until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut signals = self.signals.lock().await.take();
        let polling = signals.is_none();
        let mut reload = tokio::time::interval(RELOAD_INTERVAL);
        reload.reset();
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = false;
        loop {
            let outcome = tokio::select! {
                _ = stop.changed() => return,
                signal = next_signal(&mut signals), if !polling => match signal {
                    Some(ChangeSignal::Changed(change)) => self.apply_pushed(change).await,
                    Some(ChangeSignal::Missed) => self.reload().await,
                    None => {
                        tracing::error!("the store's change notifications ended; reloading every {RELOAD_INTERVAL:?} instead");
                        signals = None;
                        Ok(())
                    }
                },
                () = self.poke.notified(), if polling && !failed => self.catch_up().await,
                _ = poll.tick(), if polling && !failed => self.catch_up().await,
                _ = reload.tick() => self.reload().await,
                () = tokio::time::sleep(RETRY_INTERVAL), if failed => self.reload().await,
            };
            match outcome {
                Ok(()) => {
                    if failed {
                        tracing::info!("snapshots are following the store again");
                    }
                    failed = false;
                }
                Err(e) => {
                    if !failed {
                        tracing::warn!(error = %e, "cannot follow the store's changes; snapshots keep serving and reload once it answers");
                    }
                    failed = true;
                }
            }
        }
    }
}

async fn next_signal(signals: &mut Option<mpsc::Receiver<ChangeSignal>>) -> Option<ChangeSignal> {
    match signals {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[async_trait]
impl ChangeSync for ChangeFeed {
    async fn applied(&self, seq: ChangeSeq) {
        let rx = {
            let mut applied = self.applied.lock().expect("not poisoned");
            if applied.contains(seq) {
                return;
            }
            let (done, rx) = oneshot::channel();
            let epoch = applied.epoch;
            applied.waiters.push(Waiter { seq, epoch, done });
            rx
        };
        self.poke.notify_one();
        if tokio::time::timeout(APPLY_WAIT, rx).await.is_err() {
            tracing::warn!(
                seq = seq.0,
                "a change was not applied to this process's snapshots in time; the next reload will"
            );
        }
    }

    fn generation(&self, entity: Entity) -> Option<u64> {
        Some(self.generations[entity as usize].load(Ordering::Acquire))
    }
}

/// For processes that keep no snapshot (the CLI): nothing to wait for.
pub struct NoSnapshots;

#[async_trait]
impl ChangeSync for NoSnapshots {
    async fn applied(&self, _: ChangeSeq) {}

    fn generation(&self, _: Entity) -> Option<u64> {
        None
    }
}

/// A snapshot readers load without waiting on anything: immutable, swapped atomically.
/// Writers (the feed, and what the data planes observe) copy it, change the copy and swap
/// it in, one at a time; with persistent maps a copy shares all but the changed path.
pub struct SnapshotCell<T> {
    current: arc_swap::ArcSwap<T>,
    writers: Mutex<()>,
}

impl<T: Default> Default for SnapshotCell<T> {
    fn default() -> Self {
        Self {
            current: arc_swap::ArcSwap::from_pointee(T::default()),
            writers: Mutex::default(),
        }
    }
}

impl<T: Clone> SnapshotCell<T> {
    pub fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    pub fn update(&self, change: impl FnOnce(&mut T)) {
        let _writer = self.writers.lock().expect("not poisoned");
        let mut next = T::clone(&self.current.load());
        change(&mut next);
        self.current.store(Arc::new(next));
    }

    pub fn replace(&self, next: T) {
        let _writer = self.writers.lock().expect("not poisoned");
        self.current.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generation is found by the entity's discriminant: the list must be in its order.
    #[test]
    fn every_entity_has_its_own_generation() {
        for (at, entity) in Entity::ALL.into_iter().enumerate() {
            assert_eq!(entity as usize, at, "{entity:?}");
            assert_eq!(Entity::parse(entity.as_str()), Some(entity));
        }
    }
}
