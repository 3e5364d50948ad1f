//! Webhooks: the events a change announces, the endpoints they go to, and the rules of
//! delivery. An event is written to the store's outbox in the transaction of the change it
//! announces (so no change goes unannounced and no announcement outlives a rolled-back
//! change); `crate::webhooks` delivers it, signed per the Standard Webhooks scheme.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::connect::ConnectSession;
use super::data_connection::{DataConnection, TeamScope};
use super::integration::{ConnectionState, IntegrationConnection};
use super::ports::{RefreshFailure, StoreError, WebhookStore};
use super::time::Timestamp;
use crate::crypto::{self, Sealer};

/// Every event type, in the order the documentation lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    DataConnectionCreated,
    DataConnectionUpdated,
    DataConnectionDeleted,
    DataConnectionPasswordRotated,
    DataConnectionExpiring,
    DataConnectionExpired,
    IntegrationCreated,
    IntegrationUpdated,
    IntegrationDeleted,
    IntegrationStateChanged,
    IntegrationRefreshFailed,
    ConnectSessionCompleted,
    ConnectSessionFailed,
}

impl EventType {
    pub const ALL: [Self; 13] = [
        Self::DataConnectionCreated,
        Self::DataConnectionUpdated,
        Self::DataConnectionDeleted,
        Self::DataConnectionPasswordRotated,
        Self::DataConnectionExpiring,
        Self::DataConnectionExpired,
        Self::IntegrationCreated,
        Self::IntegrationUpdated,
        Self::IntegrationDeleted,
        Self::IntegrationStateChanged,
        Self::IntegrationRefreshFailed,
        Self::ConnectSessionCompleted,
        Self::ConnectSessionFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataConnectionCreated => "data_connection.created",
            Self::DataConnectionUpdated => "data_connection.updated",
            Self::DataConnectionDeleted => "data_connection.deleted",
            Self::DataConnectionPasswordRotated => "data_connection.password_rotated",
            Self::DataConnectionExpiring => "data_connection.expiring",
            Self::DataConnectionExpired => "data_connection.expired",
            Self::IntegrationCreated => "integration.created",
            Self::IntegrationUpdated => "integration.updated",
            Self::IntegrationDeleted => "integration.deleted",
            Self::IntegrationStateChanged => "integration.state_changed",
            Self::IntegrationRefreshFailed => "integration.refresh_failed",
            Self::ConnectSessionCompleted => "connect_session.completed",
            Self::ConnectSessionFailed => "connect_session.failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Which event types an endpoint receives: all, or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(Vec<EventType>),
}

impl EventFilter {
    /// `[]` or `["*"]`: every type; otherwise exact names or a family's wildcard
    /// (`data_connection.*`). An unknown name is refused, naming the known ones.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        if names.is_empty() || names.iter().any(|n| n == "*") {
            return Ok(Self::All);
        }
        let mut types = Vec::new();
        for name in names {
            let matched: Vec<EventType> = match name.strip_suffix(".*") {
                Some(family) => EventType::ALL
                    .into_iter()
                    .filter(|t| t.as_str().split('.').next() == Some(family))
                    .collect(),
                None => EventType::parse(name).into_iter().collect(),
            };
            if matched.is_empty() {
                return Err(format!(
                    "'{}' is not an event type; known: {}, or a family such as data_connection.*, or *",
                    super::echo::echo(name),
                    EventType::ALL.map(EventType::as_str).join(", ")
                ));
            }
            for t in matched {
                if !types.contains(&t) {
                    types.push(t);
                }
            }
        }
        Ok(Self::Only(types))
    }

    /// As the store keeps it: `*`, or the names between commas (`,a,b,`), so "does it
    /// hold this type" is a substring test in SQL.
    pub fn stored(&self) -> String {
        match self {
            Self::All => "*".into(),
            Self::Only(types) => {
                let mut s = String::from(",");
                for t in types {
                    s.push_str(t.as_str());
                    s.push(',');
                }
                s
            }
        }
    }

    pub fn from_stored(s: &str) -> Self {
        if s == "*" {
            Self::All
        } else {
            Self::Only(s.split(',').filter_map(EventType::parse).collect())
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec!["*"],
            Self::Only(types) => types.iter().map(|t| t.as_str()).collect(),
        }
    }
}

/// An event as the outbox keeps it: the exact body every attempt sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// `webhook-id`: the same on every attempt, so a receiver can drop repeats.
    pub id: String,
    pub event_type: EventType,
    pub occurred_at: Timestamp,
    /// `{"type", "timestamp", "data"}`
    pub body: String,
}

impl OutboxEvent {
    pub fn new(event_type: EventType, data: Value) -> Self {
        let occurred_at = Timestamp::now();
        let body = json!({
            "type": event_type.as_str(),
            "timestamp": occurred_at.to_iso8601_millis(),
            "data": data,
        })
        .to_string();
        Self {
            id: format!("msg_{}", crypto::random_alphanumeric(24)),
            event_type,
            occurred_at,
            body,
        }
    }

    /// A data connection's event: the connection as the API shows it, no secret.
    pub fn data_connection(event_type: EventType, c: &DataConnection) -> Self {
        Self::new(event_type, data_connection_data(c))
    }

    /// `data_connection.password_rotated`; the old password works until
    /// `previous_valid_until` (none: it stopped at once).
    pub fn password_rotated(c: &DataConnection, previous_valid_until: Option<Timestamp>) -> Self {
        let mut data = data_connection_data(c);
        data["previous_password_valid_until"] =
            json!(previous_valid_until.map(Timestamp::to_iso8601_millis));
        Self::new(EventType::DataConnectionPasswordRotated, data)
    }

    pub fn integration(event_type: EventType, c: &IntegrationConnection) -> Self {
        Self::new(event_type, integration_data(c))
    }

    /// `integration.state_changed`, from the connection as it was.
    pub fn state_changed(
        before: &IntegrationConnection,
        state: ConnectionState,
        error: Option<&str>,
    ) -> Self {
        let mut data = integration_data(before);
        data["previous_state"] = json!(before.state.as_str());
        data["state"] = json!(state.as_str());
        data["error"] = json!(error);
        Self::new(EventType::IntegrationStateChanged, data)
    }

    pub fn refresh_failed(before: &IntegrationConnection, failure: &RefreshFailure) -> Self {
        let mut data = integration_data(before);
        data["state"] = json!(failure.state.as_str());
        data["error"] = json!(failure.error);
        data["consecutive_failures"] = json!(failure.consecutive_failures);
        data["retry_at"] = json!(failure.retry_at.map(micros_iso));
        Self::new(EventType::IntegrationRefreshFailed, data)
    }

    /// `connect_session.completed` or `.failed`, from the session as it ended.
    pub fn connect_session(completed: bool, s: &ConnectSession, platform: Option<&str>) -> Self {
        let data = json!({
            "id": s.id,
            "environment": s.environment.as_str(),
            "identity": s.identity,
            "identity_type": s.identity_type.as_str(),
            "platform": platform,
            "connection_key": s.connection_key,
            "error": s.error,
            "created_at": micros_iso(s.created_at),
        });
        let event_type = if completed {
            EventType::ConnectSessionCompleted
        } else {
            EventType::ConnectSessionFailed
        };
        Self::new(event_type, data)
    }

    /// `data_connection.expiring` `lead` ahead of `valid_until`, or `.expired` (no lead).
    pub fn expiry(c: &DataConnection, lead: Option<Duration>) -> Self {
        let mut data = data_connection_data(c);
        let event_type = match lead {
            Some(lead) => {
                data["lead_seconds"] = json!(lead.as_secs());
                EventType::DataConnectionExpiring
            }
            None => EventType::DataConnectionExpired,
        };
        Self::new(event_type, data)
    }
}

fn micros_iso(us: i64) -> String {
    Timestamp::from_millis(us / 1000).to_iso8601_millis()
}

fn data_connection_data(c: &DataConnection) -> Value {
    json!({
        "id": c.id,
        "username": c.username,
        "client_type": c.client_type.as_str(),
        "data_region": c.region_id,
        "host": c.host,
        "port": c.port,
        "note": c.note,
        "ip_allowlist": c.ip_allowlist.to_strings(),
        "team_ids": match &c.teams {
            TeamScope::All => None,
            TeamScope::Teams(ids) => Some(ids.clone()),
        },
        "valid_until": c.valid_until.map(Timestamp::to_iso8601_millis),
        "created_at": c.created_at.to_iso8601_millis(),
        "created_by": c.created_by.as_ref().map(|u| u.email.as_str()),
    })
}

fn integration_data(c: &IntegrationConnection) -> Value {
    json!({
        "id": c.id,
        "key": c.key,
        "environment": c.environment.as_str(),
        "platform": c.platform,
        "name": c.name,
        "identity": c.identity,
        "identity_type": c.identity_type.as_str(),
        "tags": c.tags,
        "active": c.active,
        "state": c.state.as_str(),
        "created_at": micros_iso(c.created_at),
    })
}

/// An endpoint's signing secret: `whsec_` and the base64 of its bytes, as Standard
/// Webhooks writes it. The bytes are the HMAC key.
#[derive(Clone)]
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

const SECRET_PREFIX: &str = "whsec_";

impl SigningSecret {
    /// A new random secret and its text, shown once.
    pub fn generate() -> (Self, SecretString) {
        let bytes = Zeroizing::new(crypto::random_key().to_vec());
        let text = SecretString::from(format!("{SECRET_PREFIX}{}", BASE64.encode(&*bytes)));
        (Self(bytes), text)
    }

    /// `whsec_<base64>` with at least 16 bytes behind it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("a webhook secret starts with {SECRET_PREFIX} followed by base64")
        })?;
        let bytes = Zeroizing::new(
            BASE64
                .decode(encoded)
                .map_err(|_| format!("the part after {SECRET_PREFIX} is not base64"))?,
        );
        if bytes.len() < 16 {
            return Err("a webhook secret needs at least 16 bytes (24 base64 characters)".into());
        }
        Ok(Self(bytes))
    }

    /// `v1,<base64 of HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }

    /// Sealed for the store, bound to the endpoint's id.
    pub fn seal(&self, sealer: &Sealer, endpoint_id: &str) -> Vec<u8> {
        sealer.seal(&self.0, &secret_aad(endpoint_id))
    }

    pub fn open(sealer: &Sealer, endpoint_id: &str, sealed: &[u8]) -> Result<Self, StoreError> {
        sealer
            .open(sealed, &secret_aad(endpoint_id))
            .map(|bytes| Self(Zeroizing::new(bytes.to_vec())))
            .map_err(|e| {
                StoreError::Corrupt(format!(
                    "cannot open webhook endpoint {endpoint_id}'s secret: {e}"
                ))
            })
    }
}

pub fn secret_aad(endpoint_id: &str) -> Vec<u8> {
    format!("webhook-endpoint:{endpoint_id}").into_bytes()
}

/// Where an endpoint is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSource {
    /// `[[webhooks]]` in the configuration; its secret is read from `secret_file`.
    Config,
    /// `POST /api/v1/webhooks`; its secret is sealed in the store.
    Api,
}

impl EndpointSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "config" => Some(Self::Config),
            "api" => Some(Self::Api),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub source: EndpointSource,
    pub url: url::Url,
    pub events: EventFilter,
    pub created_at: Timestamp,
    /// API endpoints' sealed secret.
    pub sealed_secret: Option<Vec<u8>>,
}

/// A configured endpoint with its secret.
#[derive(Debug, Clone)]
pub struct ConfiguredEndpoint {
    pub url: url::Url,
    pub events: EventFilter,
    pub secret: SigningSecret,
}

impl ConfiguredEndpoint {
    /// Stable across restarts and replicas with the same configuration: the URL's hash.
    pub fn id(&self) -> String {
        use sha2::Digest;
        let digest = Sha256::digest(self.url.as_str().as_bytes());
        format!("wh_cfg_{}", &hex::encode(digest)[..16])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up: the horizon passed without a 2xx.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A delivery (one event to one endpoint) as the API lists it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// One try at a delivery.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Timestamp,
    /// The endpoint's status; `None`: no answer (refused, timed out, private address).
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// A delivery claimed for sending: what the attempt needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub attempts: i64,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: Timestamp,
    pub body: String,
    pub endpoint: Endpoint,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(Timestamp),
    GiveUp,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub endpoint_id: Option<String>,
    pub event_type: Option<EventType>,
}

/// `[webhook_delivery]`
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Connect, and wait for the answer's headers.
    pub timeout: Duration,
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// After this long since the event without a 2xx, a delivery is given up.
    pub horizon: Duration,
    /// `data_connection.expiring` this long before `valid_until` (each once).
    pub expiring_leads: Vec<Duration>,
    /// How often due deliveries are looked for (a change in this process wakes it sooner).
    pub poll_interval: Duration,
    pub expiry_scan_interval: Duration,
    pub allow_private_network: bool,
    /// Delivered and given-up events are forgotten after this long.
    pub retention: Duration,
    /// Deliveries sent at once by one process.
    pub concurrency: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3600),
            horizon: Duration::from_secs(3 * 24 * 3600),
            expiring_leads: vec![
                Duration::from_secs(7 * 24 * 3600),
                Duration::from_secs(24 * 3600),
            ],
            poll_interval: Duration::from_secs(1),
            expiry_scan_interval: Duration::from_secs(60),
            allow_private_network: false,
            retention: Duration::from_secs(30 * 24 * 3600),
            concurrency: 8,
        }
    }
}

impl DeliverySettings {
    /// The wait before retry `attempts` (1 after the first failure): doubling from
    /// `first_retry` up to `max_retry`, then "equal jitter": half fixed, half random
    /// (`jitter` in 0..1), so endpoints coming back are not hit by every retry at once.
    pub fn retry_delay(&self, attempts: u32, jitter: f64) -> Duration {
        let doubling = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
        let full = self
            .first_retry
            .saturating_mul(doubling)
            .min(self.max_retry);
        full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// What follows a failed attempt made at `now` on an event of `occurred_at`.
    pub fn after_failure(
        &self,
        attempts: u32,
        occurred_at: Timestamp,
        now: Timestamp,
        jitter: f64,
    ) -> AfterAttempt {
        let next = now.as_millis() + self.retry_delay(attempts, jitter).as_millis() as i64;
        if next > occurred_at.as_millis() + self.horizon.as_millis() as i64 {
            AfterAttempt::GiveUp
        } else {
            AfterAttempt::RetryAt(Timestamp::from_millis(next))
        }
    }

    /// The lease a claim takes: longer than an attempt can last, so two processes never
    /// send the same delivery at once.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("this endpoint is defined in the configuration ([[webhooks]]); remove it there")]
    Configured,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The webhook endpoints and deliveries the API manages.
pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    sealer: Arc<Sealer>,
    allow_private_network: bool,
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        sealer: Arc<Sealer>,
        allow_private_network: bool,
    ) -> Self {
        Self {
            store,
            sealer,
            allow_private_network,
        }
    }

    /// A new endpoint and its signing secret, returned once.
    pub async fn create(
        &self,
        url: &str,
        events: &[String],
    ) -> Result<(Endpoint, SecretString), WebhookError> {
        let url = parse_endpoint_url(url, self.allow_private_network).map_err(|message| {
            WebhookError::Invalid {
                field: "url",
                message,
            }
        })?;
        let events = EventFilter::parse(events).map_err(|message| WebhookError::Invalid {
            field: "events",
            message: format!("events: {message}"),
        })?;
        let (secret, text) = SigningSecret::generate();
        let id = format!("wh_{}", crypto::random_alphanumeric(20));
        let endpoint = Endpoint {
            sealed_secret: Some(secret.seal(&self.sealer, &id)),
            id,
            source: EndpointSource::Api,
            url,
            events,
            created_at: Timestamp::now(),
        };
        self.store.insert_webhook_endpoint(&endpoint).await?;
        // The host only: a URL's path or query may carry the receiver's own token.
        tracing::info!(endpoint_id = %endpoint.id, host = endpoint.url.host_str().unwrap_or(""), "webhook endpoint created");
        Ok((endpoint, text))
    }

    pub async fn list(&self) -> Result<Vec<Endpoint>, WebhookError> {
        Ok(self.store.webhook_endpoints().await?)
    }

    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let endpoint = self
            .store
            .webhook_endpoints()
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or(WebhookError::NotFound)?;
        if endpoint.source == EndpointSource::Config {
            return Err(WebhookError::Configured);
        }
        if !self.store.delete_webhook_endpoint(id).await? {
            return Err(WebhookError::NotFound);
        }
        tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
        Ok(())
    }

    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Delivery>, u64), WebhookError> {
        Ok(self
            .store
            .list_webhook_deliveries(filter, offset, limit)
            .await?)
    }

    pub async fn delivery(&self, id: i64) -> Result<(Delivery, Vec<Attempt>), WebhookError> {
        self.store
            .webhook_delivery(id)
            .await?
            .ok_or(WebhookError::NotFound)
    }
}

/// An endpoint's URL: http or https with a host; inside the network (a private address or
/// `localhost` written out) only when allowed. Names are checked again, resolved, on
/// every attempt.
pub fn parse_endpoint_url(text: &str, allow_private_network: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|_| format!("url: '{}' is not a URL", super::echo::echo(text)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("url: an endpoint is an http:// or https:// URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "url: credentials do not belong in the URL; the signature authenticates each request"
                .into(),
        );
    }
    if !allow_private_network
        && url
            .host_str()
            .is_some_and(crate::net::outbound::names_inside)
    {
        return Err("url: the endpoint is inside the network (a private or loopback address); set webhook_delivery.allow_private_network = true to allow it".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn signs_as_the_standard_webhooks_reference_does() {
        // The example of the Standard Webhooks specification and its libraries.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_whsec_base64_and_never_debug_printed() {
        let (secret, text) = SigningSecret::generate();
        let parsed = SigningSecret::parse(text.expose_secret()).unwrap();
        assert_eq!(secret.sign("a", 1, "b"), parsed.sign("a", 1, "b"));
        assert_eq!(format!("{secret:?}"), "SigningSecret(..)");
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningSecret::parse("whsec_!!").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
    }

    #[test]
    fn filters_take_names_families_and_everything() {
        assert_eq!(EventFilter::parse(&[]).unwrap(), EventFilter::All);
        assert_eq!(EventFilter::parse(&["*".into()]).unwrap(), EventFilter::All);
        let family = EventFilter::parse(&["integration.*".into()]).unwrap();
        assert_eq!(family.names().len(), 5);
        let stored = family.stored();
        assert!(stored.starts_with(",integration.created,"));
        assert_eq!(EventFilter::from_stored(&stored), family);
        let err = EventFilter::parse(&["data_connection.made".into()]).unwrap_err();
        assert!(err.contains("data_connection.created"), "{err}");
    }

    #[test]
    fn retries_double_with_jitter_up_to_the_cap_and_stop_at_the_horizon() {
        let s = DeliverySettings {
            first_retry: Duration::from_secs(4),
            max_retry: Duration::from_secs(60),
            horizon: Duration::from_secs(300),
            ..DeliverySettings::default()
        };
        assert_eq!(s.retry_delay(1, 0.0), Duration::from_secs(2));
        assert_eq!(s.retry_delay(1, 1.0), Duration::from_secs(4));
        assert_eq!(s.retry_delay(3, 1.0), Duration::from_secs(16));
        assert_eq!(s.retry_delay(30, 1.0), Duration::from_secs(60));
        assert_eq!(s.retry_delay(u32::MAX, 0.5), Duration::from_secs(45));
        let t0 = Timestamp::from_millis(1_000_000);
        assert_eq!(
            s.after_failure(1, t0, t0, 1.0),
            AfterAttempt::RetryAt(Timestamp::from_millis(1_004_000))
        );
        let late = Timestamp::from_millis(t0.as_millis() + 290_000);
        assert_eq!(s.after_failure(8, t0, late, 0.0), AfterAttempt::GiveUp);
    }

    #[test]
    fn endpoint_urls_are_checked() {
        assert!(parse_endpoint_url("https://hooks.example.com/x", false).is_ok());
        assert!(parse_endpoint_url("ftp://hooks.example.com/x", false).is_err());
        assert!(parse_endpoint_url("http://127.0.0.1:9/x", false).is_err());
        assert!(parse_endpoint_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(parse_endpoint_url("https://u:p@hooks.example.com/", false).is_err());
    }
}
