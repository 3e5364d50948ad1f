//! The audit log: who changed what, and who was refused. Every control-plane change is
//! written before its answer leaves; refusals and rejected attempts (which anyone can
//! cause, at any rate, the data plane's included) go through a bounded queue written in
//! batches, so a flood of bad requests never becomes a database write per request. No event holds a secret: an
//! actor is a token's or secret's id and its user's e-mail.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::echo::echo;
use super::ports::{AuditStore, StoreError};

/// Refusals waiting to be written; past this they are counted and dropped.
const REFUSAL_QUEUE: usize = 10_000;
const REFUSAL_BATCH: usize = 500;
const REFUSAL_FLUSH: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    ApiToken,
    VaultSecret,
    /// An operator on the server's machine, with the command line.
    Cli,
    /// An end user holding a connect session's link (its id is the target).
    ConnectLink,
    /// Nobody we know: a missing or unknown credential.
    Anonymous,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiToken => "api_token",
            Self::VaultSecret => "vault_secret",
            Self::Cli => "cli",
            Self::ConnectLink => "connect_link",
            Self::Anonymous => "anonymous",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ApiToken,
            Self::VaultSecret,
            Self::Cli,
            Self::ConnectLink,
            Self::Anonymous,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    /// The token's or secret's id.
    pub id: Option<i64>,
    /// The token's user, if it has one.
    pub user: Option<String>,
}

impl Actor {
    pub fn anonymous() -> Self {
        Self {
            kind: ActorKind::Anonymous,
            id: None,
            user: None,
        }
    }

    pub fn cli() -> Self {
        Self {
            kind: ActorKind::Cli,
            id: None,
            user: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Authentication or authorisation refused it.
    Refused,
    /// The request was wrong (validation, not found, conflict).
    Rejected,
    /// The service failed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Success, Self::Refused, Self::Rejected, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }

    /// What an HTTP status says happened.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Refused,
            400..=499 => Self::Rejected,
            500..=599 => Self::Failed,
            _ => Self::Success,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// 0 until stored.
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub at: i64,
    pub actor: Actor,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub outcome: Outcome,
    /// The HTTP status answered, when it was a request.
    pub status: Option<u16>,
}

impl AuditEvent {
    pub fn now(actor: Actor, action: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            id: 0,
            at: chrono::Utc::now().timestamp_micros(),
            actor,
            action: action.into(),
            target: None,
            request_id: None,
            client_ip: None,
            outcome,
            status: None,
        }
    }
}

/// Which events a listing shows; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor_kind: Option<ActorKind>,
    pub actor_id: Option<i64>,
    pub actor_user: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    /// From this moment (µs), inclusive.
    pub since: Option<i64>,
    /// Before this moment (µs).
    pub until: Option<i64>,
}

impl AuditFilter {
    /// Reads an actor as written in a query: `api_token:3`, `vault_secret`, `cli`, or an
    /// e-mail address (the token's user).
    pub fn set_actor(&mut self, text: &str) -> Result<(), String> {
        if text.contains('@') {
            self.actor_user = Some(text.to_owned());
            return Ok(());
        }
        let (kind, id) = match text.split_once(':') {
            Some((kind, id)) => (
                kind,
                Some(id.parse::<i64>().map_err(|_| {
                    format!("actor '{}': the id after ':' must be a number", echo(text))
                })?),
            ),
            None => (text, None),
        };
        self.actor_kind = Some(ActorKind::parse(kind).ok_or_else(|| {
            format!(
                "actor must be api_token[:ID], vault_secret[:ID], cli, anonymous or an e-mail address, not '{}'",
                echo(text)
            )
        })?);
        self.actor_id = id;
        Ok(())
    }
}

pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    refusals: mpsc::Sender<AuditEvent>,
}

impl AuditLog {
    /// The log, and the task that writes queued refusals (run it for the server's life).
    pub fn new(store: Arc<dyn AuditStore>) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (refusals, queue) = mpsc::channel(REFUSAL_QUEUE);
        let writer = write_refusals(store.clone(), queue);
        (Self { store, refusals }, writer)
    }

    /// Writes an event now; a change's event is stored before its answer is sent.
    pub async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.store
            .insert_audit_events(std::slice::from_ref(&event))
            .await
    }

    /// Queues an event to be written with the next batch; a full queue drops it (counted
    /// in `switchboard_audit_events_dropped_total`).
    pub fn record_later(&self, event: AuditEvent) {
        if self.refusals.try_send(event).is_err() {
            metrics::counter!("switchboard_audit_events_dropped_total").increment(1);
        }
    }

    /// A page, newest first, and how many match.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<AuditEvent>, u64), StoreError> {
        self.store.list_audit_events(filter, offset, limit).await
    }

    /// Forgets events older than `retention`; returns how many.
    pub async fn prune(&self, retention: Duration) -> Result<u64, StoreError> {
        let before = chrono::Utc::now().timestamp_micros() - retention.as_micros() as i64;
        self.store.prune_audit_events(before).await
    }
}

async fn write_refusals(store: Arc<dyn AuditStore>, mut queue: mpsc::Receiver<AuditEvent>) {
    let mut batch = Vec::with_capacity(REFUSAL_BATCH);
    while queue.recv_many(&mut batch, REFUSAL_BATCH).await > 0 {
        // Gather what else arrives meanwhile, so a burst is one write.
        let deadline = tokio::time::sleep(REFUSAL_FLUSH);
        tokio::pin!(deadline);
        while batch.len() < REFUSAL_BATCH {
            tokio::select! {
                () = &mut deadline => break,
                got = queue.recv_many(&mut batch, REFUSAL_BATCH) => if got == 0 { break },
            }
        }
        if let Err(e) = store.insert_audit_events(&batch).await {
            metrics::counter!("switchboard_audit_events_dropped_total")
                .increment(batch.len() as u64);
            tracing::warn!(error = %e, events = batch.len(), "writing refused requests to the audit log failed");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_read_as_written() {
        let mut f = AuditFilter::default();
        f.set_actor("api_token:12").unwrap();
        assert_eq!(
            (f.actor_kind, f.actor_id),
            (Some(ActorKind::ApiToken), Some(12))
        );
        let mut f = AuditFilter::default();
        f.set_actor("cli").unwrap();
        assert_eq!((f.actor_kind, f.actor_id), (Some(ActorKind::Cli), None));
        let mut f = AuditFilter::default();
        f.set_actor("ops@example.com").unwrap();
        assert_eq!(f.actor_user.as_deref(), Some("ops@example.com"));
        assert!(AuditFilter::default().set_actor("root").is_err());
        assert!(AuditFilter::default().set_actor("api_token:x").is_err());
    }

    #[test]
    fn statuses_name_outcomes() {
        assert_eq!(Outcome::of_status(201), Outcome::Success);
        assert_eq!(Outcome::of_status(303), Outcome::Success);
        assert_eq!(Outcome::of_status(401), Outcome::Refused);
        assert_eq!(Outcome::of_status(403), Outcome::Refused);
        assert_eq!(Outcome::of_status(422), Outcome::Rejected);
        assert_eq!(Outcome::of_status(503), Outcome::Failed);
        for o in [
            Outcome::Success,
            Outcome::Refused,
            Outcome::Rejected,
            Outcome::Failed,
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}
