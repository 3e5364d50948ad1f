//! The server's background tasks besides the change feed (`crate::feed`): OAuth2 refresh
//! ahead of expiry, store maintenance, TLS reload on SIGHUP, and the shutdown signal.

use std::sync::Arc;

use std::time::Duration;

use crate::api::AppServices;
use crate::domain::ports::{ChangeLog, WebhookStore};
use crate::net::ReloadableTls;
use crate::store::SqlStore;

/// How often the store's change log, sessions, audit log and outbox are pruned.
const STORE_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the planner's statistics are looked at (SQLite re-analyses only tables whose
/// size changed a lot).
const STATISTICS_INTERVAL: Duration = Duration::from_secs(10);
/// How long the change log keeps a change: far longer than any follower lags.
const CHANGE_LOG_RETENTION: Duration = Duration::from_secs(3600);

/// SIGHUP re-reads every TLS certificate and key; a bad pair keeps the old one.
pub(super) async fn reload_tls_on_hangup(tls: Vec<Arc<ReloadableTls>>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            for t in &tls {
                match t.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %t.cert_path().display(), "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "TLS reload failed; keeping the current certificate")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Refreshes OAuth2 tokens ahead of expiry and retries failed refreshes when due.
pub(super) async fn refresh_oauth_tokens(
    services: Arc<AppServices>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let oauth = services.integrations.oauth();
    loop {
        tokio::select! {
            () = tokio::time::sleep(oauth.settings().scan_interval) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = oauth.refresh_due().await {
            tracing::warn!(error = %e, "looking for OAuth2 tokens due a refresh failed");
        }
    }
}

/// How long the store keeps what it prunes.
pub(super) struct Retention {
    pub audit: Duration,
    pub webhook_events: Duration,
}

/// Keeps the store in shape: the planner's statistics current (so a bulk load does not
/// leave list queries on a plan chosen for an empty table), and the change log short.
pub(super) async fn maintain_store(
    store: Arc<SqlStore>,
    connect: Arc<crate::domain::connect::ConnectSessions>,
    console: Arc<crate::domain::console::ConsoleSessions>,
    audit: Arc<crate::domain::audit::AuditLog>,
    retention: Retention,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut next_maintenance = tokio::time::Instant::now() + STORE_MAINTENANCE_INTERVAL;
    loop {
        tokio::select! {
            () = tokio::time::sleep(STATISTICS_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        // Often: cheap when little changed, and a table that just grew (a bulk load) is
        // otherwise read on plans chosen for its old size for up to a minute.
        if let Err(e) = store.optimize().await {
            tracing::warn!(error = %e, "refreshing the store's planner statistics failed");
        }
        if tokio::time::Instant::now() < next_maintenance {
            continue;
        }
        next_maintenance = tokio::time::Instant::now() + STORE_MAINTENANCE_INTERVAL;
        let before =
            chrono::Utc::now().timestamp_micros() - CHANGE_LOG_RETENTION.as_micros() as i64;
        if let Err(e) = store.prune_changes(before).await {
            tracing::warn!(error = %e, "pruning the change log failed");
        }
        match connect.clean_up().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "forgot expired connect sessions"),
            Err(e) => tracing::warn!(error = %e, "forgetting expired connect sessions failed"),
        }
        let webhook_before =
            chrono::Utc::now().timestamp_millis() - retention.webhook_events.as_millis() as i64;
        match store.prune_webhook_events(webhook_before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "forgot webhook events past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning webhook events failed"),
        }
        match audit.prune(retention.audit).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "forgot audit events past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
        }
        match console.clean_up().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "forgot expired console sessions"),
            Err(e) => tracing::warn!(error = %e, "forgetting expired console sessions failed"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C. SIGTERM's handler is installed when this is called, not
/// when the future is first polled: a SIGTERM sent the moment the server says it listens
/// then stops it gracefully instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}
