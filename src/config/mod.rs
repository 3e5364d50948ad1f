//! Layered configuration: defaults, then a TOML file, then `SWITCHBOARD_*` environment
//! variables, then command-line flags. `raw` is the file's schema, `validate` turns the
//! layers into [`Settings`] and refuses bad input with a message that says how to fix it;
//! `topology` and `platforms` validate the operator's regions, teams and catalog.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::Serialize;
use url::Url;

use crate::domain::catalog::Catalog;
use crate::domain::oauth::OAuthSettings;
use crate::domain::topology::Topology;
pub use crate::net::TlsFiles;

mod platforms;
mod raw;
mod topology;
mod validate;

use raw::RawConfig;

/// Environment variables that override file keys. Other `SWITCHBOARD_*` variables (the
/// bootstrap secrets) are read where they are used and never enter the config tree.
const ENV_KEYS: &[(&str, &str)] = &[
    ("DATA_DIR", "data_dir"),
    ("PUBLIC_URL", "public_url"),
    ("API_LISTEN", "api.listen"),
    ("GATEWAY_LISTEN", "gateway.listen"),
    ("DATABASE_URL", "database.url"),
    ("DATABASE_AUTO_MIGRATE", "database.auto_migrate"),
    ("MASTER_KEY_FILE", "master_key_file"),
    ("LOG_FORMAT", "log.format"),
    ("LOG_LEVEL", "log.level"),
    ("UPSTREAM_URL", "upstream.url"),
    ("UPSTREAM_USER", "upstream.user"),
    ("UPSTREAM_PASSWORD_FILE", "upstream.password_file"),
];

/// Command-line overrides; only the flags that were given are layered on top.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ListenOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<ListenOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseOverride>,
    #[serde(skip_serializing_if = "UpstreamOverride::is_empty")]
    pub upstream: UpstreamOverride,
}

#[derive(Debug, Default, Serialize)]
pub struct UpstreamOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl UpstreamOverride {
    fn is_empty(&self) -> bool {
        self.url.is_none() && self.user.is_none() && self.password_file.is_none()
    }
}

#[derive(Debug, Serialize)]
pub struct ListenOverride {
    pub listen: String,
}

#[derive(Debug, Serialize)]
pub struct DatabaseOverride {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Threads serving passthrough connections (see `net::Placement::ByFirstRequest`).
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Extra CA certificates (PEM) trusted for `https://` upstreams, beside the system's.
    pub upstream_ca_file: Option<PathBuf>,
    pub trusted_proxies: Vec<IpNet>,
    pub upstream_connect_timeout: Duration,
    /// Longest wait for the upstream's response headers (a query's first bytes).
    pub upstream_response_timeout: Duration,
    pub health_check_interval: Duration,
    pub usage_flush_interval: Duration,
    /// 0: unlimited.
    pub max_concurrent_queries_per_connection: usize,
    /// 0: unlimited.
    pub max_requests_per_minute_per_connection: u32,
    /// Threads serving the gateway's connections (each with its own event loop).
    pub workers: usize,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Base of the links the API returns; `None` means "the API's own bound address".
    pub public_url: Option<Url>,
    pub master_key_file: Option<PathBuf>,
    /// Keys that may open secrets but never seal them: the next key before a rotation,
    /// the previous one after it.
    pub additional_master_key_files: Vec<PathBuf>,
    pub api: ApiSettings,
    pub gateway: GatewaySettings,
    pub database: DatabaseUrl,
    /// Apply pending migrations when the server starts (PostgreSQL; the embedded SQLite
    /// store always does).
    pub auto_migrate: bool,
    /// How long a request waits for a database connection before it is refused with 503.
    pub database_acquire_timeout: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub topology: Topology,
    pub catalog: Catalog,
    /// Outbound calls of the passthrough: connect, and wait for response headers.
    pub passthrough_timeouts: (Duration, Duration),
    pub oauth: OAuthSettings,
    pub connect: ConnectConfig,
    /// `[console] session_ttl_seconds`: how long a console sign-in lasts.
    pub console_session_ttl: Duration,
    /// `[audit] retention_days`: audit events older than this are forgotten.
    pub audit_retention: Duration,
    pub webhook_delivery: crate::domain::webhook::DeliverySettings,
    /// `[[webhooks]]`, each with its secret read.
    pub webhooks: Vec<crate::domain::webhook::ConfiguredEndpoint>,
}

/// `[connect]`: connect sessions' lifetime and where they may send people back to.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    pub session_ttl: Duration,
    pub allowed_return_origins: Vec<url::Origin>,
}

impl Settings {
    /// Reads every layer. `file` is `--config`; a missing file named there is an error.
    pub fn load(file: Option<&Path>, flags: FlagOverrides) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                bail!("configuration file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("SWITCHBOARD_").filter_map(|key| {
            ENV_KEYS
                .iter()
                .find(|(var, _)| key.as_str().eq_ignore_ascii_case(var))
                .map(|(_, path)| (*path).into())
        });
        figment = figment.merge(env).merge(Serialized::defaults(flags));
        let raw: RawConfig = figment.extract().map_err(|e| {
            let mut msg = String::from("invalid configuration:");
            for err in e {
                msg.push_str(&format!("\n  - {err}"));
            }
            msg.push_str("\n(see examples/switchboard.toml for every key and its meaning)");
            anyhow::anyhow!(msg)
        })?;
        validate::validate(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> anyhow::Result<Settings> {
        let raw: RawConfig = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        validate::validate(raw)
    }

    #[test]
    fn empty_config_has_one_default_local_region() {
        let s = from_toml("").unwrap();
        let r = s.topology.default_region();
        assert_eq!(
            (r.name.as_str(), r.id.as_str(), r.port),
            ("local", "local-1", 8124)
        );
        assert_eq!(s.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            s.database,
            DatabaseUrl::Sqlite("sqlite://./switchboard-data/switchboard.db".into())
        );
    }

    #[test]
    fn refuses_bad_configuration_with_a_hint() {
        let cases = [
            ("[api]\nlisten = \"nonsense\"", "api.listen"),
            ("unknown_key = 1", "unknown"),
            ("[database]\nurl = \"mysql://x\"", "sqlite://"),
            (
                "[gateway]\ntrusted_proxies = [\"10.0.0.0/33\"]",
                "trusted_proxies",
            ),
            (
                "[[regions]]\nname='a'\nid='a1'\nhost='h'\nport=1\n[[regions]]\nname='b'\nid='b1'\nhost='h'\nport=1",
                "default = true",
            ),
            (
                "[[regions]]\nname='a'\nid='a1'\nhost='h'\nport=1\n[[regions]]\nname='a'\nid='b1'\nhost='h'\nport=1\ndefault=true",
                "unique",
            ),
            (
                "[[teams]]\nid=1\nname='x'\n[[teams]]\nid=1\nname='y'",
                "unique",
            ),
            ("public_url = \"ftp://x\"", "http"),
        ];
        for (text, hint) in cases {
            let err = format!("{:#}", from_toml(text).unwrap_err());
            assert!(err.contains(hint), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let s = from_toml(include_str!("../../examples/switchboard.toml")).unwrap();
        assert_eq!(s.topology.default_region().id, "local-1");
        assert_eq!(
            s.topology.default_region().upstreams[0].as_str(),
            "http://127.0.0.1:8123/"
        );
        assert_eq!(s.topology.organisation_user().unwrap().user, "default");
        assert_eq!(s.gateway.max_concurrent_queries_per_connection, 16);
        // Nothing kept in the data directory is pinned elsewhere: --data-dir moves it all.
        assert_eq!(
            s.database,
            DatabaseUrl::Sqlite("sqlite://./switchboard-data/switchboard.db".into())
        );
        assert!(s.public_url.is_none());
    }

    #[test]
    fn single_region_is_default_and_is_found_by_name_or_id() {
        let s = from_toml(
            "[[regions]]\nname='germany'\nid='eu-nbg-2'\nhost='gw.example'\nport=443\ntls=true",
        )
        .unwrap();
        assert_eq!(s.topology.default_region().id, "eu-nbg-2");
        assert!(s.topology.find_region("germany").is_some());
        assert!(s.topology.find_region("eu-nbg-2").is_some());
        assert!(s.topology.find_region("mars").is_none());
    }
}
