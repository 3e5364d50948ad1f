//! Building the application: store, keys, services, listeners.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use url::Url;

use crate::api::{self, AppServices};
use crate::config::{DatabaseUrl, Settings, TlsFiles};
use crate::crypto::{self, CredentialHasher, MasterKey, Sealer};
use crate::domain::data_connection::DataConnections;
use crate::domain::integration::{Environment, Integrations, VaultSecrets};
use crate::domain::token::{ApiTokens, MIN_PROVIDED_TOKEN_LEN};
use crate::gateway::Gateway;
use crate::gateway::directory::CredentialDirectory;
use crate::server::{self, ReloadableTls};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreEvent};

const META_KEY_FINGERPRINT: &str = "master_key_fingerprint";
const META_CREDENTIAL_HASH_KEY: &str = "credential_hash_key";
const HASH_KEY_AAD: &[u8] = b"switchboard/credential-hash-key";

/// What every command needs: the store and the keys, checked against each other.
pub struct Core {
    pub store: Arc<dyn Store>,
    pub sealer: Arc<Sealer>,
    pub password_hasher: CredentialHasher,
    pub token_hasher: CredentialHasher,
    pub vault_secret_hasher: CredentialHasher,
}

impl Core {
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        create_private_dir(&settings.data_dir)?;
        let store = open_store(settings).await?;
        let additional = settings
            .additional_master_key_files
            .iter()
            .map(|p| MasterKey::load(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let master_key = resolve_master_key(settings, store.as_ref(), &additional).await?;
        let sealer = master_key.sealer().with_others(&additional);

        // The credential-hash key is random and stored sealed, so a master key rotation
        // re-seals it instead of invalidating every issued credential.
        let fresh = crypto::random_key();
        let sealed = store
            .init_meta(
                META_CREDENTIAL_HASH_KEY,
                &sealer.seal(fresh.as_ref(), HASH_KEY_AAD),
            )
            .await?;
        let hash_key = sealer
            .open(&sealed, HASH_KEY_AAD)
            .context("cannot open the stored credential-hash key with this master key")?;
        Ok(Self {
            password_hasher: CredentialHasher::new(
                &hash_key,
                "switchboard/data-connection-password/v1",
            ),
            token_hasher: CredentialHasher::new(&hash_key, "switchboard/api-token/v1"),
            vault_secret_hasher: CredentialHasher::new(&hash_key, "switchboard/vault-secret/v1"),
            sealer: Arc::new(sealer),
            store,
        })
    }

    pub fn api_tokens(&self) -> ApiTokens {
        ApiTokens::new(self.store.clone(), self.token_hasher.clone())
    }

    pub fn vault_secrets(&self) -> VaultSecrets {
        VaultSecrets::new(self.store.clone(), self.vault_secret_hasher.clone())
    }

    /// On a database without tokens, installs `SWITCHBOARD_BOOTSTRAP_TOKEN` or a generated
    /// token as the first global token. A generated one is printed once, on stdout.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let provided = std::env::var("SWITCHBOARD_BOOTSTRAP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(SecretString::from);
        if let Some(t) = &provided
            && t.expose_secret().len() < MIN_PROVIDED_TOKEN_LEN
        {
            bail!(
                "SWITCHBOARD_BOOTSTRAP_TOKEN must be at least {MIN_PROVIDED_TOKEN_LEN} characters"
            );
        }
        self.bootstrap_vault_secrets().await?;
        let token = provided.clone().unwrap_or_else(ApiTokens::generate);
        if self.api_tokens().install_first(&token).await? {
            if provided.is_some() {
                tracing::info!(
                    "installed SWITCHBOARD_BOOTSTRAP_TOKEN as the first global API token"
                );
            } else {
                println!(
                    "\nSwitchboard created the first global API token. It is shown only this once; store it now:\n\n    {}\n",
                    token.expose_secret()
                );
                tracing::info!("generated the first global API token (printed on stdout, once)");
            }
        }
        Ok(())
    }
}

/// Opens the configured store, applying migrations as configured.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match &settings.database {
        DatabaseUrl::Sqlite(url) => Arc::new(
            SqliteStore::open(url)
                .await
                .with_context(|| format!("cannot open the SQLite database {url}"))?,
        ),
        DatabaseUrl::Postgres(url) => Arc::new(
            PostgresStore::open(url, settings.auto_migrate)
                .await
                .context("cannot open the PostgreSQL database (check database.url)")?,
        ),
    };
    Ok(store)
}

impl Core {
    /// Re-seals every stored secret under `next`, then records `next` as the database's
    /// key. Servers that also hold `next` (as an additional key) read throughout; passes
    /// repeat until nothing sealed under another key is left. Returns how many it re-sealed.
    pub async fn rotate_to(&self, next: &MasterKey) -> anyhow::Result<usize> {
        let next_sealer = next.sealer();
        let mut resealed = 0;
        loop {
            let (mut pass, mut changed_meanwhile) = (0, 0);
            for stored in self.store.list_sealed_integrations().await? {
                if Sealer::key_id_of(&stored.sealed) == Some(next_sealer.key_id()) {
                    continue;
                }
                let aad =
                    crate::domain::integration::credentials_aad(&stored.id, stored.environment);
                let plain = self.sealer.open(&stored.sealed, &aad).with_context(|| {
                    format!(
                        "cannot open the credentials of integration connection {}",
                        stored.id
                    )
                })?;
                // A credential refreshed meanwhile is left for the next pass.
                if self
                    .store
                    .reseal_integration(
                        &stored.id,
                        stored.generation,
                        &next_sealer.seal(&plain, &aad),
                    )
                    .await?
                {
                    pass += 1;
                } else {
                    changed_meanwhile += 1;
                }
            }
            resealed += pass;
            if pass == 0 && changed_meanwhile == 0 {
                break;
            }
        }
        let sealed = self
            .store
            .get_meta(META_CREDENTIAL_HASH_KEY)
            .await?
            .context("the credential-hash key is missing")?;
        let hash_key = self.sealer.open(&sealed, HASH_KEY_AAD)?;
        self.store
            .set_meta(
                META_CREDENTIAL_HASH_KEY,
                &next_sealer.seal(&hash_key, HASH_KEY_AAD),
            )
            .await?;
        self.store
            .set_meta(META_KEY_FINGERPRINT, next.fingerprint().as_bytes())
            .await?;
        Ok(resealed + 1)
    }

    /// `SWITCHBOARD_BOOTSTRAP_TEST_SECRET` / `..._LIVE_SECRET` become the first vault
    /// secret of their environment on a database that has none.
    async fn bootstrap_vault_secrets(&self) -> anyhow::Result<()> {
        for (var, environment) in [
            ("SWITCHBOARD_BOOTSTRAP_TEST_SECRET", Environment::Test),
            ("SWITCHBOARD_BOOTSTRAP_LIVE_SECRET", Environment::Live),
        ] {
            let Some(secret) = std::env::var(var).ok().filter(|s| !s.is_empty()) else {
                continue;
            };
            let prefix = format!("sk_{}_", environment.as_str());
            if !secret.starts_with(&prefix) || secret.len() < prefix.len() + 16 {
                bail!("{var} must start with {prefix} followed by at least 16 characters");
            }
            if self
                .vault_secrets()
                .install_first(environment, &SecretString::from(secret))
                .await?
            {
                tracing::info!(
                    "installed {var} as the first {} vault secret",
                    environment.as_str()
                );
            }
        }
        Ok(())
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

async fn resolve_master_key(
    settings: &Settings,
    store: &dyn Store,
    additional: &[MasterKey],
) -> anyhow::Result<MasterKey> {
    let stored = store.get_meta(META_KEY_FINGERPRINT).await?;
    let stored = stored.map(|v| String::from_utf8_lossy(&v).into_owned());
    let key = match &settings.master_key_file {
        Some(path) => MasterKey::load(path)?,
        None if matches!(settings.database, DatabaseUrl::Postgres(_)) => bail!(
            "a PostgreSQL store is shared by replicas, which must share one master key: \
             set master_key_file (or SWITCHBOARD_MASTER_KEY_FILE) to a file made with `openssl rand -base64 32`"
        ),
        None => {
            let path: PathBuf = settings.data_dir.join("master.key");
            if path.exists() {
                MasterKey::load(&path)?
            } else if let Some(fingerprint) = &stored {
                bail!(
                    "this database was initialised with master key {fingerprint}, but no key is configured \
                     and {} does not exist; set master_key_file (or SWITCHBOARD_MASTER_KEY_FILE) to that key's file",
                    path.display()
                );
            } else {
                let key = MasterKey::generate_into(&path)?;
                tracing::warn!(
                    path = %path.display(),
                    fingerprint = %key.fingerprint(),
                    "generated a new master key; back it up, stored secrets cannot be read without it"
                );
                key
            }
        }
    };
    let fingerprint = key.fingerprint();
    let recorded = store
        .init_meta(META_KEY_FINGERPRINT, fingerprint.as_bytes())
        .await?;
    // During a rotation the recorded key may be one of the additional keys.
    let known =
        std::iter::once(fingerprint.clone()).chain(additional.iter().map(MasterKey::fingerprint));
    if !known
        .into_iter()
        .any(|f| f.as_bytes() == recorded.as_slice())
    {
        bail!(
            "the master key (fingerprint {fingerprint}) is not the key this database was initialised with \
             (fingerprint {}); start with the original key file",
            String::from_utf8_lossy(&recorded)
        );
    }
    Ok(key)
}

/// How often the gateway's credential snapshot is rebuilt from the store, as a safety net
/// behind the changes applied as they happen.
const CREDENTIAL_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How often the store refreshes its planner statistics (SQLite; cheap when little changed).
const STORE_OPTIMIZE_INTERVAL: Duration = Duration::from_secs(60);

/// The running server: bound listeners and the routers behind them.
pub struct Application {
    api_listener: TcpListener,
    api_addr: SocketAddr,
    router: axum::Router,
    gateway_listener: TcpListener,
    gateway_addr: SocketAddr,
    gateway_router: axum::Router,
    services: Arc<AppServices>,
    directory: Arc<CredentialDirectory>,
    gateway: Arc<Gateway>,
    api_tls: Option<Arc<ReloadableTls>>,
    gateway_tls: Option<Arc<ReloadableTls>>,
}

impl Application {
    /// Opens everything and binds the listeners (port 0 picks a free port).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        crate::telemetry::metrics_handle();
        let core = Core::open(&settings).await?;
        core.bootstrap().await?;
        let api_listener = TcpListener::bind(settings.api.listen)
            .await
            .with_context(|| format!("cannot listen on api.listen = {}", settings.api.listen))?;
        let api_addr = api_listener.local_addr()?;
        let gateway_listener = TcpListener::bind(settings.gateway.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on gateway.listen = {}",
                    settings.gateway.listen
                )
            })?;
        let gateway_addr = gateway_listener.local_addr()?;
        if settings.implicit_region {
            settings
                .topology
                .set_default_region_address(gateway_addr.ip().to_string(), gateway_addr.port());
        }
        let public_url = match &settings.public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{api_addr}")).expect("socket address forms a URL"),
        };
        let topology = Arc::new(settings.topology.clone());
        let directory = Arc::new(CredentialDirectory::default());
        let passthrough = Arc::new(crate::passthrough::Passthrough::new(
            settings.passthrough_timeouts.0,
            settings.passthrough_timeouts.1,
        ));
        let services = Arc::new(AppServices {
            store: core.store.clone(),
            tokens: core.api_tokens(),
            data_connections: DataConnections::new(
                core.store.clone(),
                topology.clone(),
                core.password_hasher.clone(),
                directory.clone(),
            ),
            vault_secrets: core.vault_secrets(),
            integrations: Integrations::new(
                core.store.clone(),
                Arc::new(settings.catalog.clone()),
                core.sealer.clone(),
                passthrough.clone(),
                settings.oauth.clone(),
            ),
            passthrough,
            public_url: AppServices::public_base(&public_url),
        });
        refresh_credentials(&services, &directory).await?;
        let router = api::router(services.clone(), &settings.api);
        let gateway = Arc::new(Gateway::new(
            &settings.gateway,
            directory.clone(),
            topology,
            core.password_hasher.clone(),
        )?);
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
            api_listener,
            api_addr,
            router,
            gateway_listener,
            gateway_addr,
            gateway_router: gateway.clone().router(),
            services,
            directory,
            gateway,
            api_tls,
            gateway_tls,
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
        let refresher = tokio::spawn(refresh_periodically(
            self.services.clone(),
            self.directory.clone(),
            stop_rx.clone(),
        ));
        let health_checks = tokio::spawn(self.gateway.health_checks());
        let oauth_refresher =
            tokio::spawn(refresh_oauth_tokens(self.services.clone(), stop_rx.clone()));
        let optimizer = tokio::spawn(optimize_periodically(
            self.services.store.clone(),
            stop_rx.clone(),
        ));
        let follower = match self.services.store.credential_events().await {
            Ok(Some(events)) => Some(tokio::spawn(follow_store_events(
                self.services.clone(),
                self.directory.clone(),
                events,
            ))),
            Ok(None) => None,
            Err(e) => {
                return Err(
                    anyhow::anyhow!(e).context("cannot subscribe to the store's change feed")
                );
            }
        };
        let reloader = tokio::spawn(reload_tls_on_hangup(
            [self.api_tls.clone(), self.gateway_tls.clone()]
                .into_iter()
                .flatten()
                .collect(),
        ));
        let scheme =
            |tls: &Option<Arc<ReloadableTls>>| if tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.api_addr, scheme = %scheme(&self.api_tls), "api listening");
        tracing::info!(addr = %self.gateway_addr, scheme = %scheme(&self.gateway_tls), "gateway listening");
        let api = server::serve(
            self.api_listener,
            self.router,
            self.api_tls,
            stop_rx.clone(),
        );
        let gateway = server::serve(
            self.gateway_listener,
            self.gateway_router,
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
        reloader.abort();
        if let Some(follower) = follower {
            follower.abort();
        }
        refresher.abort();
        health_checks.abort();
        optimizer.abort();
        oauth_refresher.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Applies other replicas' changes to this replica's credential snapshot as they arrive.
async fn follow_store_events(
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
async fn reload_tls_on_hangup(tls: Vec<Arc<ReloadableTls>>) {
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
async fn refresh_credentials(
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

async fn refresh_periodically(
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
async fn refresh_oauth_tokens(
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
async fn optimize_periodically(
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
