//! The configuration file's schema as written: every key, its default, and no unknown
//! key (`deny_unknown_fields`). Validation turns it into [`super::Settings`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::oauth::OAuthSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    #[serde(default)]
    pub additional_master_key_files: Vec<PathBuf>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub regions: Vec<RawRegion>,
    #[serde(default)]
    pub teams: Vec<RawTeam>,
    #[serde(default)]
    pub platforms: Vec<RawPlatform>,
    #[serde(default)]
    pub passthrough: RawPassthrough,
    #[serde(default)]
    pub oauth: RawOAuth,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub connect: RawConnect,
    #[serde(default)]
    pub console: RawConsole,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
    #[serde(default)]
    pub webhook_delivery: RawWebhookDelivery,
}

/// A webhook endpoint: `[[webhooks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    /// A file holding the signing secret, `whsec_` and base64.
    pub secret_file: PathBuf,
    /// Event types (`data_connection.created`), families (`integration.*`) or `*`; empty:
    /// every type.
    #[serde(default)]
    pub events: Vec<String>,
}

/// How webhooks are delivered: `[webhook_delivery]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhookDelivery {
    pub timeout_ms: u64,
    pub first_retry_ms: u64,
    pub max_retry_ms: u64,
    pub horizon_seconds: u64,
    pub expiring_lead_seconds: Vec<u64>,
    pub poll_interval_ms: u64,
    pub expiry_scan_interval_ms: u64,
    pub allow_private_network: bool,
    pub retention_days: u64,
    pub concurrency: usize,
}

impl Default for RawWebhookDelivery {
    fn default() -> Self {
        let d = crate::domain::webhook::DeliverySettings::default();
        let ms = |d: Duration| d.as_millis() as u64;
        Self {
            timeout_ms: ms(d.timeout),
            first_retry_ms: ms(d.first_retry),
            max_retry_ms: ms(d.max_retry),
            horizon_seconds: d.horizon.as_secs(),
            expiring_lead_seconds: d.expiring_leads.iter().map(Duration::as_secs).collect(),
            poll_interval_ms: ms(d.poll_interval),
            expiry_scan_interval_ms: ms(d.expiry_scan_interval),
            allow_private_network: d.allow_private_network,
            retention_days: d.retention.as_secs() / 86_400,
            concurrency: d.concurrency,
        }
    }
}

/// The audit log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub retention_days: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

/// The operator console at `/console/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConsole {
    pub session_ttl_seconds: u64,
}

impl Default for RawConsole {
    fn default() -> Self {
        Self {
            session_ttl_seconds: 8 * 3600,
        }
    }
}

/// Connect sessions: the links end users follow to link an account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConnect {
    pub session_ttl_seconds: u64,
    /// Origins (`https://app.example.com`) a session's `returnUrl` may point at.
    pub allowed_return_origins: Vec<String>,
}

impl Default for RawConnect {
    fn default() -> Self {
        Self {
            session_ttl_seconds: 30 * 60,
            allowed_return_origins: Vec::new(),
        }
    }
}

/// The ClickHouse the implicit default region forwards to, and the organisation-wide user
/// the gateway logs in as while no `[[teams]]` are configured.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Only without `[[regions]]` (each region names its own upstreams).
    pub url: Option<String>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOAuth {
    pub refresh_margin_seconds: u64,
    pub max_consecutive_failures: u32,
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub scan_interval_ms: u64,
    pub token_timeout_ms: u64,
    pub default_token_lifetime_seconds: u64,
}

impl Default for RawOAuth {
    fn default() -> Self {
        let d = OAuthSettings::default();
        let ms = |d: Duration| d.as_millis() as u64;
        Self {
            refresh_margin_seconds: d.refresh_margin.as_secs(),
            max_consecutive_failures: d.max_consecutive_failures,
            retry_backoff_ms: ms(d.retry_backoff),
            retry_backoff_max_ms: ms(d.retry_backoff_max),
            scan_interval_ms: ms(d.scan_interval),
            token_timeout_ms: ms(d.token_timeout),
            default_token_lifetime_seconds: d.default_token_lifetime.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPassthrough {
    pub connect_timeout_ms: u64,
    pub response_timeout_seconds: u64,
}

impl Default for RawPassthrough {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5000,
            response_timeout_seconds: 30,
        }
    }
}

/// Adds a platform to the catalog, or overrides fields of a built-in one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlatform {
    pub platform: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub base_url: Option<String>,
    pub auth: Option<String>,
    pub header_name: Option<String>,
    pub query_param: Option<String>,
    pub allow_private_network: Option<bool>,
    pub version: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub authorize_url: Option<String>,
    #[serde(default)]
    pub extra_authorize_params: std::collections::BTreeMap<String, String>,
    pub scope_separator: Option<String>,
    /// `client_secret_post` (the default) or `client_secret_basic`.
    pub token_auth: Option<String>,
    pub category: Option<String>,
    /// An image URL for the catalog's `image` (the connect page does not load it).
    pub image: Option<String>,
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./switchboard-data")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub listen: String,
    pub request_timeout_seconds: u64,
    pub max_body_bytes: usize,
    pub workers: usize,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            request_timeout_seconds: 30,
            max_body_bytes: 1024 * 1024,
            workers: 0,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGateway {
    pub listen: String,
    pub trusted_proxies: Vec<String>,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_response_timeout_seconds: u64,
    pub health_check_interval_ms: u64,
    /// How often counted usage is added to the store.
    pub usage_flush_interval_ms: u64,
    pub max_concurrent_queries_per_connection: usize,
    pub max_requests_per_minute_per_connection: u32,
    pub workers: usize,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub upstream_ca_file: Option<PathBuf>,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8124".into(),
            trusted_proxies: Vec::new(),
            upstream_connect_timeout_ms: 2000,
            upstream_response_timeout_seconds: 300,
            health_check_interval_ms: 2000,
            usage_flush_interval_ms: 5000,
            max_concurrent_queries_per_connection: 16,
            max_requests_per_minute_per_connection: 6000,
            workers: 0,
            tls_cert_file: None,
            tls_key_file: None,
            upstream_ca_file: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    pub url: Option<String>,
    pub auto_migrate: Option<bool>,
    pub acquire_timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    pub name: String,
    pub id: String,
    /// Unset: the gateway's own bound address.
    pub host: Option<String>,
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    pub id: i64,
    pub name: String,
    pub upstream_user: Option<String>,
    pub upstream_password_file: Option<PathBuf>,
    pub databases: Option<Vec<String>>,
    #[serde(default)]
    pub sources: Vec<RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub tables: Vec<String>,
}
