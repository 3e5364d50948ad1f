//! What a passthrough call says about a connection's credential: accepted (`operational`)
//! or refused with 401 (`failed`, until the credential is replaced). The data plane never
//! waits on the database, so the change is queued and written behind the answer by one
//! background writer, which waits for each write to reach this process's snapshots before
//! the next; control-plane reads flush the queue first, so they see every observation this
//! process made, in the store and in memory alike.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::integration::ConnectionState;
use super::ports::{ChangeSync, IntegrationStore};

/// Observations waiting beyond this many are dropped (logged): the snapshot already holds
/// them, and the next call observes again.
const QUEUE: usize = 4096;
/// One more try after a failed write; then the observation is dropped.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// The state a platform's answer gives the credential, and why when it is refused.
pub fn state_after_call(platform_status: u16) -> (ConnectionState, Option<&'static str>) {
    if platform_status == 401 {
        (
            ConnectionState::Failed,
            Some("the platform refused the credential (401)"),
        )
    } else {
        (ConnectionState::Operational, None)
    }
}

enum Job {
    Write {
        id: String,
        state: ConnectionState,
        error: Option<&'static str>,
        at: i64,
    },
    Flush(oneshot::Sender<()>),
}

pub struct StateWriter {
    queue: mpsc::Sender<Job>,
}

impl StateWriter {
    /// Starts the writer on the current runtime; it ends when the writer is dropped.
    pub fn start(store: Arc<dyn IntegrationStore>, snapshots: Arc<dyn ChangeSync>) -> Self {
        let (queue, mut jobs) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                match job {
                    Job::Write {
                        id,
                        state,
                        error,
                        at,
                    } => {
                        let write = || store.set_integration_state(&id, state, error, at);
                        let written = match write().await {
                            Ok(seq) => Ok(seq),
                            Err(_) => {
                                tokio::time::sleep(RETRY_AFTER).await;
                                write().await
                            }
                        };
                        match written {
                            Ok(seq) => snapshots.applied(seq).await,
                            Err(e) => {
                                tracing::warn!(connection_id = %id, state = state.as_str(), error = %e, "cannot record the connection state");
                            }
                        }
                    }
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues a state write; never waits.
    pub fn record(&self, id: &str, state: ConnectionState, error: Option<&'static str>, at: i64) {
        let job = Job::Write {
            id: id.to_owned(),
            state,
            error,
            at,
        };
        if self.queue.try_send(job).is_err() {
            tracing::warn!(connection_id = %id, "the connection-state queue is full; dropping an observation");
        }
    }

    /// Waits until everything queued before it is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}
