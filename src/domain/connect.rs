//! Connect sessions: a short-lived, single-use link a backend hands to its end user, who
//! follows it to link an account: an OAuth2 consent (authorization code with PKCE, RFC 6749
//! section 4.1 and RFC 7636) or an API key typed into a form. The result is stored exactly
//! like a created connection; a session may instead renew an existing connection's
//! credential in place (reconnect).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use super::catalog::{AuthMethod, Platform};
use super::echo::echo;
use super::integration::{
    ConnectionState, CreateIntegration, Environment, IdentityType, IntegrationConnection,
    IntegrationError, Integrations, OpenCredentials, validate_identity, validate_name,
    validate_tags,
};
use super::oauth::{TokenEndpoint, TokenError, micros};
use super::ports::{ConnectSessionStore, StoreError};
use crate::crypto::{self, CredentialHash, CredentialHasher, Sealer};

/// How long a session's link lives unless configured otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// Finished and expired sessions are kept this long, so their status can still be read.
pub const SESSION_RETENTION: Duration = Duration::from_secs(24 * 3600);
const TOKEN_RANDOM_LEN: usize = 43;
const STATE_RANDOM_LEN: usize = 43;
/// RFC 7636 section 4.1: 43 to 128 unreserved characters.
const VERIFIER_LEN: usize = 64;
pub const MAX_SESSION_PLATFORMS: usize = 64;

#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub session_ttl: Duration,
    /// Origins a session's `returnUrl` may point at; empty: no `returnUrl` is accepted.
    pub allowed_return_origins: Vec<url::Origin>,
    /// Where this service is reached: the link and the OAuth2 redirect URI are made from it.
    pub public_url: Url,
}

/// A session's progress as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredStatus {
    Pending,
    /// One request claimed it (a form submitted, a callback arrived) and is finishing it.
    Completing,
    Completed,
    Failed,
}

impl StoredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completing => "completing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "completing" => Some(Self::Completing),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A session's progress as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Pending,
    Completed,
    Expired,
    Failed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }
}

/// An OAuth2 consent under way: what the callback checks and needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingConsent {
    pub platform: String,
    pub state_hash: CredentialHash,
    /// The PKCE verifier, sealed to the session.
    pub sealed_verifier: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSession {
    pub id: String,
    pub environment: Environment,
    pub identity: String,
    pub identity_type: IdentityType,
    /// The platforms offered; empty: every platform of the catalog.
    pub platforms: Vec<String>,
    pub tags: Vec<String>,
    pub name: Option<String>,
    /// The connection whose credential the session renews.
    pub reconnect_key: Option<String>,
    pub return_url: Option<String>,
    pub status: StoredStatus,
    /// The connection made or renewed, once completed.
    pub connection_key: Option<String>,
    pub error: Option<String>,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    pub expires_at: i64,
    pub consent: Option<PendingConsent>,
}

impl ConnectSession {
    pub fn status_at(&self, now: i64) -> SessionStatus {
        match self.status {
            StoredStatus::Completed => SessionStatus::Completed,
            StoredStatus::Failed => SessionStatus::Failed,
            _ if now >= self.expires_at => SessionStatus::Expired,
            StoredStatus::Pending | StoredStatus::Completing => SessionStatus::Pending,
        }
    }

    fn offers(&self, platform: &str) -> bool {
        self.platforms.is_empty() || self.platforms.iter().any(|p| p == platform)
    }
}

/// A create request, parsed at the edge.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub identity: String,
    pub identity_type: IdentityType,
    pub platforms: Vec<String>,
    pub tags: Vec<String>,
    pub name: Option<String>,
    pub reconnect_key: Option<String>,
    pub return_url: Option<String>,
}

/// A session just made: the link's token is shown once, here.
pub struct CreatedSession {
    pub token: SecretString,
    pub url: String,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{message}")]
    Invalid {
        fields: Vec<String>,
        message: String,
    },
    /// No such session in this environment (or no such link).
    #[error("connect session not found")]
    NotFound,
    #[error("this link has expired; ask for a new one")]
    Expired,
    /// Completed, failed, or being finished by another request.
    #[error("this link has already been used")]
    Used,
    /// The OAuth2 state is unknown, altered or replayed.
    #[error("The sign-in did not match this link; start again from the link")]
    StateMismatch,
    /// The provider refused, or the code could not be exchanged; the session failed.
    #[error("{0}")]
    Provider(String),
    #[error(transparent)]
    Integration(IntegrationError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IntegrationError> for ConnectError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::Invalid { fields, message } => Self::Invalid { fields, message },
            IntegrationError::Store(e) => Self::Store(e),
            e => Self::Integration(e),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ConnectError {
    ConnectError::Invalid {
        fields: vec![field.to_owned()],
        message: message.into(),
    }
}

/// What the connect page shows.
pub struct PageView<'a> {
    pub session: ConnectSession,
    pub platforms: Vec<&'a Platform>,
}

/// How a session ended for the person who followed the link.
#[derive(Debug, Clone)]
pub struct Finished {
    pub session_id: String,
    /// The platform's name, as the page says it.
    pub platform_name: String,
    /// Where to send them, `connectionKey` and `status` added.
    pub redirect: Option<Url>,
}

/// The callback's query, as the provider sent it.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<SecretString>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What to do after a failed callback: the page says why; the session (if known) failed.
#[derive(Debug)]
pub struct CallbackFailure {
    pub error: ConnectError,
    pub redirect: Option<Url>,
}

pub struct ConnectSessions {
    store: Arc<dyn ConnectSessionStore>,
    integrations: Arc<Integrations>,
    tokens: Arc<dyn TokenEndpoint>,
    hasher: CredentialHasher,
    sealer: Arc<Sealer>,
    settings: ConnectSettings,
    default_token_lifetime: Duration,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// RFC 7636 section 4.2, S256: BASE64URL(SHA256(verifier)), without padding.
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn verifier_aad(session_id: &str) -> Vec<u8> {
    format!("connect-session-verifier|{session_id}").into_bytes()
}

/// The state parameter: the session's id (so the callback finds it) and a secret part
/// (so nobody else can make one).
pub fn split_state(state: &str) -> Option<&str> {
    let (id, secret) = state.split_once('.')?;
    (uuid::Uuid::try_parse(id).is_ok() && !secret.is_empty()).then_some(id)
}

impl ConnectSessions {
    pub fn new(
        store: Arc<dyn ConnectSessionStore>,
        integrations: Arc<Integrations>,
        tokens: Arc<dyn TokenEndpoint>,
        hasher: CredentialHasher,
        sealer: Arc<Sealer>,
        settings: ConnectSettings,
        default_token_lifetime: Duration,
    ) -> Self {
        Self {
            store,
            integrations,
            tokens,
            hasher,
            sealer,
            settings,
            default_token_lifetime,
        }
    }

    /// The OAuth2 redirect URI every provider is registered with.
    pub fn redirect_uri(&self) -> String {
        format!(
            "{}/v1/connect/callback",
            self.settings.public_url.as_str().trim_end_matches('/')
        )
    }

    fn link(&self, token: &str) -> String {
        format!(
            "{}/connect/{token}",
            self.settings.public_url.as_str().trim_end_matches('/')
        )
    }

    pub async fn create(
        &self,
        environment: Environment,
        request: NewSession,
    ) -> Result<CreatedSession, ConnectError> {
        // Checked as a created connection's are: the session makes one.
        validate_identity(&request.identity)?;
        validate_tags(&request.tags)?;
        validate_name(&request.name)?;
        if request.platforms.len() > MAX_SESSION_PLATFORMS {
            return Err(invalid(
                "platforms",
                format!("at most {MAX_SESSION_PLATFORMS} platforms"),
            ));
        }
        let mut platforms = Vec::new();
        for key in &request.platforms {
            if self.integrations.platform(key).is_none() {
                return Err(invalid(
                    "platforms",
                    format!("platform '{}' is not in the connector catalog", echo(key)),
                ));
            }
            if !platforms.contains(key) {
                platforms.push(key.clone());
            }
        }
        if let Some(key) = &request.reconnect_key {
            let existing = self
                .integrations
                .by_key(environment, key)
                .await?
                .ok_or_else(|| {
                    invalid(
                        "connectionKey",
                        "connectionKey names no connection of this environment",
                    )
                })?;
            if !platforms.is_empty() && platforms != [existing.platform.clone()] {
                return Err(invalid(
                    "platforms",
                    format!(
                        "a reconnect session offers only its connection's platform, {}",
                        existing.platform
                    ),
                ));
            }
            platforms = vec![existing.platform];
        }
        if let Some(url) = &request.return_url {
            let parsed =
                Url::parse(url).map_err(|_| invalid("returnUrl", "returnUrl is not a URL"))?;
            if !self
                .settings
                .allowed_return_origins
                .contains(&parsed.origin())
            {
                return Err(invalid(
                    "returnUrl",
                    "returnUrl's origin is not in [connect] allowed_return_origins",
                ));
            }
        }
        let token = SecretString::from(format!(
            "cs_{}",
            crypto::random_alphanumeric(TOKEN_RANDOM_LEN)
        ));
        let now = now_micros();
        let session = ConnectSession {
            id: uuid::Uuid::new_v4().to_string(),
            environment,
            identity: request.identity,
            identity_type: request.identity_type,
            platforms,
            tags: request.tags,
            name: request.name,
            reconnect_key: request.reconnect_key,
            return_url: request.return_url,
            status: StoredStatus::Pending,
            connection_key: None,
            error: None,
            created_at: now,
            expires_at: now + micros(self.settings.session_ttl),
            consent: None,
        };
        self.store
            .insert_connect_session(&session, &self.hasher.hash(token.expose_secret()))
            .await?;
        tracing::info!(session_id = %session.id, environment = environment.as_str(), "connect session created");
        Ok(CreatedSession {
            url: self.link(token.expose_secret()),
            expires_at: session.expires_at,
            token,
        })
    }

    async fn by_token(&self, token: &str) -> Result<ConnectSession, ConnectError> {
        if !token.starts_with("cs_") {
            return Err(ConnectError::NotFound);
        }
        self.store
            .connect_session_by_token(&self.hasher.hash(token))
            .await?
            .ok_or(ConnectError::NotFound)
    }

    /// A session as its backend reads it.
    pub async fn status(
        &self,
        environment: Environment,
        token: &str,
    ) -> Result<(ConnectSession, SessionStatus), ConnectError> {
        let session = self.by_token(token).await?;
        if session.environment != environment {
            return Err(ConnectError::NotFound);
        }
        let status = session.status_at(now_micros());
        Ok((session, status))
    }

    /// A session someone may still act on: pending and unexpired.
    async fn open(&self, token: &str) -> Result<ConnectSession, ConnectError> {
        let session = self.by_token(token).await?;
        match session.status_at(now_micros()) {
            SessionStatus::Pending if session.status == StoredStatus::Pending => Ok(session),
            SessionStatus::Pending | SessionStatus::Completed | SessionStatus::Failed => {
                Err(ConnectError::Used)
            }
            SessionStatus::Expired => Err(ConnectError::Expired),
        }
    }

    /// What the connect page offers.
    pub async fn page(&self, token: &str) -> Result<PageView<'_>, ConnectError> {
        let session = self.open(token).await?;
        let platforms = self
            .integrations
            .catalog()
            .platforms()
            .iter()
            .filter(|p| session.offers(&p.key))
            .collect();
        Ok(PageView { session, platforms })
    }

    fn offered<'a>(
        &'a self,
        session: &ConnectSession,
        platform: &str,
    ) -> Result<&'a Platform, ConnectError> {
        self.integrations
            .platform(platform)
            .filter(|_| session.offers(platform))
            .ok_or_else(|| invalid("platform", "This link does not offer that platform"))
    }

    /// An API key (or username and password) typed into the page.
    pub async fn submit_credentials(
        &self,
        token: &str,
        platform: &str,
        credentials: OpenCredentials,
    ) -> Result<Finished, ConnectError> {
        let session = self.open(token).await?;
        let platform = self.offered(&session, platform)?;
        if platform.auth.is_oauth2() {
            return Err(invalid(
                "platform",
                "This platform is linked by signing in, not with a form",
            ));
        }
        // Checked before the session is claimed: a typo leaves the link usable.
        Integrations::check_credentials(platform, &credentials)?;
        if !self
            .store
            .claim_connect_session(&session.id, None, now_micros())
            .await?
        {
            return Err(ConnectError::Used);
        }
        self.finish(&session, platform, credentials, ConnectionState::Unknown)
            .await
    }

    /// Stores or renews the connection, then ends the session either way.
    async fn finish(
        &self,
        session: &ConnectSession,
        platform: &Platform,
        credentials: OpenCredentials,
        state: ConnectionState,
    ) -> Result<Finished, ConnectError> {
        let outcome: Result<IntegrationConnection, IntegrationError> = match &session.reconnect_key
        {
            Some(key) => {
                self.integrations
                    .renew_credentials(session.environment, key, credentials, state)
                    .await
            }
            None => {
                self.integrations
                    .create(
                        session.environment,
                        CreateIntegration {
                            platform: platform.key.clone(),
                            identity: session.identity.clone(),
                            identity_type: session.identity_type,
                            name: session.name.clone(),
                            tags: session.tags.clone(),
                            active: true,
                            credentials,
                            state,
                        },
                    )
                    .await
            }
        };
        let now = now_micros();
        match outcome {
            Ok(connection) => {
                self.store
                    .finish_connect_session(
                        &session.id,
                        StoredStatus::Completed,
                        Some(&connection.key),
                        Some(&platform.key),
                        None,
                        now,
                    )
                    .await?;
                tracing::info!(session_id = %session.id, connection_id = %connection.id, "connect session completed");
                Ok(Finished {
                    session_id: session.id.clone(),
                    redirect: self.return_to(session, Some(&connection.key), "completed"),
                    platform_name: platform.name.clone(),
                })
            }
            Err(e) => {
                let error = e.to_string();
                self.fail(session, &error).await;
                Err(e.into())
            }
        }
    }

    /// Ends a session as failed; a failure to record it is logged (the page still says
    /// what went wrong, and the session expires anyway).
    async fn fail(&self, session: &ConnectSession, error: &str) {
        tracing::info!(session_id = %session.id, error, "connect session failed");
        if let Err(e) = self
            .store
            .finish_connect_session(
                &session.id,
                StoredStatus::Failed,
                None,
                session.consent.as_ref().map(|c| c.platform.as_str()),
                Some(error),
                now_micros(),
            )
            .await
        {
            tracing::warn!(session_id = %session.id, error = %e, "could not record a failed connect session");
        }
    }

    fn return_to(
        &self,
        session: &ConnectSession,
        connection_key: Option<&str>,
        status: &str,
    ) -> Option<Url> {
        let mut url = Url::parse(session.return_url.as_deref()?).ok()?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(key) = connection_key {
                query.append_pair("connectionKey", key);
            }
            query.append_pair("status", status);
        }
        Some(url)
    }

    /// Starts an OAuth2 consent: the provider's authorization URL to send the person to.
    /// Where to send the person to consent, and the session's id.
    pub async fn begin_consent(
        &self,
        token: &str,
        platform: &str,
    ) -> Result<(Url, String), ConnectError> {
        let session = self.open(token).await?;
        let platform = self.offered(&session, platform)?;
        let AuthMethod::OAuth2 {
            client_id,
            scopes,
            authorize_url: Some(authorize_url),
            extra_authorize_params,
            scope_separator,
            ..
        } = &platform.auth
        else {
            return Err(invalid(
                "platform",
                "This platform is not linked by signing in (it has no authorize_url)",
            ));
        };
        let state = SecretString::from(format!(
            "{}.{}",
            session.id,
            crypto::random_alphanumeric(STATE_RANDOM_LEN)
        ));
        let verifier = SecretString::from(crypto::random_alphanumeric(VERIFIER_LEN));
        let consent = PendingConsent {
            platform: platform.key.clone(),
            state_hash: self.hasher.hash(state.expose_secret()),
            sealed_verifier: self.sealer.seal(
                verifier.expose_secret().as_bytes(),
                &verifier_aad(&session.id),
            ),
        };
        if !self
            .store
            .begin_connect_consent(&session.id, &consent, now_micros())
            .await?
        {
            return Err(ConnectError::Used);
        }
        let mut url = authorize_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", &self.redirect_uri());
            if !scopes.is_empty() {
                query.append_pair("scope", &scopes.join(scope_separator));
            }
            query
                .append_pair("state", state.expose_secret())
                .append_pair("code_challenge", &code_challenge(verifier.expose_secret()))
                .append_pair("code_challenge_method", "S256");
            for (name, value) in extra_authorize_params {
                query.append_pair(name, value);
            }
        }
        Ok((url, session.id))
    }

    /// The provider sent the person back: exchange the code, store the connection.
    pub async fn callback(&self, params: CallbackParams) -> Result<Finished, CallbackFailure> {
        let unmatched = || CallbackFailure {
            error: ConnectError::StateMismatch,
            redirect: None,
        };
        let state = params.state.as_deref().ok_or_else(unmatched)?;
        let id = split_state(state).ok_or_else(unmatched)?;
        let session = match self.store.connect_session(id).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(unmatched()),
            Err(e) => {
                return Err(CallbackFailure {
                    error: e.into(),
                    redirect: None,
                });
            }
        };
        let failed = |error: ConnectError| CallbackFailure {
            redirect: self.return_to(&session, None, "failed"),
            error,
        };
        let now = now_micros();
        match session.status_at(now) {
            SessionStatus::Completed | SessionStatus::Failed => {
                return Err(CallbackFailure {
                    error: ConnectError::Used,
                    redirect: None,
                });
            }
            SessionStatus::Expired => {
                self.fail(&session, "The link expired before the sign-in finished")
                    .await;
                return Err(failed(ConnectError::Expired));
            }
            SessionStatus::Pending if session.status == StoredStatus::Completing => {
                return Err(CallbackFailure {
                    error: ConnectError::Used,
                    redirect: None,
                });
            }
            SessionStatus::Pending => {}
        }
        let presented = self.hasher.hash(state);
        let Some(consent) = session
            .consent
            .clone()
            .filter(|c| bool::from(c.state_hash.ct_eq(&presented)))
        else {
            // Someone holds the session's id but not its state: the sign-in cannot be
            // trusted, and the link is spent.
            self.fail(&session, "The sign-in's state did not match")
                .await;
            return Err(failed(ConnectError::StateMismatch));
        };
        // One callback per consent: whoever claims it finishes it.
        match self
            .store
            .claim_connect_session(&session.id, Some(&presented), now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(CallbackFailure {
                    error: ConnectError::Used,
                    redirect: None,
                });
            }
            Err(e) => return Err(failed(e.into())),
        }
        if let Some(error) = &params.error {
            let message = match &params.error_description {
                Some(d) => format!("The provider refused: {} ({})", echo(error), echo(d)),
                None => format!("The provider refused: {}", echo(error)),
            };
            self.fail(&session, &message).await;
            return Err(failed(ConnectError::Provider(message)));
        }
        let Some(code) = &params.code else {
            let message = "The provider sent neither a code nor an error".to_owned();
            self.fail(&session, &message).await;
            return Err(failed(ConnectError::Provider(message)));
        };
        let platform = match self.integrations.platform(&consent.platform) {
            Some(p) => p,
            None => {
                let message = "The platform is no longer in the catalog".to_owned();
                self.fail(&session, &message).await;
                return Err(failed(ConnectError::Provider(message)));
            }
        };
        let credentials = match self.exchange(&session, &consent, platform, code).await {
            Ok(c) => c,
            Err(message) => {
                self.fail(&session, &message).await;
                return Err(failed(ConnectError::Provider(message)));
            }
        };
        self.finish(
            &session,
            platform,
            credentials,
            ConnectionState::Operational,
        )
        .await
        .map_err(failed)
    }

    /// The code for tokens, as the credential a connection stores.
    async fn exchange(
        &self,
        session: &ConnectSession,
        consent: &PendingConsent,
        platform: &Platform,
        code: &SecretString,
    ) -> Result<OpenCredentials, String> {
        let verifier = self
            .sealer
            .open(&consent.sealed_verifier, &verifier_aad(&session.id))
            .map_err(|_| "The sign-in's verifier cannot be opened".to_owned())?;
        let verifier = SecretString::from(
            String::from_utf8(verifier.to_vec())
                .map_err(|_| "The sign-in's verifier is corrupt".to_owned())?,
        );
        let grant = self
            .tokens
            .exchange_code(platform, code, &verifier, &self.redirect_uri())
            .await
            .map_err(|e| match e {
                TokenError::InvalidGrant(why) => {
                    format!(
                        "The provider did not accept the sign-in's code: {}",
                        echo(&why)
                    )
                }
                TokenError::Failed(why) => format!("The code could not be exchanged: {why}"),
            })?;
        let Some(refresh_token) = grant.refresh_token.clone() else {
            return Err(
                "The provider issued no refresh token, so the connection could not be kept fresh"
                    .into(),
            );
        };
        Ok(grant
            .into_credentials(refresh_token, now_micros(), self.default_token_lifetime)
            .0)
    }

    /// Forgets sessions expired longer ago than [`SESSION_RETENTION`].
    pub async fn clean_up(&self) -> Result<u64, StoreError> {
        self.store
            .delete_connect_sessions_expired_before(now_micros() - micros(SESSION_RETENTION))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_state_names_its_session_and_carries_a_secret() {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(split_state(&format!("{id}.abc")), Some(id.as_str()));
        assert_eq!(split_state(&format!("{id}.")), None);
        assert_eq!(split_state("not-a-uuid.abc"), None);
        assert_eq!(split_state("nodot"), None);
    }
}
