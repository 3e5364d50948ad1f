//! The command line: `serve`, `token`, `secret`, `keys`, `migrate`, `export` and `import`.
//! Every command reads the same layered configuration (`--config`, `SWITCHBOARD_*`, flags).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::app::{self, Application, Core};
use crate::config::{DatabaseOverride, FlagOverrides, ListenOverride, Settings};
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server.
    Serve,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage vault secrets (x-pica-secret).
    #[command(subcommand)]
    Secret(SecretCommand),
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
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every stored secret under a new master key (see the README's rotation
    /// steps: servers should hold the new key as an additional key first).
    Rotate {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Create a vault secret and print it on stdout (shown only this once).
    Create {
        /// test or live: the environment whose connections the secret sees.
        #[arg(long, value_name = "ENV")]
        env: String,
    },
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
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(app::shutdown_signal()).await
        }
        Command::Secret(SecretCommand::Create { env }) => {
            let environment = Environment::parse(&env)
                .with_context(|| format!("--env {env}: use test or live"))?;
            let core = Core::open(&settings).await?;
            let secret = core
                .vault_secrets(Arc::new(crate::feed::NoSnapshots))
                .create(environment)
                .await?;
            println!("{}", secret.expose_secret());
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate { new_key_file }) => {
            let next = crate::crypto::MasterKey::load(&new_key_file)?;
            let core = Core::open(&settings).await?;
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
            let core = Core::open(&settings).await?;
            let token = core.api_tokens().create(scope, email.as_deref()).await?;
            println!("{}", token.expose_secret());
            Ok(())
        }
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
