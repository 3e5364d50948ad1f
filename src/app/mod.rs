//! Building and running the server: the store and keys ([`core`]), the services, the
//! listeners (bound first, so port 0 reports the port it got), and the background tasks
//! ([`tasks`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use url::Url;

use crate::api::{self, AppServices};
use crate::config::{Settings, TlsFiles};
use crate::domain::audit::AuditLog;
use crate::domain::connect::{ConnectSessions, ConnectSettings};
use crate::domain::console::ConsoleSessions;
use crate::domain::data_connection::DataConnections;
use crate::domain::integration::Integrations;
use crate::domain::ports::{Change, Entity, StoreError};
use crate::domain::token::ApiTokens;
use crate::domain::webhook::Webhooks;
use crate::feed::ChangeFeed;
use crate::gateway::Gateway;
use crate::gateway::directory::{CredentialDirectory, DirectoryFollower};
use crate::net::ReloadableTls;
use crate::net::outbound::OutboundClient;
use crate::passthrough::Passthrough;
use crate::passthrough::directory::{VaultDirectory, VaultFollower};
use crate::store::SqlStore;
use crate::token_client::TokenClient;
use crate::webhooks::{DispatchWaker, Dispatcher};

mod core;
mod tasks;

pub use core::{Core, open_store, require_install};
pub use tasks::shutdown_signal;
use tasks::*;

/// The running server: bound listeners and the handlers behind them.
pub struct Application {
    data_dir: std::path::PathBuf,
    api_listener: TcpListener,
    api_addr: SocketAddr,
    api: api::Api,
    gateway_listener: TcpListener,
    gateway_addr: SocketAddr,
    services: Arc<AppServices>,
    store: Arc<SqlStore>,
    feed: Arc<ChangeFeed>,
    topology: Arc<crate::domain::topology::Topology>,
    upstream_client: crate::gateway::UpstreamClient,
    gateway: Arc<Gateway>,
    api_workers: usize,
    gateway_workers: usize,
    api_tls: Option<Arc<ReloadableTls>>,
    gateway_tls: Option<Arc<ReloadableTls>>,
    /// Writes queued audit events (refusals) in batches.
    audit_writer: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    audit_retention: std::time::Duration,
    webhook_retention: std::time::Duration,
    dispatcher: Arc<Dispatcher>,
    usage_flush_interval: std::time::Duration,
}

impl Application {
    /// Opens everything and binds the listeners (port 0 picks a free port).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        crate::telemetry::metrics_handle();
        let core = Core::open(&settings).await?;
        // Bound before the first token is made: a port in use stops a fresh install before
        // it prints a token (the next start prints it).
        let api_listener = bind(settings.api.listen, "api.listen", "--api-listen").await?;
        let api_addr = api_listener.local_addr()?;
        let gateway_listener = bind(
            settings.gateway.listen,
            "gateway.listen",
            "--gateway-listen",
        )
        .await?;
        let gateway_addr = gateway_listener.local_addr()?;
        core.bootstrap().await?;
        settings
            .topology
            .follow_gateway_address(&gateway_addr.ip().to_string(), gateway_addr.port());
        warn_about_addresses(&settings, api_addr, gateway_addr);
        let public_url = match &settings.public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{api_addr}")).expect("socket address forms a URL"),
        };
        let topology = Arc::new(settings.topology.clone());
        describe_upstreams(&topology);
        let tokens = Arc::new(core.api_tokens());
        let directory = Arc::new(CredentialDirectory::default());
        let webhook_wake = Arc::new(tokio::sync::Notify::new());
        let vault = Arc::new(VaultDirectory::default());
        let feed = Arc::new(ChangeFeed::new(
            core.store.clone(),
            vec![
                Arc::new(DirectoryFollower {
                    store: core.store.clone(),
                    directory: directory.clone(),
                }),
                Arc::new(VaultFollower {
                    secrets: core.store.clone(),
                    connections: core.store.clone(),
                    directory: vault.clone(),
                }),
                Arc::new(TokenCacheFollower(tokens.clone())),
                Arc::new(DispatchWaker(webhook_wake.clone())),
            ],
        ));
        feed.start()
            .await
            .context("cannot load the data planes' snapshots from the store")?;
        let outbound = Arc::new(OutboundClient::new(
            settings.passthrough_timeouts.0,
            settings.passthrough_timeouts.1,
        ));
        let token_client = Arc::new(TokenClient::new(outbound.clone()));
        let integrations = Arc::new(Integrations::new(
            core.store.clone(),
            core.store.clone(),
            feed.clone(),
            Arc::new(settings.catalog.clone()),
            core.sealer.clone(),
            token_client.clone(),
            settings.oauth.clone(),
        ));
        let connect = Arc::new(ConnectSessions::new(
            core.store.clone(),
            integrations.clone(),
            token_client,
            core.connect_hasher.clone(),
            core.sealer.clone(),
            ConnectSettings {
                session_ttl: settings.connect.session_ttl,
                allowed_return_origins: settings.connect.allowed_return_origins.clone(),
                public_url: public_url.clone(),
            },
            settings.oauth.default_token_lifetime,
        ));
        let gateway = Arc::new(Gateway::new(
            &settings.gateway,
            directory.clone(),
            topology.clone(),
            core.password_hasher.clone(),
        )?);
        let vault_secrets = Arc::new(core.vault_secrets(feed.clone()));
        let console = Arc::new(ConsoleSessions::new(
            core.store.clone(),
            tokens.clone(),
            vault_secrets.clone(),
            core.console_session_hasher.clone(),
            core.console_csrf_hasher.clone(),
            core.sealer.clone(),
            settings.console_session_ttl,
        ));
        let (audit, audit_writer) = AuditLog::new(core.store.clone());
        let dispatcher = Arc::new(
            Dispatcher::start(
                core.store.clone(),
                core.sealer.clone(),
                settings.webhook_delivery.clone(),
                settings.webhooks.clone(),
                webhook_wake,
            )
            .await
            .context("cannot record the configured webhook endpoints")?,
        );
        let services = Arc::new(AppServices {
            audit: Arc::new(audit),
            health: core.store.clone(),
            tokens,
            data_connections: DataConnections::new(
                core.store.clone(),
                topology.clone(),
                core.password_hasher.clone(),
                feed.clone(),
                directory.clone(),
            ),
            vault_secrets,
            integrations: integrations.clone(),
            passthrough: Arc::new(Passthrough::new(
                outbound,
                integrations,
                vault,
                core.vault_secret_hasher.clone(),
            )),
            connect,
            console,
            webhooks: Arc::new(Webhooks::new(
                core.store.clone(),
                core.sealer.clone(),
                settings.webhook_delivery.allow_private_network,
            )),
            topology: topology.clone(),
            upstream_health: gateway.upstream_health(),
            secure_cookies: settings.api.tls.is_some() || public_url.scheme() == "https",
            public_url: AppServices::public_base(&public_url),
        });
        let api_handler = api::Api::new(services.clone(), &settings.api);
        let load_tls = |files: &Option<TlsFiles>, what: &str| {
            files
                .clone()
                .map(|f| {
                    ReloadableTls::load(f)
                        .map(Arc::new)
                        .with_context(|| format!("{what} TLS"))
                })
                .transpose()
        };
        let api_tls = load_tls(&settings.api.tls, "api")?;
        let gateway_tls = load_tls(&settings.gateway.tls, "gateway")?;
        Ok(Self {
            data_dir: settings.data_dir.clone(),
            api_listener,
            api_addr,
            api: api_handler,
            gateway_listener,
            gateway_addr,
            services,
            store: core.store.clone(),
            feed,
            upstream_client: crate::gateway::upstream_client(&settings.gateway)?,
            topology,
            gateway,
            api_workers: settings.api.workers,
            gateway_workers: settings.gateway.workers,
            api_tls,
            gateway_tls,
            audit_writer: Box::pin(audit_writer),
            audit_retention: settings.audit_retention,
            webhook_retention: settings.webhook_delivery.retention,
            dispatcher,
            usage_flush_interval: settings.gateway.usage_flush_interval,
        })
    }

    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and closes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = [
            tokio::spawn(self.feed.clone().run(stop_rx.clone())),
            tokio::spawn(self.audit_writer),
            tokio::spawn(self.gateway.health_checks()),
            tokio::spawn(refresh_oauth_tokens(self.services.clone(), stop_rx.clone())),
            tokio::spawn(maintain_store(
                self.store.clone(),
                self.services.connect.clone(),
                self.services.console.clone(),
                self.services.audit.clone(),
                Retention {
                    audit: self.audit_retention,
                    webhook_events: self.webhook_retention,
                },
                stop_rx.clone(),
            )),
            tokio::spawn(check_upstream_users(
                self.upstream_client.clone(),
                self.topology.clone(),
            )),
            tokio::spawn(reload_tls_on_hangup(
                [self.api_tls.clone(), self.gateway_tls.clone()]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
        ];
        // Not aborted with the others: it ends by itself on stop, after its last batch.
        let sinks = Arc::new(crate::domain::usage::UsageSinks {
            data_connections: (self.gateway.usage(), self.store.clone()),
            integrations: (self.services.integrations.uses(), self.store.clone()),
        });
        // Not aborted either: a send it is making is recorded before it stops (else the
        // lease would have to run out, and the event would go out twice).
        let webhooks = tokio::spawn(self.dispatcher.clone().run(stop_rx.clone()));
        let usage = tokio::spawn(crate::domain::usage::flush_periodically(
            sinks.clone(),
            self.usage_flush_interval,
            stop_rx.clone(),
        ));
        let scheme =
            |tls: &Option<Arc<ReloadableTls>>| if tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.api_addr, scheme = %scheme(&self.api_tls), "api listening");
        tracing::info!(addr = %self.gateway_addr, scheme = %scheme(&self.gateway_tls), "gateway listening");
        let listening = Listening {
            pid: std::process::id(),
            api: format!("{}://{}", scheme(&self.api_tls), self.api_addr),
            gateway: format!("{}://{}", scheme(&self.gateway_tls), self.gateway_addr),
        };
        listening.write(&self.data_dir)?;
        let handler = self.api;
        let api = crate::net::serve_on_workers(
            self.api_listener,
            "api",
            self.api_workers,
            Arc::new(move || handler.clone()),
            crate::net::Placement::ByFirstRequest(crate::api::served_on_worker),
            self.api_tls,
            stop_rx.clone(),
        );
        let gateway = self.gateway.clone();
        let gateway = crate::net::serve_on_workers(
            self.gateway_listener,
            "gateway",
            self.gateway_workers,
            Arc::new(move || gateway.clone().worker()),
            crate::net::Placement::Workers,
            self.gateway_tls,
            stop_rx,
        );
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let (api, gateway) = tokio::join!(api, gateway);
        api.context("the API server failed")?;
        gateway.context("the gateway failed")?;
        // What the gateway counted since the last batch, the in-flight batch first.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), usage).await;
        sinks.flush().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), webhooks).await;
        for task in tasks {
            task.abort();
        }
        Listening::remove(&self.data_dir);
        tracing::info!("stopped");
        Ok(())
    }
}

async fn bind(addr: SocketAddr, key: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "; another process holds it (an earlier `switchboard serve`?): stop it, or choose another address with {flag} (or SWITCHBOARD_{})",
                key.replace('.', "_").to_uppercase()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot listen on {key} = {addr}: {e}{hint}")
    })
}

/// Whether `host` names this machine (so an address on it that differs from ours is
/// surely wrong rather than a proxy in front).
fn names_this_machine(host: &str, bound: SocketAddr) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip == bound.ip())
}

/// Configured addresses that cannot be right: links or connections pointing at this
/// machine on another port than the one bound.
fn warn_about_addresses(settings: &Settings, api: SocketAddr, gateway: SocketAddr) {
    if let Some(url) = &settings.public_url
        && let Some(host) = url.host_str()
        && names_this_machine(host, api)
        && url.port_or_known_default() != Some(api.port())
    {
        tracing::warn!(%url, listen = %api, "public_url points at this machine but not at the API's port: the links the API returns will not reach it (unset public_url to follow api.listen)");
    }
    for region in settings.topology.regions() {
        if !region.follows_gateway
            && names_this_machine(&region.host, gateway)
            && region.port != gateway.port()
        {
            tracing::warn!(region = %region.id, host = %region.host, port = region.port, listen = %gateway, "this region hands out an address on this machine that is not the gateway's: its connections' sample_query will not reach it (unset the region's host and port to follow gateway.listen)");
        }
    }
}

/// Says which ClickHouse every region forwards to, as whom, and what that means.
fn describe_upstreams(topology: &crate::domain::topology::Topology) {
    for region in topology.regions() {
        let upstreams: Vec<&str> = region.upstreams.iter().map(|u| u.as_str()).collect();
        tracing::info!(region = %region.id, address = %format!("{}:{}", region.host, region.port), upstreams = %upstreams.join(", "), "region");
    }
    match topology.organisation_user() {
        Some(user) => tracing::warn!(
            user = %user.user,
            password = if user.password.is_some() { "from upstream.password_file" } else { "none" },
            "no [[teams]] are configured: the gateway logs in to ClickHouse as this one organisation-wide user for every data connection, which can read whatever it can; configure [[teams]] with their own upstream users to scope connections"
        ),
        None => {
            for team in topology.teams() {
                match &team.upstream_user {
                    Some(user) => {
                        tracing::info!(team = team.id, %user, databases = %team.databases.join(", "), "team upstream user")
                    }
                    None => tracing::error!(
                        team = team.id,
                        "team has no upstream_user: its connections are refused until [[teams]] upstream_user (and upstream_password_file) is set"
                    ),
                }
            }
        }
    }
}

/// The doctor's checks, once at start-up: findings become warnings, and serving goes on.
async fn check_upstream_users(
    client: crate::gateway::UpstreamClient,
    topology: Arc<crate::domain::topology::Topology>,
) {
    let report = crate::gateway::doctor::examine_with(&client, &topology).await;
    for finding in report.list() {
        tracing::warn!(problem = %finding.problem, fix = %finding.fix, "upstream check (see `switchboard doctor`)");
    }
}

/// Where a running server listens, written to `<data_dir>/listening.json` once both
/// listeners are bound (with port 0, the only place a script learns the ports) and removed
/// on a graceful stop.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Listening {
    pub pid: u32,
    /// `http://` or `https://` and the bound address of each listener.
    pub api: String,
    pub gateway: String,
}

impl Listening {
    pub const FILE: &str = "listening.json";

    fn write(&self, data_dir: &std::path::Path) -> anyhow::Result<()> {
        let path = data_dir.join(Self::FILE);
        // Written aside and renamed, so a reader never sees half a file.
        let partial = data_dir.join(format!("{}.partial", Self::FILE));
        std::fs::write(&partial, serde_json::to_vec(self)?)
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn remove(data_dir: &std::path::Path) {
        let _ = std::fs::remove_file(data_dir.join(Self::FILE));
    }
}

/// Keeps the API token cache in step with revocations made by any process.
struct TokenCacheFollower(Arc<ApiTokens>);

#[async_trait::async_trait]
impl crate::feed::Follower for TokenCacheFollower {
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        if change.entity == Entity::ApiToken
            && let Ok(id) = change.id.parse()
        {
            self.0.forget(id);
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), StoreError> {
        self.0.forget_all();
        Ok(())
    }
}
