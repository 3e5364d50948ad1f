//! Layered configuration: defaults, then a TOML file, then `SWITCHBOARD_*` environment
//! variables, then command-line flags. Validation turns the raw layers into [`Settings`]
//! and refuses bad input with a message that says how to fix it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::catalog::{AuthMethod, Catalog, Platform, builtin_platforms};
use crate::domain::oauth::OAuthSettings;
use crate::domain::topology::{Region, Source, Team, Topology};
pub use crate::server::TlsFiles;

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
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    public_url: Option<String>,
    #[serde(default)]
    master_key_file: Option<PathBuf>,
    #[serde(default)]
    additional_master_key_files: Vec<PathBuf>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    regions: Vec<RawRegion>,
    #[serde(default)]
    teams: Vec<RawTeam>,
    #[serde(default)]
    platforms: Vec<RawPlatform>,
    #[serde(default)]
    passthrough: RawPassthrough,
    #[serde(default)]
    oauth: RawOAuth,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOAuth {
    refresh_margin_seconds: u64,
    max_consecutive_failures: u32,
    retry_backoff_ms: u64,
    retry_backoff_max_ms: u64,
    scan_interval_ms: u64,
    token_timeout_ms: u64,
    default_token_lifetime_seconds: u64,
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

fn validate_oauth(raw: RawOAuth) -> anyhow::Result<OAuthSettings> {
    if raw.max_consecutive_failures == 0 {
        bail!("oauth.max_consecutive_failures must be at least 1");
    }
    if raw.retry_backoff_ms < 10 || raw.retry_backoff_max_ms < raw.retry_backoff_ms {
        bail!("oauth.retry_backoff_ms must be at least 10 and at most oauth.retry_backoff_max_ms");
    }
    if raw.scan_interval_ms < 10 || raw.token_timeout_ms < 10 {
        bail!("oauth.scan_interval_ms and oauth.token_timeout_ms must be at least 10");
    }
    if raw.default_token_lifetime_seconds <= raw.refresh_margin_seconds {
        bail!(
            "oauth.default_token_lifetime_seconds must exceed oauth.refresh_margin_seconds, \
             or a token granted without expires_in would be refreshed at once"
        );
    }
    Ok(OAuthSettings {
        refresh_margin: Duration::from_secs(raw.refresh_margin_seconds),
        max_consecutive_failures: raw.max_consecutive_failures,
        retry_backoff: Duration::from_millis(raw.retry_backoff_ms),
        retry_backoff_max: Duration::from_millis(raw.retry_backoff_max_ms),
        scan_interval: Duration::from_millis(raw.scan_interval_ms),
        token_timeout: Duration::from_millis(raw.token_timeout_ms),
        default_token_lifetime: Duration::from_secs(raw.default_token_lifetime_seconds),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPassthrough {
    connect_timeout_ms: u64,
    response_timeout_seconds: u64,
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
struct RawPlatform {
    platform: String,
    name: Option<String>,
    description: Option<String>,
    base_url: Option<String>,
    auth: Option<String>,
    header_name: Option<String>,
    query_param: Option<String>,
    allow_private_network: Option<bool>,
    version: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    scopes: Vec<String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./switchboard-data")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    listen: String,
    request_timeout_seconds: u64,
    max_body_bytes: usize,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            request_timeout_seconds: 30,
            max_body_bytes: 1024 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGateway {
    listen: String,
    trusted_proxies: Vec<String>,
    upstream_connect_timeout_ms: u64,
    upstream_response_timeout_seconds: u64,
    health_check_interval_ms: u64,
    max_concurrent_queries_per_connection: usize,
    max_requests_per_minute_per_connection: u32,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    upstream_ca_file: Option<PathBuf>,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8124".into(),
            trusted_proxies: Vec::new(),
            upstream_connect_timeout_ms: 2000,
            upstream_response_timeout_seconds: 300,
            health_check_interval_ms: 2000,
            max_concurrent_queries_per_connection: 16,
            max_requests_per_minute_per_connection: 6000,
            tls_cert_file: None,
            tls_key_file: None,
            upstream_ca_file: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    url: Option<String>,
    auto_migrate: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
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
struct RawRegion {
    name: String,
    id: String,
    host: String,
    port: u16,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    upstreams: Vec<String>,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    id: i64,
    name: String,
    upstream_user: Option<String>,
    upstream_password_file: Option<PathBuf>,
    databases: Option<Vec<String>>,
    #[serde(default)]
    sources: Vec<RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: i64,
    name: String,
    #[serde(default)]
    tables: Vec<String>,
}

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
    /// 0: unlimited.
    pub max_concurrent_queries_per_connection: usize,
    /// 0: unlimited.
    pub max_requests_per_minute_per_connection: u32,
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
    pub log_format: LogFormat,
    pub log_level: String,
    pub topology: Topology,
    pub catalog: Catalog,
    /// Outbound calls of the passthrough: connect, and wait for response headers.
    pub passthrough_timeouts: (Duration, Duration),
    pub oauth: OAuthSettings,
    /// No `[[regions]]` were configured: the one region is this server's own gateway.
    pub implicit_region: bool,
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
        validate(raw)
    }
}

fn tls_files(
    section: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<TlsFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => bail!(
            "{section}.tls_cert_file and {section}.tls_key_file go together: set both to serve HTTPS, or neither"
        ),
    }
}

fn parse_listen(what: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse().with_context(|| {
        format!(
            "{what} = \"{s}\" is not an address and port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
        )
    })
}

fn read_secret_file(what: &str, path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what}: cannot read {}", path.display()))?;
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        bail!("{what}: {} is empty", path.display());
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// Relative paths, like the SQLite URL, are relative to the working directory.
fn validate(raw: RawConfig) -> anyhow::Result<Settings> {
    let api_listen = parse_listen("api.listen", &raw.api.listen)?;
    let gateway_listen = parse_listen("gateway.listen", &raw.gateway.listen)?;
    if raw.api.request_timeout_seconds == 0 {
        bail!("api.request_timeout_seconds must be at least 1");
    }
    if raw.api.max_body_bytes < 1024 {
        bail!("api.max_body_bytes must be at least 1024");
    }
    let trusted_proxies = raw
        .gateway
        .trusted_proxies
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .with_context(|| {
                    format!("gateway.trusted_proxies: '{s}' is not an IP address or CIDR range")
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let public_url = raw
        .public_url
        .as_deref()
        .map(|s| {
            let url = Url::parse(s).with_context(|| {
                format!("public_url = \"{s}\" is not a URL; write it like \"https://switchboard.example.com\"")
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                bail!("public_url = \"{s}\" must be an http:// or https:// URL with a host");
            }
            Ok(url)
        })
        .transpose()?;

    let database = match raw.database.url {
        None => DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            raw.data_dir.join("switchboard.db").display()
        )),
        Some(url) if url.starts_with("sqlite:") => DatabaseUrl::Sqlite(url),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            DatabaseUrl::Postgres(url)
        }
        Some(_) => bail!(
            "database.url must start with sqlite:// (embedded) or postgres:// (shared); e.g. \"sqlite://./switchboard-data/switchboard.db\""
        ),
    };

    let log_format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => bail!("log.format = \"{other}\": use \"text\" or \"json\""),
    };

    let implicit_region = raw.regions.is_empty();
    let regions = if implicit_region {
        // A fresh install: one region whose gateway is this server's own listener.
        vec![Region {
            name: "local".into(),
            id: "local-1".into(),
            host: gateway_listen.ip().to_string(),
            port: gateway_listen.port(),
            tls: false,
            upstreams: vec![Url::parse("http://127.0.0.1:8123").expect("literal URL")],
            default: true,
        }]
    } else {
        validate_regions(raw.regions)?
    };
    let teams = validate_teams(raw.teams)?;

    Ok(Settings {
        master_key_file: raw.master_key_file,
        additional_master_key_files: raw.additional_master_key_files,
        data_dir: raw.data_dir,
        public_url,
        api: ApiSettings {
            listen: api_listen,
            tls: tls_files("api", raw.api.tls_cert_file, raw.api.tls_key_file)?,
            request_timeout: Duration::from_secs(raw.api.request_timeout_seconds),
            max_body_bytes: raw.api.max_body_bytes,
        },
        gateway: GatewaySettings {
            listen: gateway_listen,
            tls: tls_files(
                "gateway",
                raw.gateway.tls_cert_file,
                raw.gateway.tls_key_file,
            )?,
            upstream_ca_file: raw.gateway.upstream_ca_file,
            trusted_proxies,
            upstream_connect_timeout: Duration::from_millis(
                raw.gateway.upstream_connect_timeout_ms.max(1),
            ),
            upstream_response_timeout: Duration::from_secs(
                raw.gateway.upstream_response_timeout_seconds.max(1),
            ),
            health_check_interval: Duration::from_millis(
                raw.gateway.health_check_interval_ms.max(100),
            ),
            max_concurrent_queries_per_connection: raw
                .gateway
                .max_concurrent_queries_per_connection,
            max_requests_per_minute_per_connection: raw
                .gateway
                .max_requests_per_minute_per_connection,
        },
        database,
        auto_migrate: raw.database.auto_migrate.unwrap_or(true),
        log_format,
        log_level: raw.log.level,
        topology: Topology::new(regions, teams),
        catalog: validate_platforms(raw.platforms)?,
        passthrough_timeouts: (
            Duration::from_millis(raw.passthrough.connect_timeout_ms.max(1)),
            Duration::from_secs(raw.passthrough.response_timeout_seconds.max(1)),
        ),
        oauth: validate_oauth(raw.oauth)?,
        implicit_region,
    })
}

fn validate_regions(raw: Vec<RawRegion>) -> anyhow::Result<Vec<Region>> {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    let single = raw.len() == 1;
    let mut regions = Vec::with_capacity(raw.len());
    for r in raw {
        let at = format!("[[regions]] name = \"{}\"", r.name);
        if r.name.trim().is_empty() || r.id.trim().is_empty() {
            bail!("every [[regions]] entry needs a non-empty name and id");
        }
        if !names.insert(r.name.clone()) {
            bail!("{at}: the name is used by two regions; region names must be unique");
        }
        if !ids.insert(r.id.clone()) {
            bail!(
                "{at}: id \"{}\" is used by two regions; region ids must be unique",
                r.id
            );
        }
        if url::Host::parse(&r.host).is_err() || r.host.contains(['/', '\'', '"', ' ']) {
            bail!("{at}: host \"{}\" is not a host name or IP address", r.host);
        }
        if r.port == 0 {
            bail!("{at}: port must be between 1 and 65535");
        }
        let upstreams = r
            .upstreams
            .iter()
            .map(|u| {
                let url = Url::parse(u).with_context(|| {
                    format!("{at}: upstream \"{u}\" is not a URL like \"http://127.0.0.1:8123\"")
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    bail!("{at}: upstream \"{u}\" must be http:// or https://");
                }
                Ok(url)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        regions.push(Region {
            default: r.default || single,
            name: r.name,
            id: r.id,
            host: r.host,
            port: r.port,
            tls: r.tls,
            upstreams,
        });
    }
    match regions.iter().filter(|r| r.default).count() {
        1 => Ok(regions),
        0 => bail!(
            "several regions are configured and none is the default: set `default = true` on one [[regions]] entry"
        ),
        _ => bail!("more than one region has `default = true`: keep it on exactly one"),
    }
}

fn validate_platforms(raw: Vec<RawPlatform>) -> anyhow::Result<Catalog> {
    let mut platforms = builtin_platforms();
    for r in raw {
        let at = format!("[[platforms]] platform = \"{}\"", r.platform);
        if r.platform.is_empty()
            || !r
                .platform
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            bail!("{at}: the platform key must be lowercase letters, digits, '-' or '_'");
        }
        let existing = platforms.iter().position(|p| p.key == r.platform);
        let base = match (existing, &r.base_url) {
            (Some(i), _) => platforms[i].clone(),
            (None, Some(url)) => Platform {
                key: r.platform.clone(),
                name: r.platform.clone(),
                description: String::new(),
                base_url: Url::parse(url)
                    .with_context(|| format!("{at}: base_url \"{url}\" is not a URL"))?,
                auth: AuthMethod::Bearer,
                version: "1.0.0".into(),
                allow_private_network: false,
            },
            (None, None) => bail!("{at}: a new platform needs base_url (and auth)"),
        };
        let mut p = base;
        if let Some(name) = r.name {
            p.name = name;
        }
        if let Some(d) = r.description {
            p.description = d;
        }
        if let Some(url) = &r.base_url {
            p.base_url = Url::parse(url)
                .with_context(|| format!("{at}: base_url \"{url}\" is not a URL"))?;
            if !matches!(p.base_url.scheme(), "http" | "https") {
                bail!("{at}: base_url must be http:// or https://");
            }
        }
        if let Some(v) = r.version {
            p.version = v;
        }
        if let Some(allow) = r.allow_private_network {
            p.allow_private_network = allow;
        }
        if let Some(auth) = r.auth.as_deref() {
            p.auth = match auth {
                "bearer" => AuthMethod::Bearer,
                "header" => AuthMethod::Header {
                    name: r.header_name.clone().unwrap_or_else(|| "x-api-key".into()),
                },
                "query" => AuthMethod::Query {
                    param: r.query_param.clone().unwrap_or_else(|| "api_key".into()),
                },
                "basic" => AuthMethod::Basic,
                "oauth2" => {
                    let token_url = r
                        .token_url
                        .as_deref()
                        .with_context(|| format!("{at}: auth = \"oauth2\" needs token_url"))?;
                    AuthMethod::OAuth2 {
                        token_url: Url::parse(token_url).with_context(|| {
                            format!("{at}: token_url \"{token_url}\" is not a URL")
                        })?,
                        client_id: r
                            .client_id
                            .clone()
                            .with_context(|| format!("{at}: auth = \"oauth2\" needs client_id"))?,
                        client_secret: r
                            .client_secret_file
                            .as_deref()
                            .map(|f| read_secret_file(&format!("{at}: client_secret_file"), f))
                            .transpose()?,
                        scopes: r.scopes.clone(),
                    }
                }
                other => bail!(
                    "{at}: auth = \"{other}\" is not one of bearer, header, query, basic, oauth2"
                ),
            };
        }
        match existing {
            Some(i) => platforms[i] = p,
            None => platforms.push(p),
        }
    }
    Ok(Catalog::new(platforms))
}

fn validate_teams(raw: Vec<RawTeam>) -> anyhow::Result<Vec<Team>> {
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    let mut source_ids = HashSet::new();
    let mut teams = Vec::with_capacity(raw.len());
    for t in raw {
        let at = format!("[[teams]] id = {}", t.id);
        if t.name.trim().is_empty() {
            bail!("{at}: name must not be empty");
        }
        if !ids.insert(t.id) {
            bail!("{at}: two teams have this id; team ids must be unique");
        }
        if !names.insert(t.name.clone()) {
            bail!(
                "{at}: name \"{}\" is used by two teams; team names must be unique",
                t.name
            );
        }
        let upstream_password = match (&t.upstream_user, &t.upstream_password_file) {
            (Some(_), Some(p)) => Some(read_secret_file(
                &format!("{at}: upstream_password_file"),
                p,
            )?),
            (None, Some(_)) => {
                bail!("{at}: upstream_password_file is set but upstream_user is not")
            }
            _ => None,
        };
        let mut sources = Vec::with_capacity(t.sources.len());
        for s in t.sources {
            if !source_ids.insert(s.id) {
                bail!(
                    "{at}: source id {} is used twice; source ids must be unique",
                    s.id
                );
            }
            sources.push(Source {
                id: s.id,
                name: s.name,
                tables: s.tables,
            });
        }
        let databases = t
            .databases
            .unwrap_or_else(|| Team::databases_of_sources(&sources));
        teams.push(Team {
            id: t.id,
            name: t.name,
            upstream_user: t.upstream_user,
            upstream_password,
            databases,
            sources,
        });
    }
    Ok(teams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> anyhow::Result<Settings> {
        let raw: RawConfig = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        validate(raw)
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
        let s = from_toml(include_str!("../examples/switchboard.toml")).unwrap();
        assert_eq!(s.topology.default_region().id, "local-1");
        assert_eq!(s.topology.teams()[0].databases, ["team_1234"]);
        assert_eq!(s.gateway.max_concurrent_queries_per_connection, 16);
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
