//! OAuth2 connections: access tokens refreshed ahead of expiry and on a platform's 401,
//! one token request at a time per connection (within a process by a lock, across
//! replicas by a lease row), and every failure recorded in the connection's health.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::catalog::{Catalog, Platform};
use super::integration::{
    ConnectionState, Environment, IntegrationConnection, OpenCredentials, iso_micros,
    open_credentials, seal_credentials,
};
use super::ports::{ChangeSync, IntegrationStore, RefreshFailure, RefreshStore, StoreError};
use crate::crypto::Sealer;

/// `[oauth]` in the config.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// Refresh this long before the access token expires.
    pub refresh_margin: Duration,
    /// Failed refreshes in a row after which the connection is `failed`.
    pub max_consecutive_failures: u32,
    /// Wait after the first failed refresh; doubles with each further one.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How often the background task looks for connections due a refresh.
    pub scan_interval: Duration,
    /// Longest wait for the token endpoint.
    pub token_timeout: Duration,
    /// Assumed lifetime of a token granted without `expires_in`.
    pub default_token_lifetime: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(300),
            max_consecutive_failures: 3,
            retry_backoff: Duration::from_secs(30),
            retry_backoff_max: Duration::from_secs(3600),
            scan_interval: Duration::from_secs(5),
            token_timeout: Duration::from_secs(10),
            default_token_lifetime: Duration::from_secs(3600),
        }
    }
}

impl OAuthSettings {
    /// The wait before retrying after `failures` failed refreshes in a row (from 1).
    pub fn backoff(&self, failures: i64) -> Duration {
        let doublings = u32::try_from(failures.max(1) - 1)
            .unwrap_or(u32::MAX)
            .min(30);
        self.retry_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.retry_backoff_max)
    }

    /// How long a replica may hold a connection's refresh: longer than any token request,
    /// so a live holder never loses it; a crashed one's lease runs out.
    pub fn lease(&self) -> Duration {
        self.token_timeout + Duration::from_secs(10)
    }
}

/// A token endpoint's answer to a refresh.
pub struct TokenGrant {
    pub access_token: SecretString,
    /// A rotated refresh token; `None` keeps the current one.
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
}

impl TokenGrant {
    /// The credential an OAuth2 connection stores (`refresh_token` is the rotated one, or
    /// `current` when none came), and when its access token expires (µs since the epoch).
    pub fn into_credentials(
        self,
        current: SecretString,
        now: i64,
        default_lifetime: Duration,
    ) -> (OpenCredentials, i64) {
        let expires_at = now + micros(self.expires_in.unwrap_or(default_lifetime));
        let mut credentials = OpenCredentials::new();
        credentials.insert("access_token".into(), self.access_token);
        credentials.insert(
            "refresh_token".into(),
            self.refresh_token.unwrap_or(current),
        );
        credentials.insert(
            "expires_at".into(),
            SecretString::from((expires_at / 1_000_000).to_string()),
        );
        (credentials, expires_at)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// RFC 6749 section 5.2 `invalid_grant`: the refresh token is dead; only new
    /// credentials help.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// Any other refusal or outage: worth another try later.
    #[error("{0}")]
    Failed(String),
}

/// Where refresh tokens are exchanged; the passthrough's outbound client in production.
#[async_trait]
pub trait TokenEndpoint: Send + Sync {
    async fn refresh(
        &self,
        platform: &Platform,
        refresh_token: &SecretString,
    ) -> Result<TokenGrant, TokenError>;
    /// An authorization code for tokens (RFC 6749 section 4.1.3), with the PKCE verifier
    /// (RFC 7636 section 4.5) and the redirect URI the code was issued for.
    async fn exchange_code(
        &self,
        platform: &Platform,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenGrant, TokenError>;
}

/// Why a refresh gave no fresh token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("connection not found")]
    NotFound,
    /// The connection is `failed` (now or already): it needs new credentials.
    #[error("the connection has failed")]
    Failed,
    /// The refresh failed or is backing off; the connection is `degraded`.
    #[error("{0}")]
    Failing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `expires_at` as a client sends it: Unix seconds, or an RFC 3339 timestamp. Returns
/// microseconds since the epoch.
pub fn parse_expires_at(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return seconds.checked_mul(1_000_000);
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.timestamp_micros())
}

pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A fresh credential: the connection as stored now and its opened credential.
pub type Fresh = (IntegrationConnection, OpenCredentials);

pub struct OAuthRefresher {
    store: Arc<dyn IntegrationStore>,
    leases: Arc<dyn RefreshStore>,
    snapshots: Arc<dyn ChangeSync>,
    catalog: Arc<Catalog>,
    sealer: Arc<Sealer>,
    tokens: Arc<dyn TokenEndpoint>,
    settings: OAuthSettings,
    /// Names this process in lease rows.
    owner: String,
    /// One lock per connection being refreshed in this process.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl OAuthRefresher {
    pub fn new(
        store: Arc<dyn IntegrationStore>,
        leases: Arc<dyn RefreshStore>,
        snapshots: Arc<dyn ChangeSync>,
        catalog: Arc<Catalog>,
        sealer: Arc<Sealer>,
        tokens: Arc<dyn TokenEndpoint>,
        settings: OAuthSettings,
    ) -> Self {
        Self {
            store,
            leases,
            snapshots,
            catalog,
            sealer,
            tokens,
            settings,
            owner: uuid::Uuid::new_v4().to_string(),
            flights: Mutex::default(),
        }
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// When the background task should refresh `connection`: a failed refresh's retry
    /// time, else the margin before expiry.
    pub fn next_refresh_at(&self, connection: &IntegrationConnection) -> Option<i64> {
        if connection.state == ConnectionState::Failed {
            return None;
        }
        connection.health.retry_at.or_else(|| {
            connection
                .health
                .expires_at
                .map(|e| e - micros(self.settings.refresh_margin))
        })
    }

    /// Refreshes every connection that is due.
    pub async fn refresh_due(&self) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_micros();
        let due = self
            .leases
            .due_refreshes(now, now + micros(self.settings.refresh_margin), 64)
            .await?;
        for connection in due {
            // Failures are recorded on the connection; only the store failing stops the scan.
            if let Err(RefreshError::Store(e)) = self.refresh(&connection).await {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Gets `seen` a fresh access token. Collapses with every other refresh of the same
    /// connection: whoever comes second finds the credential's generation moved on (or
    /// the failure recorded) and makes no token request of its own.
    pub async fn refresh(&self, seen: &IntegrationConnection) -> Result<Fresh, RefreshError> {
        let flight = {
            let mut flights = self.flights.lock().expect("flight map lock");
            flights.entry(seen.id.clone()).or_default().clone()
        };
        let result = {
            let _in_flight = flight.lock().await;
            self.refresh_alone(seen).await
        };
        let mut flights = self.flights.lock().expect("flight map lock");
        if Arc::strong_count(&flight) == 2 {
            flights.remove(&seen.id);
        }
        result
    }

    async fn read(
        &self,
        environment: Environment,
        key: &str,
    ) -> Result<(IntegrationConnection, Vec<u8>), RefreshError> {
        self.store
            .sealed_integration_by_key(environment, key)
            .await?
            .map(|s| (s.connection, s.sealed))
            .ok_or(RefreshError::NotFound)
    }

    fn open(
        &self,
        connection: IntegrationConnection,
        sealed: &[u8],
    ) -> Result<Fresh, RefreshError> {
        let credentials =
            open_credentials(&self.sealer, &connection.id, connection.environment, sealed)?;
        Ok((connection, credentials))
    }

    /// Whether `current` still needs the token request `seen` asked for: false when the
    /// credential moved on meanwhile; an error when the connection failed or a retry is
    /// not yet due.
    fn still_needed(
        seen: &IntegrationConnection,
        current: &IntegrationConnection,
        now: i64,
    ) -> Result<bool, RefreshError> {
        if current.credential_generation != seen.credential_generation {
            return Ok(false);
        }
        if current.state == ConnectionState::Failed {
            return Err(RefreshError::Failed);
        }
        if let Some(retry_at) = current.health.retry_at.filter(|r| *r > now) {
            return Err(RefreshError::Failing(format!(
                "refreshing the OAuth token is failing ({}); next attempt at {}",
                current
                    .health
                    .last_error
                    .as_deref()
                    .unwrap_or("unknown error"),
                iso_micros(retry_at)
            )));
        }
        Ok(true)
    }

    async fn refresh_alone(&self, seen: &IntegrationConnection) -> Result<Fresh, RefreshError> {
        let lease = self.settings.lease();
        let deadline = tokio::time::Instant::now() + lease + Duration::from_secs(5);
        // Wait for the lease; whoever holds it may be refreshing this very token.
        loop {
            let now = Utc::now().timestamp_micros();
            let (current, sealed) = self.read(seen.environment, &seen.key).await?;
            if !Self::still_needed(seen, &current, now)? {
                return self.open(current, &sealed);
            }
            if self
                .leases
                .try_lease_refresh(&seen.id, &self.owner, now, now + micros(lease))
                .await?
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RefreshError::Failing(
                    "another replica is refreshing this connection's token".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let outcome = self.refresh_leased(seen).await;
        // A refresh or a recorded failure released the lease as it wrote; this covers the
        // rest (nothing left to do, a store error). Only our own lease is touched.
        if let Err(e) = self
            .leases
            .release_refresh_lease(&seen.id, &self.owner)
            .await
        {
            tracing::warn!(connection_id = %seen.id, error = %e, "cannot release the refresh lease; it runs out by itself");
        }
        outcome
    }

    async fn refresh_leased(&self, seen: &IntegrationConnection) -> Result<Fresh, RefreshError> {
        let now = Utc::now().timestamp_micros();
        // Read again under the lease: the previous holder may have finished just now.
        let (current, sealed) = self.read(seen.environment, &seen.key).await?;
        let needed = Self::still_needed(seen, &current, now)?;
        let (connection, credentials) = self.open(current, &sealed)?;
        if !needed {
            return Ok((connection, credentials));
        }
        let platform = self
            .catalog
            .get(&connection.platform)
            .filter(|p| p.auth.is_oauth2())
            .ok_or_else(|| {
                RefreshError::Failing(format!(
                    "platform {} is no longer configured for OAuth2",
                    connection.platform
                ))
            })?;
        let refresh_token = credentials
            .get("refresh_token")
            .ok_or_else(|| RefreshError::Failing("the connection has no refresh_token".into()))?;
        let outcome = tokio::time::timeout(
            self.settings.token_timeout,
            self.tokens.refresh(platform, refresh_token),
        )
        .await
        .unwrap_or_else(|_| {
            Err(TokenError::Failed(
                "the token endpoint did not answer in time".into(),
            ))
        });
        let now = Utc::now().timestamp_micros();
        match outcome {
            Ok(grant) => {
                let kept = SecretString::from(refresh_token.expose_secret());
                let (next, expires_at) =
                    grant.into_credentials(kept, now, self.settings.default_token_lifetime);
                let sealed =
                    seal_credentials(&self.sealer, &connection.id, connection.environment, &next);
                let change = self
                    .leases
                    .store_refreshed_credentials(
                        &connection.id,
                        &self.owner,
                        &sealed,
                        expires_at,
                        now,
                    )
                    .await?;
                self.snapshots.applied(change).await;
                metrics::counter!("switchboard_oauth_refreshes_total", "outcome" => "ok")
                    .increment(1);
                tracing::info!(connection_id = %connection.id, platform = %connection.platform, "oauth token refreshed");
                let (fresh, sealed) = self.read(seen.environment, &seen.key).await?;
                self.open(fresh, &sealed)
            }
            Err(e) => {
                let failures = connection.health.consecutive_failures + 1;
                let terminal = matches!(e, TokenError::InvalidGrant(_))
                    || failures >= i64::from(self.settings.max_consecutive_failures);
                let error = truncate(&format!("token refresh failed: {e}"), 500);
                let retry_at = (!terminal).then(|| now + micros(self.settings.backoff(failures)));
                let change = self
                    .leases
                    .record_refresh_failure(
                        &connection.id,
                        &self.owner,
                        &RefreshFailure {
                            state: if terminal {
                                ConnectionState::Failed
                            } else {
                                ConnectionState::Degraded
                            },
                            consecutive_failures: failures,
                            error: error.clone(),
                            at: now,
                            retry_at,
                        },
                    )
                    .await?;
                self.snapshots.applied(change).await;
                metrics::counter!("switchboard_oauth_refreshes_total", "outcome" => if terminal { "failed" } else { "degraded" }).increment(1);
                if terminal {
                    tracing::error!(connection_id = %connection.id, platform = %connection.platform, failures, %error, "oauth refresh failed; the connection is failed until its credentials are replaced");
                    Err(RefreshError::Failed)
                } else {
                    tracing::warn!(connection_id = %connection.id, platform = %connection.platform, failures, %error, "oauth refresh failed; will retry");
                    Err(RefreshError::Failing(format!(
                        "{error}; next attempt at {}",
                        iso_micros(retry_at.unwrap_or(now))
                    )))
                }
            }
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = OAuthSettings {
            retry_backoff: Duration::from_secs(30),
            retry_backoff_max: Duration::from_secs(100),
            ..OAuthSettings::default()
        };
        assert_eq!(s.backoff(1), Duration::from_secs(30));
        assert_eq!(s.backoff(2), Duration::from_secs(60));
        assert_eq!(s.backoff(3), Duration::from_secs(100));
        assert_eq!(s.backoff(i64::MAX), Duration::from_secs(100));
        assert_eq!(s.backoff(0), Duration::from_secs(30));
    }

    #[test]
    fn expiry_as_seconds_or_rfc3339() {
        assert_eq!(parse_expires_at("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(
            parse_expires_at("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_expires_at("soon"), None);
        assert_eq!(parse_expires_at("99999999999999999"), None);
    }
}
