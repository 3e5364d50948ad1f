//! Webhook delivery: every process runs a [`Dispatcher`] that leases due deliveries from
//! the store's outbox, sends each signed (Standard Webhooks: `webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), records the attempt, and schedules a retry
//! with backoff and jitter until the horizon. The lease makes one process send a delivery
//! at a time, so replicas share the work and each event reaches each endpoint once (at
//! least once: a process killed between the send and its record sends it again later,
//! under the same `webhook-id`). It also announces connections' coming expiries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, header};
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};

use crate::crypto::Sealer;
use crate::domain::ports::{Change, Entity, StoreError, WebhookStore};
use crate::domain::time::Timestamp;
use crate::domain::webhook::{
    AfterAttempt, Attempt, ConfiguredEndpoint, DeliverySettings, DueDelivery, Endpoint,
    EndpointSource, SigningSecret,
};
use crate::net::outbound::OutboundClient;

/// Deliveries leased per claim.
const CLAIM_BATCH: i64 = 32;
/// After a change wakes the dispatcher, how long it lets more arrive before it looks.
const WAKE_COALESCE: std::time::Duration = std::time::Duration::from_millis(20);
/// How often `switchboard_webhook_deliveries_pending` is counted.
const PENDING_GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Dispatcher {
    store: Arc<dyn WebhookStore>,
    client: OutboundClient,
    sealer: Arc<Sealer>,
    settings: DeliverySettings,
    /// The configured endpoints' secrets, by endpoint id.
    configured: HashMap<String, SigningSecret>,
    /// This process, in the leases it takes.
    owner: String,
    claims: AtomicU64,
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// Makes the configured endpoints the stored ones, then is ready to run.
    pub async fn start(
        store: Arc<dyn WebhookStore>,
        sealer: Arc<Sealer>,
        settings: DeliverySettings,
        configured: Vec<ConfiguredEndpoint>,
        wake: Arc<Notify>,
    ) -> Result<Self, StoreError> {
        let (endpoints, configured): (Vec<Endpoint>, HashMap<String, SigningSecret>) = configured
            .into_iter()
            .map(|c| {
                let id = c.id();
                let endpoint = Endpoint {
                    id: id.clone(),
                    source: EndpointSource::Config,
                    url: c.url,
                    events: c.events,
                    created_at: Timestamp::now(),
                    sealed_secret: None,
                };
                (endpoint, (id, c.secret))
            })
            .unzip();
        store.sync_configured_webhook_endpoints(&endpoints).await?;
        Ok(Self {
            store,
            client: OutboundClient::new(settings.timeout, settings.timeout),
            sealer,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            claims: AtomicU64::new(0),
            settings,
            configured,
            wake,
        })
    }

    /// Delivers until `stop`: whatever is due now, then again every poll interval or as
    /// soon as this process records a change.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut next_scan = Instant::now();
        let mut next_count = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                next_scan = Instant::now() + self.settings.expiry_scan_interval;
                self.announce_expiries().await;
            }
            // A backlog drains batch by batch, but not past a stop.
            while !*stop.borrow() && self.deliver_due().await >= CLAIM_BATCH as usize {}
            // At most once a second, however often changes wake this.
            if Instant::now() >= next_count {
                next_count = Instant::now() + PENDING_GAUGE_INTERVAL;
                match self.store.count_pending_webhook_deliveries().await {
                    Ok(n) => {
                        metrics::gauge!("switchboard_webhook_deliveries_pending").set(n as f64)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "counting pending webhook deliveries failed")
                    }
                }
            }
            let wait = self
                .settings
                .poll_interval
                .min(next_scan.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {
                    // A burst of changes makes one round, not one each.
                    tokio::time::sleep(WAKE_COALESCE).await;
                }
                _ = stop.changed() => return,
            }
        }
    }

    async fn announce_expiries(&self) {
        let now = Timestamp::now().as_millis();
        let leads: Vec<i64> = self
            .settings
            .expiring_leads
            .iter()
            .map(|d| d.as_millis() as i64)
            .collect();
        let since = self.settings.horizon.as_millis() as i64;
        match self.store.announce_expiries(now, &leads, since).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "announced data connections' expiries"),
            Err(e) => tracing::warn!(error = %e, "looking for expiring data connections failed"),
        }
    }

    /// Sends one claim's worth of due deliveries; returns how many it claimed.
    async fn deliver_due(&self) -> usize {
        let owner = format!(
            "{}:{}",
            self.owner,
            self.claims.fetch_add(1, Ordering::Relaxed)
        );
        let now = Timestamp::now().as_millis();
        match self.store.webhook_deliveries_due(now).await {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                tracing::warn!(error = %e, "looking for due webhook deliveries failed");
                return 0;
            }
        }
        let until = now + self.settings.lease().as_millis() as i64;
        let due = match self
            .store
            .claim_webhook_deliveries(&owner, now, until, CLAIM_BATCH)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                return 0;
            }
        };
        let claimed = due.len();
        futures_util::stream::iter(due)
            .for_each_concurrent(self.settings.concurrency, |d| self.attempt(d, &owner))
            .await;
        claimed
    }

    fn secret_for(&self, endpoint: &Endpoint) -> Option<SigningSecret> {
        match (endpoint.source, &endpoint.sealed_secret) {
            (EndpointSource::Config, _) => self.configured.get(&endpoint.id).cloned(),
            (EndpointSource::Api, Some(sealed)) => {
                match SigningSecret::open(&self.sealer, &endpoint.id, sealed) {
                    Ok(secret) => Some(secret),
                    Err(e) => {
                        tracing::error!(endpoint_id = %endpoint.id, error = %e, "cannot open a webhook endpoint's secret");
                        None
                    }
                }
            }
            (EndpointSource::Api, None) => None,
        }
    }

    async fn attempt(&self, d: DueDelivery, owner: &str) {
        let Some(secret) = self.secret_for(&d.endpoint) else {
            // Another replica's configuration has this endpoint; it will send it.
            tracing::warn!(endpoint_id = %d.endpoint.id, "no secret for this webhook endpoint here; leaving its delivery to a process that has one");
            if let Err(e) = self.store.release_webhook_delivery(d.id, owner).await {
                tracing::warn!(error = %e, "releasing a webhook delivery failed");
            }
            return;
        };
        let timestamp = chrono::Utc::now().timestamp();
        let request = Request::builder()
            .method(Method::POST)
            .uri(d.endpoint.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("Switchboard-Webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                secret.sign(&d.event_id, timestamp, &d.body),
            )
            .body(Body::from(d.body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(endpoint_id = %d.endpoint.id, error = %e, "cannot build a webhook request");
                return;
            }
        };
        let at = Timestamp::now();
        let started = Instant::now();
        let sent = self
            .client
            .send(
                self.settings.allow_private_network,
                &d.endpoint.url,
                request,
            )
            .await;
        let latency_ms = started.elapsed().as_millis() as i64;
        let (status, error) = match sent {
            Ok(response) => {
                let status = response.status();
                let error = if status.is_success() {
                    None
                } else if status.is_redirection() {
                    Some(format!(
                        "the endpoint answered {} (redirects are not followed)",
                        status.as_u16()
                    ))
                } else {
                    Some(format!("the endpoint answered {}", status.as_u16()))
                };
                (Some(status.as_u16()), error)
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let number = d.attempts + 1;
        let after = if error.is_none() {
            AfterAttempt::Delivered
        } else {
            self.settings.after_failure(
                u32::try_from(number).unwrap_or(u32::MAX),
                d.occurred_at,
                Timestamp::now(),
                rand::random::<f64>(),
            )
        };
        let outcome = match after {
            AfterAttempt::Delivered => "delivered",
            AfterAttempt::RetryAt(_) => "retry",
            AfterAttempt::GiveUp => "failed",
        };
        metrics::counter!("switchboard_webhook_attempts_total", "outcome" => outcome).increment(1);
        match after {
            AfterAttempt::Delivered => {
                tracing::debug!(event_id = %d.event_id, endpoint_id = %d.endpoint.id, latency_ms, "webhook delivered")
            }
            AfterAttempt::RetryAt(next) => {
                tracing::info!(event_id = %d.event_id, endpoint_id = %d.endpoint.id, attempt = number, error = error.as_deref().unwrap_or(""), retry_at = %next.to_iso8601_millis(), "webhook attempt failed; retrying")
            }
            AfterAttempt::GiveUp => {
                tracing::warn!(event_id = %d.event_id, endpoint_id = %d.endpoint.id, attempt = number, error = error.as_deref().unwrap_or(""), "webhook delivery given up: its horizon passed")
            }
        }
        let attempt = Attempt {
            at,
            status,
            latency_ms,
            error,
        };
        if let Err(e) = self
            .store
            .record_webhook_attempt(d.id, number, &attempt, after)
            .await
        {
            // The lease runs out and the delivery is tried again: at least once.
            tracing::warn!(event_id = %d.event_id, error = %e, "recording a webhook attempt failed");
        }
    }
}

/// Wakes the dispatcher on every change this process sees (its own and, on PostgreSQL,
/// other replicas'), usage aside: most events come with a change.
pub struct DispatchWaker(pub Arc<Notify>);

#[async_trait::async_trait]
impl crate::feed::Follower for DispatchWaker {
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        // Usage announces no event; every other write may have.
        if change.entity != Entity::DataConnectionUsage {
            self.0.notify_one();
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
