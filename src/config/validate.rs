//! Turning the raw layers into [`Settings`]: every value checked, with a message that
//! names the key and says how to fix it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

use super::platforms::validate_platforms;
use super::raw::{RawConfig, RawConnect, RawOAuth, RawWebhook, RawWebhookDelivery};
use super::topology::{validate_regions, validate_teams};
use super::{ApiSettings, ConnectConfig, DatabaseUrl, GatewaySettings, LogFormat, Settings};
use crate::domain::oauth::OAuthSettings;
use crate::domain::topology::{Region, Topology, UpstreamUser};
use crate::domain::webhook::{
    ConfiguredEndpoint, DeliverySettings, EventFilter, SigningSecret, parse_endpoint_url,
};

/// Where the default region's ClickHouse is, when nothing says otherwise.
pub const DEFAULT_UPSTREAM_URL: &str = "http://127.0.0.1:8123";
use crate::net::TlsFiles;

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

/// A password the gateway sends as a header: no control characters.
pub(super) fn read_header_secret(what: &str, path: &Path) -> anyhow::Result<SecretString> {
    let secret = read_secret_file(what, path)?;
    if axum::http::HeaderValue::from_str(secrecy::ExposeSecret::expose_secret(&secret)).is_err() {
        bail!(
            "{what}: {} holds characters a password cannot have here (a line break inside, or other control characters)",
            path.display()
        );
    }
    Ok(secret)
}

pub(super) fn read_secret_file(what: &str, path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what}: cannot read {}", path.display()))?;
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        bail!("{what}: {} is empty", path.display());
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// Relative paths, like the SQLite URL, are relative to the working directory.
pub(super) fn validate(raw: RawConfig) -> anyhow::Result<Settings> {
    let raw_allow_private = raw.webhook_delivery.allow_private_network;
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

    let regions = if raw.regions.is_empty() {
        // A fresh install: one region whose gateway is this server's own listener, in front
        // of a local ClickHouse unless told otherwise.
        let upstream = raw.upstream.url.as_deref().unwrap_or(DEFAULT_UPSTREAM_URL);
        let url = Url::parse(upstream)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .with_context(|| {
                format!(
                    "upstream.url = \"{upstream}\" is not a ClickHouse HTTP URL like \"{DEFAULT_UPSTREAM_URL}\""
                )
            })?;
        vec![Region {
            name: "local".into(),
            id: "local-1".into(),
            host: String::new(),
            port: 0,
            follows_gateway: true,
            tls: false,
            upstreams: vec![url],
            default: true,
        }]
    } else {
        if raw.upstream.url.is_some() {
            bail!(
                "upstream.url (SWITCHBOARD_UPSTREAM_URL, --upstream-url) is the default region's ClickHouse, used only without [[regions]]; with regions, list each region's upstreams in its entry"
            );
        }
        validate_regions(raw.regions)?
    };
    let teams = validate_teams(raw.teams)?;
    let organisation_user = UpstreamUser {
        user: match raw.upstream.user {
            None => "default".into(),
            Some(user)
                if !user.trim().is_empty() && axum::http::HeaderValue::from_str(&user).is_ok() =>
            {
                user
            }
            Some(user) => bail!("upstream.user = {user:?} is not a ClickHouse user name"),
        },
        password: raw
            .upstream
            .password_file
            .as_deref()
            .map(|f| read_header_secret("upstream.password_file", f))
            .transpose()?,
    };

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
            workers: serving_threads(raw.api.workers),
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
            usage_flush_interval: Duration::from_millis(
                raw.gateway.usage_flush_interval_ms.clamp(100, 600_000),
            ),
            max_concurrent_queries_per_connection: raw
                .gateway
                .max_concurrent_queries_per_connection,
            max_requests_per_minute_per_connection: raw
                .gateway
                .max_requests_per_minute_per_connection,
            workers: serving_threads(raw.gateway.workers),
        },
        database,
        auto_migrate: raw.database.auto_migrate.unwrap_or(true),
        database_acquire_timeout: Duration::from_secs(
            raw.database.acquire_timeout_seconds.unwrap_or(10).max(1),
        ),
        log_format,
        log_level: raw.log.level,
        topology: {
            let mut topology = Topology::new(regions, teams, organisation_user);
            // Until the gateway is bound (port 0 picks its port then).
            topology
                .follow_gateway_address(&gateway_listen.ip().to_string(), gateway_listen.port());
            topology
        },
        catalog: validate_platforms(raw.platforms)?,
        passthrough_timeouts: (
            Duration::from_millis(raw.passthrough.connect_timeout_ms.max(1)),
            Duration::from_secs(raw.passthrough.response_timeout_seconds.max(1)),
        ),
        oauth: validate_oauth(raw.oauth)?,
        connect: validate_connect(raw.connect)?,
        console_session_ttl: {
            let ttl = raw.console.session_ttl_seconds;
            if !(60..=7 * 24 * 3600).contains(&ttl) {
                bail!("console.session_ttl_seconds must be between 60 and 604800 (a week)");
            }
            Duration::from_secs(ttl)
        },
        audit_retention: {
            let days = raw.audit.retention_days;
            if !(1..=3650).contains(&days) {
                bail!("audit.retention_days must be between 1 and 3650 (ten years)");
            }
            Duration::from_secs(days * 86_400)
        },
        webhook_delivery: validate_webhook_delivery(raw.webhook_delivery)?,
        webhooks: validate_webhooks(raw.webhooks, raw_allow_private)?,
    })
}

fn validate_webhook_delivery(raw: RawWebhookDelivery) -> anyhow::Result<DeliverySettings> {
    let ms = Duration::from_millis;
    if !(100..=300_000).contains(&raw.timeout_ms) {
        bail!("webhook_delivery.timeout_ms must be between 100 and 300000");
    }
    if raw.first_retry_ms < 10 || raw.max_retry_ms < raw.first_retry_ms {
        bail!(
            "webhook_delivery.first_retry_ms must be at least 10 and at most webhook_delivery.max_retry_ms"
        );
    }
    if raw.horizon_seconds == 0 || raw.horizon_seconds > 30 * 86_400 {
        bail!("webhook_delivery.horizon_seconds must be between 1 and 2592000 (30 days)");
    }
    if raw.poll_interval_ms < 10 || raw.expiry_scan_interval_ms < 10 {
        bail!(
            "webhook_delivery.poll_interval_ms and webhook_delivery.expiry_scan_interval_ms must be at least 10"
        );
    }
    if raw.expiring_lead_seconds.contains(&0) {
        bail!(
            "webhook_delivery.expiring_lead_seconds: a lead time is at least 1 second (expiry itself is data_connection.expired)"
        );
    }
    if !(1..=3650).contains(&raw.retention_days) {
        bail!("webhook_delivery.retention_days must be between 1 and 3650");
    }
    if !(1..=256).contains(&raw.concurrency) {
        bail!("webhook_delivery.concurrency must be between 1 and 256");
    }
    Ok(DeliverySettings {
        timeout: ms(raw.timeout_ms),
        first_retry: ms(raw.first_retry_ms),
        max_retry: ms(raw.max_retry_ms),
        horizon: Duration::from_secs(raw.horizon_seconds),
        expiring_leads: raw
            .expiring_lead_seconds
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
        poll_interval: ms(raw.poll_interval_ms),
        expiry_scan_interval: ms(raw.expiry_scan_interval_ms),
        allow_private_network: raw.allow_private_network,
        retention: Duration::from_secs(raw.retention_days * 86_400),
        concurrency: raw.concurrency,
    })
}

fn validate_webhooks(
    raw: Vec<RawWebhook>,
    allow_private_network: bool,
) -> anyhow::Result<Vec<ConfiguredEndpoint>> {
    let mut endpoints: Vec<ConfiguredEndpoint> = Vec::new();
    for (i, w) in raw.into_iter().enumerate() {
        let at = format!("webhooks[{i}]");
        let url = parse_endpoint_url(&w.url, allow_private_network)
            .map_err(|e| anyhow::anyhow!("{at}.{e}"))?;
        let events =
            EventFilter::parse(&w.events).map_err(|e| anyhow::anyhow!("{at}.events: {e}"))?;
        let text = read_secret_file(&format!("{at}.secret_file"), &w.secret_file)?;
        let secret = SigningSecret::parse(secrecy::ExposeSecret::expose_secret(&text)).map_err(|e| {
            anyhow::anyhow!(
                "{at}.secret_file: {}: {e} (make one with: echo \"whsec_$(openssl rand -base64 32)\" > {})",
                w.secret_file.display(),
                w.secret_file.display()
            )
        })?;
        if endpoints.iter().any(|e| e.url == url) {
            bail!(
                "{at}.url: {url} is configured twice; give it one entry with every event it takes"
            );
        }
        endpoints.push(ConfiguredEndpoint {
            url,
            events,
            secret,
        });
    }
    Ok(endpoints)
}

fn validate_connect(raw: RawConnect) -> anyhow::Result<ConnectConfig> {
    if !(1..=7 * 24 * 3600).contains(&raw.session_ttl_seconds) {
        bail!("connect.session_ttl_seconds must be between 1 and 604800 (a week)");
    }
    let allowed_return_origins = raw
        .allowed_return_origins
        .iter()
        .map(|o| {
            let url = Url::parse(o).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
            });
            url.map(|u| u.origin()).with_context(|| {
                format!("connect.allowed_return_origins: \"{o}\" is not an origin; write it like \"https://app.example.com\"")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(ConnectConfig {
        session_ttl: Duration::from_secs(raw.session_ttl_seconds),
        allowed_return_origins,
    })
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

/// `workers = 0`: one serving thread per CPU.
fn serving_threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n.min(1024),
    }
}
