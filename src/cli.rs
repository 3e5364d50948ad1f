//! The command line: `serve`, `token`, `secret`, `keys`, `migrate`, `export` and `import`.
//! Every command reads the same layered configuration (`--config`, `SWITCHBOARD_*`, flags).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::app::{self, Application, Core};
use crate::config::{DatabaseOverride, FlagOverrides, ListenOverride, Settings, UpstreamOverride};
use crate::domain::integration::Environment;
use crate::domain::token::TokenScope;
use crate::store::{DUMP_FORMAT, DUMP_VERSION, Dump};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Self-hosted connections service"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// TOML configuration file (see examples/switchboard.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `database.url`.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Overrides `api.listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    api_listen: Option<String>,
    /// Overrides `gateway.listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    gateway_listen: Option<String>,
    /// Overrides `public_url`.
    #[arg(long, global = true, value_name = "URL")]
    public_url: Option<String>,
    /// Overrides `upstream.url`: the ClickHouse HTTP endpoint of the default region (only
    /// without [[regions]]; default http://127.0.0.1:8123).
    #[arg(long, global = true, value_name = "URL")]
    upstream_url: Option<String>,
    /// Overrides `upstream.user`: the ClickHouse user the gateway logs in as while no
    /// [[teams]] are configured (default `default`).
    #[arg(long, global = true, value_name = "USER")]
    upstream_user: Option<String>,
    /// Overrides `upstream.password_file`: a file holding that user's password (default:
    /// no password).
    #[arg(long, global = true, value_name = "FILE")]
    upstream_password_file: Option<PathBuf>,
}

/// Every variable `serve` (and every other command) reads, for `--help`.
const ENVIRONMENT_HELP: &str = "\
Environment (each overrides the configuration file; flags override the environment):
  SWITCHBOARD_DATA_DIR                data_dir (default ./switchboard-data)
  SWITCHBOARD_PUBLIC_URL              public_url
  SWITCHBOARD_API_LISTEN              api.listen (default 127.0.0.1:8080)
  SWITCHBOARD_GATEWAY_LISTEN          gateway.listen (default 127.0.0.1:8124)
  SWITCHBOARD_DATABASE_URL            database.url (sqlite://... or postgres://...)
  SWITCHBOARD_DATABASE_AUTO_MIGRATE   database.auto_migrate
  SWITCHBOARD_MASTER_KEY_FILE         master_key_file
  SWITCHBOARD_UPSTREAM_URL            upstream.url (default http://127.0.0.1:8123)
  SWITCHBOARD_UPSTREAM_USER           upstream.user (default `default`)
  SWITCHBOARD_UPSTREAM_PASSWORD_FILE  upstream.password_file
  SWITCHBOARD_LOG_FORMAT              log.format (text or json)
  SWITCHBOARD_LOG_LEVEL               log.level (RUST_LOG wins)
On a fresh database only:
  SWITCHBOARD_BOOTSTRAP_TOKEN         the first global API token (16+ characters)
  SWITCHBOARD_BOOTSTRAP_TEST_SECRET   the first sk_test_... vault secret
  SWITCHBOARD_BOOTSTRAP_LIVE_SECRET   the first sk_live_... vault secret";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the API, the passthrough and the ClickHouse gateway. On a fresh
    /// install it creates the data directory, a master key and the database, and prints
    /// the first global API token once.
    #[command(after_help = ENVIRONMENT_HELP)]
    Serve,
    /// Check the gateway's ClickHouse users: that each logs in, sees only its team's
    /// databases, cannot use table functions (url, remote, file...) and that no
    /// passwordless `default` user answers. Exits non-zero on any finding, with the fix.
    Doctor,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage vault secrets (x-pica-secret).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage data connections.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Print audit events as JSON, one per line, newest first.
    Audit {
        /// api_token[:ID], vault_secret[:ID], cli, anonymous, or a user's e-mail.
        #[arg(long)]
        actor: Option<String>,
        /// e.g. data_connection.create, api_token.revoke, access.refused.
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// success, refused, rejected or failed.
        #[arg(long)]
        outcome: Option<String>,
        /// ISO 8601, inclusive.
        #[arg(long)]
        since: Option<String>,
        /// ISO 8601, exclusive.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Master key operations.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Write every row of the configured database as JSON (hashes and sealed secrets stay
    /// as stored), to move an install to another database.
    Export {
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load a file from `export` into the configured (empty) database. Start the server on
    /// it with the same master key.
    Import {
        /// The file `switchboard export` wrote.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConnectionCommand {
    /// Give a connection a new password and print it on stdout (shown only this once).
    /// Running servers switch to it within a moment.
    Rotate {
        id: i64,
        /// How long the old password keeps working (0 to 604800).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        overlap_seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every stored secret under a new master key (see the README's rotation
    /// steps: servers should hold the new key as an additional key first).
    Rotate {
        /// The new master key (32 bytes as base64 or hex, e.g. from `openssl rand -base64
        /// 32`); servers should already hold it in additional_master_key_files.
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Create a vault secret and print it on stdout (shown only this once).
    Create {
        /// The environment whose connections the secret sees (its prefix: sk_test_,
        /// sk_live_).
        #[arg(long, value_enum)]
        env: SecretEnvironment,
    },
    /// List vault secrets (id, environment, created), never their values.
    List,
    /// Revoke a vault secret by id; running servers refuse it within a moment.
    Revoke { id: i64 },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SecretEnvironment {
    Test,
    Live,
}

impl From<SecretEnvironment> for Environment {
    fn from(e: SecretEnvironment) -> Self {
        match e {
            SecretEnvironment::Test => Environment::Test,
            SecretEnvironment::Live => Environment::Live,
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token and print it on stdout (shown only this once).
    Create {
        /// Make a team-scoped token for this team id instead of a global token.
        #[arg(long, value_name = "ID")]
        team: Option<i64>,
        /// The user the token acts for; shown as `created_by` on what it creates.
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
    },
    /// List API tokens (id, scope, user, created), never their values.
    List,
    /// Revoke a token by id; running servers refuse it within a moment (their token caches
    /// follow the change). The last global token cannot be revoked.
    Revoke { id: i64 },
}

impl GlobalArgs {
    fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            data_dir: self.data_dir.clone(),
            public_url: self.public_url.clone(),
            api: self
                .api_listen
                .clone()
                .map(|listen| ListenOverride { listen }),
            gateway: self
                .gateway_listen
                .clone()
                .map(|listen| ListenOverride { listen }),
            database: self
                .database_url
                .clone()
                .map(|url| DatabaseOverride { url }),
            upstream: UpstreamOverride {
                url: self.upstream_url.clone(),
                user: self.upstream_user.clone(),
                password_file: self.upstream_password_file.clone(),
            },
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.global.config.as_deref(), cli.global.overrides()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format, &settings.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        // Said once, on stderr (the log goes there too; saying it twice is noise).
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Doctor => {
            let report = crate::gateway::doctor::examine(&settings).await?;
            print!("{}", report.text());
            if report.findings() > 0 {
                anyhow::bail!(
                    "{} finding(s): a team's data may be reachable by another team's connections",
                    report.findings()
                );
            }
            Ok(())
        }
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(app::shutdown_signal()).await
        }
        Command::Secret(SecretCommand::Create { env }) => {
            let environment = Environment::from(env);
            let core = Core::open_existing(&settings).await?;
            let secret = core
                .vault_secrets(Arc::new(crate::feed::NoSnapshots))
                .create(environment)
                .await?;
            audit_cli(&core, "vault_secret.create", environment.as_str()).await?;
            println!("{}", secret.expose_secret());
            Ok(())
        }
        Command::Secret(SecretCommand::List) => {
            let core = Core::open_existing(&settings).await?;
            let secrets = core
                .vault_secrets(Arc::new(crate::feed::NoSnapshots))
                .list()
                .await?;
            for s in secrets {
                println!(
                    "{}\t{}\t{}",
                    s.id,
                    s.environment.as_str(),
                    s.created_at.to_iso8601_millis()
                );
            }
            Ok(())
        }
        Command::Secret(SecretCommand::Revoke { id }) => {
            let core = Core::open_existing(&settings).await?;
            let outcome = core
                .vault_secrets(Arc::new(crate::feed::NoSnapshots))
                .revoke(id)
                .await?;
            if let crate::domain::ports::Revoked::Done(_) = outcome {
                audit_cli(&core, "vault_secret.revoke", &id.to_string()).await?;
            }
            report_revoked(outcome, "vault secret", id)
        }
        Command::Token(TokenCommand::List) => {
            let core = Core::open_existing(&settings).await?;
            for t in core.api_tokens().list().await? {
                let scope = match t.scope {
                    TokenScope::Global => "global".to_owned(),
                    TokenScope::Team(id) => format!("team:{id}"),
                };
                let user = t.user.map_or_else(|| "-".to_owned(), |u| u.email);
                println!(
                    "{}\t{scope}\t{user}\t{}",
                    t.id,
                    t.created_at.to_iso8601_millis()
                );
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            let core = Core::open_existing(&settings).await?;
            let outcome = core.api_tokens().revoke(id).await?;
            if let crate::domain::ports::Revoked::Done(_) = outcome {
                audit_cli(&core, "api_token.revoke", &id.to_string()).await?;
            }
            report_revoked(outcome, "API token", id)
        }
        Command::Connection(ConnectionCommand::Rotate {
            id,
            overlap_seconds,
        }) => {
            let core = Core::open_existing(&settings).await?;
            let connections = crate::domain::data_connection::DataConnections::new(
                core.store.clone(),
                Arc::new(settings.topology.clone()),
                core.password_hasher.clone(),
                Arc::new(crate::feed::NoSnapshots),
                Arc::new(crate::gateway::directory::CredentialDirectory::default()),
            );
            match connections
                .rotate_password(id, std::time::Duration::from_secs(overlap_seconds))
                .await
            {
                Ok(rotated) => {
                    audit_cli(&core, "data_connection.rotate_password", &id.to_string()).await?;
                    println!("{}", rotated.password.expose_secret());
                    Ok(())
                }
                Err(crate::domain::data_connection::DataConnectionError::NotFound) => {
                    anyhow::bail!("no data connection with id {id}")
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Keys(KeysCommand::Rotate { new_key_file }) => {
            let next = crate::crypto::MasterKey::load(&new_key_file)?;
            let core = Core::open_existing(&settings).await?;
            let count = core.rotate_to(&next).await?;
            println!(
                "re-encrypted {count} secrets under key {}; set master_key_file to {}",
                next.fingerprint(),
                new_key_file.display()
            );
            Ok(())
        }
        Command::Migrate => {
            let mut settings = settings;
            settings.auto_migrate = true;
            app::open_store(&settings).await?.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Export { output } => {
            app::require_install(&settings)?;
            let mut settings = settings;
            settings.auto_migrate = false;
            let dump = app::open_store(&settings).await?.export().await?;
            let json = serde_json::to_vec_pretty(&dump)?;
            match output {
                Some(path) => write_private(&path, &json)?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &json)?,
            }
            eprintln!(
                "exported {} data connections, {} API tokens, {} users",
                dump.data_connections.len(),
                dump.api_tokens.len(),
                dump.users.len()
            );
            Ok(())
        }
        Command::Import { input } => {
            let text = std::fs::read(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let dump: Dump = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a Switchboard export", input.display()))?;
            if dump.format != DUMP_FORMAT || dump.version != DUMP_VERSION {
                anyhow::bail!(
                    "{} is format {} version {}; this build reads {DUMP_FORMAT} version {DUMP_VERSION}",
                    input.display(),
                    dump.format,
                    dump.version
                );
            }
            let mut settings = settings;
            settings.auto_migrate = true;
            let store = app::open_store(&settings).await?;
            store.import(&dump).await?;
            println!(
                "imported {} data connections, {} API tokens, {} users",
                dump.data_connections.len(),
                dump.api_tokens.len(),
                dump.users.len()
            );
            Ok(())
        }
        Command::Token(TokenCommand::Create { team, email }) => {
            let scope = match team {
                None => TokenScope::Global,
                Some(id) => {
                    if settings.topology.team(id).is_none() {
                        anyhow::bail!(
                            "--team {id}: no team with this id is configured in [[teams]]"
                        );
                    }
                    TokenScope::Team(id)
                }
            };
            let core = Core::open_existing(&settings).await?;
            let (id, token) = core.api_tokens().create(scope, email.as_deref()).await?;
            audit_cli(&core, "api_token.create", &id.to_string()).await?;
            println!("{}", token.expose_secret());
            Ok(())
        }
        Command::Audit {
            actor,
            action,
            target,
            outcome,
            since,
            until,
            limit,
        } => {
            use crate::domain::audit::{AuditFilter, Outcome};
            use crate::domain::time::Timestamp;
            let mut filter = AuditFilter {
                action,
                target,
                ..AuditFilter::default()
            };
            if let Some(actor) = actor {
                filter.set_actor(&actor).map_err(anyhow::Error::msg)?;
            }
            if let Some(outcome) = outcome {
                filter.outcome = Some(Outcome::parse(&outcome).ok_or_else(|| {
                    anyhow::anyhow!("--outcome must be success, refused, rejected or failed")
                })?);
            }
            let moment = |flag: &str, text: Option<String>| {
                text.map(|t| {
                    Timestamp::parse_iso8601(&t)
                        .map(|t| t.as_millis() * 1000)
                        .ok_or_else(|| anyhow::anyhow!("{flag} '{t}' is not an ISO 8601 timestamp"))
                })
                .transpose()
            };
            filter.since = moment("--since", since)?;
            filter.until = moment("--until", until)?;
            let core = Core::open_existing(&settings).await?;
            let (log, _) = crate::domain::audit::AuditLog::new(core.store.clone());
            let (events, _) = log.list(&filter, 0, limit.clamp(1, 10_000)).await?;
            for event in events {
                let line = crate::api::betterstack::AuditEventResource::from(event);
                println!("{}", serde_json::to_string(&line)?);
            }
            Ok(())
        }
    }
}

/// Records a command's change in the audit log, as the command line's.
async fn audit_cli(core: &Core, action: &str, target: &str) -> anyhow::Result<()> {
    use crate::domain::audit::{Actor, AuditEvent, AuditLog, Outcome};
    let (log, _) = AuditLog::new(core.store.clone());
    let mut event = AuditEvent::now(Actor::cli(), action, Outcome::Success);
    event.target = Some(target.to_owned());
    log.record(event).await?;
    Ok(())
}

fn report_revoked(
    outcome: crate::domain::ports::Revoked,
    what: &str,
    id: i64,
) -> anyhow::Result<()> {
    use crate::domain::ports::Revoked;
    match outcome {
        Revoked::Done(_) => {
            println!("revoked {what} {id}");
            Ok(())
        }
        Revoked::NotFound => anyhow::bail!("no {what} with id {id}"),
        Revoked::LastGlobalToken => anyhow::bail!(
            "{what} {id} is the last global token: create another with `switchboard token create` first"
        ),
    }
}

/// An export holds credential hashes: readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    Ok(())
}
