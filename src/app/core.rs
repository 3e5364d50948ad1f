//! What every command needs: the store opened and migrated, and the keys, checked against
//! each other (the master key's fingerprint, the sealed credential-hash key); the first
//! token and secrets on a fresh install; master key rotation.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{DatabaseUrl, Settings};
use crate::crypto::{self, CredentialHasher, MasterKey, Sealer};
use crate::domain::integration::{Environment, VaultSecrets};
use crate::domain::ports::WebhookStore;
use crate::domain::ports::{ChangeSync, IntegrationStore, MetaStore};
use crate::domain::token::{ApiTokens, MIN_PROVIDED_TOKEN_LEN};
use crate::domain::webhook::SigningSecret;
use crate::feed::NoSnapshots;
use crate::store::{SqlStore, postgres, sqlite};

const META_KEY_FINGERPRINT: &str = "master_key_fingerprint";
const META_CREDENTIAL_HASH_KEY: &str = "credential_hash_key";
const HASH_KEY_AAD: &[u8] = b"switchboard/credential-hash-key";

/// What every command needs: the store and the keys, checked against each other.
pub struct Core {
    pub store: Arc<SqlStore>,
    pub sealer: Arc<Sealer>,
    pub password_hasher: CredentialHasher,
    pub token_hasher: CredentialHasher,
    pub vault_secret_hasher: CredentialHasher,
    /// Connect sessions' link tokens and OAuth2 states.
    pub connect_hasher: CredentialHasher,
    /// Console sessions' cookie tokens, and the CSRF tokens derived from them.
    pub console_session_hasher: CredentialHasher,
    pub console_csrf_hasher: CredentialHasher,
}

/// Refuses to go on unless the configured database is an existing install, so a command
/// run from the wrong directory says so instead of creating a second, empty install.
pub fn require_install(settings: &Settings) -> anyhow::Result<()> {
    if let DatabaseUrl::Sqlite(url) = &settings.database {
        let path = sqlite_path(url)?;
        if !path.exists() {
            bail!(
                "no Switchboard install here: {} does not exist. Run this command where the \
                 server keeps its data (the same working directory, or the same --data-dir \
                 or --config as `switchboard serve`), or start the server first",
                path.display()
            );
        }
    }
    Ok(())
}

fn shared_store_needs_a_key() -> anyhow::Error {
    anyhow::anyhow!(
        "a PostgreSQL store is shared by replicas, which must share one master key: \
         set master_key_file (or SWITCHBOARD_MASTER_KEY_FILE) to a file made with `openssl rand -base64 32`"
    )
}

fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .with_context(|| format!("database.url = \"{url}\" is not a SQLite URL"))?;
    Ok(options.get_filename().to_path_buf())
}

impl Core {
    /// The store and keys of an install that already exists (every command but `serve`,
    /// `migrate` and `import`).
    pub async fn open_existing(settings: &Settings) -> anyhow::Result<Self> {
        require_install(settings)?;
        if matches!(settings.database, DatabaseUrl::Postgres(_))
            && settings.master_key_file.is_none()
        {
            return Err(shared_store_needs_a_key());
        }
        let store = open_store(settings).await?;
        if store.get_meta(META_KEY_FINGERPRINT).await?.is_none() {
            bail!(
                "the configured database holds no Switchboard install yet: start `switchboard serve` on it first"
            );
        }
        drop(store);
        Self::open(settings).await
    }

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
            connect_hasher: CredentialHasher::new(&hash_key, "switchboard/connect-session/v1"),
            console_session_hasher: CredentialHasher::new(
                &hash_key,
                "switchboard/console-session/v1",
            ),
            console_csrf_hasher: CredentialHasher::new(&hash_key, "switchboard/console-csrf/v1"),
            sealer: Arc::new(sealer),
            store,
        })
    }

    pub fn api_tokens(&self) -> ApiTokens {
        ApiTokens::new(self.store.clone(), self.token_hasher.clone())
    }

    /// Vault secrets; `snapshots` is the server's change feed, or [`NoSnapshots`] for a
    /// command that keeps none.
    pub fn vault_secrets(&self, snapshots: Arc<dyn ChangeSync>) -> VaultSecrets {
        VaultSecrets::new(
            self.store.clone(),
            self.vault_secret_hasher.clone(),
            snapshots,
        )
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
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<SqlStore>> {
    let wait = settings.database_acquire_timeout;
    let store = match &settings.database {
        DatabaseUrl::Sqlite(url) => sqlite::open(url, wait)
            .await
            .with_context(|| format!("cannot open the SQLite database {url}"))?,
        DatabaseUrl::Postgres(url) => postgres::open(url, settings.auto_migrate, wait)
            .await
            .context("cannot open the PostgreSQL database (check database.url)")?,
    };
    Ok(Arc::new(store))
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
            for stored in self.store.sealed_integrations().await? {
                if Sealer::key_id_of(&stored.sealed) == Some(next_sealer.key_id()) {
                    continue;
                }
                let c = &stored.connection;
                let aad = crate::domain::integration::credentials_aad(&c.id, c.environment);
                let plain = self.sealer.open(&stored.sealed, &aad).with_context(|| {
                    format!(
                        "cannot open the credentials of integration connection {}",
                        c.id
                    )
                })?;
                // A credential refreshed meanwhile is left for the next pass.
                if self
                    .store
                    .reseal_integration(
                        &c.id,
                        c.credential_generation,
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
        // Webhook endpoints' signing secrets (an endpoint deleted meanwhile is skipped).
        for endpoint in self.store.webhook_endpoints().await? {
            let Some(sealed) = &endpoint.sealed_secret else {
                continue;
            };
            if Sealer::key_id_of(sealed) == Some(next_sealer.key_id()) {
                continue;
            }
            let secret = SigningSecret::open(&self.sealer, &endpoint.id, sealed)?;
            if self
                .store
                .reseal_webhook_endpoint(
                    &endpoint.id,
                    sealed,
                    &secret.seal(&next_sealer, &endpoint.id),
                )
                .await?
            {
                resealed += 1;
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
                .vault_secrets(Arc::new(NoSnapshots))
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
    store: &dyn MetaStore,
    additional: &[MasterKey],
) -> anyhow::Result<MasterKey> {
    let stored = store.get_meta(META_KEY_FINGERPRINT).await?;
    let stored = stored.map(|v| String::from_utf8_lossy(&v).into_owned());
    let key = match &settings.master_key_file {
        Some(path) => MasterKey::load(path)?,
        None if matches!(settings.database, DatabaseUrl::Postgres(_)) => {
            return Err(shared_store_needs_a_key());
        }
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
