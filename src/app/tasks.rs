//! The server's background tasks: following the store's changes, the periodic snapshot
//! reload, OAuth2 refresh ahead of expiry, planner statistics, TLS reload on SIGHUP, and the
//! shutdown signal.

use std::sync::Arc;

use crate::api::AppServices;
use crate::gateway::directory::CredentialDirectory;
use crate::net::ReloadableTls;
use crate::store::{Store, StoreEvent};

use super::{CREDENTIAL_REFRESH_INTERVAL, STORE_OPTIMIZE_INTERVAL};

/// Applies other replicas' changes to this replica's credential snapshot as they arrive.
pub(super) async fn follow_store_events(
    services: Arc<AppServices>,
    directory: Arc<CredentialDirectory>,
    mut events: tokio::sync::mpsc::Receiver<StoreEvent>,
) {
    while let Some(event) = events.recv().await {
        let resync = match services.data_connections.follow(event).await {
            Ok(resync) => resync,
            Err(e) => {
                tracing::warn!(error = %e, ?event, "cannot apply a change from the store; reloading");
                true
            }
        };
        if resync && let Err(e) = refresh_credentials(&services, &directory).await {
            tracing::warn!(error = %e, "credential reload failed; the periodic refresh will retry");
        }
    }
}

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

/// Rebuilds the gateway's credential snapshot from the store.
pub(super) async fn refresh_credentials(
    services: &AppServices,
    directory: &CredentialDirectory,
) -> anyhow::Result<()> {
    let generation = directory.generation();
    let credentials = services
        .data_connections
        .issued_credentials()
        .await
        .map_err(|e| anyhow::anyhow!("cannot load issued credentials: {e}"))?;
    if directory.replace_all(credentials, generation) {
        tracing::debug!(
            credentials = directory.len(),
            "credential snapshot refreshed"
        );
    }
    Ok(())
}

pub(super) async fn refresh_periodically(
    services: Arc<AppServices>,
    directory: Arc<CredentialDirectory>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CREDENTIAL_REFRESH_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = refresh_credentials(&services, &directory).await {
            tracing::warn!(error = %e, "credential refresh failed; keeping the current snapshot");
        }
    }
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

/// Keeps the planner's statistics current, so a bulk load does not leave list queries on
/// a plan chosen for an empty table.
pub(super) async fn optimize_periodically(
    store: Arc<dyn Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(STORE_OPTIMIZE_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = store.optimize().await {
            tracing::warn!(error = %e, "refreshing the store's planner statistics failed");
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
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
