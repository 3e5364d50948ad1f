//! The operator console's sign-ins: a server-side session per browser, opened with an API
//! token or a vault secret and acting as it. The browser holds only the session's random
//! token (in an HttpOnly cookie); the store holds its keyed hash. Forms carry a CSRF token
//! derived from the session's token, so no page of another site can post as the operator.
//! A new secret made through the console (a connection's password, a token) is kept
//! sealed in the session until the page that shows it once is read.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::integration::{Environment, VaultSecrets};
use super::ports::{ConsoleSessionStore, StoreError};
use super::token::{ApiTokens, Principal};
use crate::crypto::{self, CredentialHasher, Sealer};

/// Random characters of a session's token: 256 bits and a little more.
const SESSION_TOKEN_LEN: usize = 43;
/// A value kept to be shown once is not shown after this long.
const REVEAL_TTL: Duration = Duration::from_secs(600);

/// Who a console session acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleActor {
    /// An API token: global, or one team's.
    Token(Principal),
    /// A vault secret: one environment's integration connections.
    Vault {
        secret_id: i64,
        environment: Environment,
    },
}

/// What a stored session points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleActorRef {
    ApiToken(i64),
    VaultSecret(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id: String,
    pub actor: ConsoleActor,
    /// Microseconds since the Unix epoch.
    pub expires_at: i64,
}

/// A new secret to show once, with what it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevealKind {
    DataConnectionPassword,
    ApiToken,
    VaultSecret,
    ConnectLink,
}

impl RevealKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::DataConnectionPassword => "data_connection_password",
            Self::ApiToken => "api_token",
            Self::VaultSecret => "vault_secret",
            Self::ConnectLink => "connect_link",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::DataConnectionPassword,
            Self::ApiToken,
            Self::VaultSecret,
            Self::ConnectLink,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

pub struct Reveal {
    pub kind: RevealKind,
    /// What the secret belongs to: a connection's or token's id.
    pub subject: String,
    pub secret: SecretString,
}

impl std::fmt::Debug for Reveal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reveal")
            .field("kind", &self.kind)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("this is not a valid API token or vault secret")]
    BadCredential,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct ConsoleSessions {
    store: Arc<dyn ConsoleSessionStore>,
    tokens: Arc<ApiTokens>,
    secrets: Arc<VaultSecrets>,
    session_hasher: CredentialHasher,
    csrf_hasher: CredentialHasher,
    sealer: Arc<Sealer>,
    ttl: Duration,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl ConsoleSessions {
    /// `hasher_root` is the credential-hash key; the session and CSRF hashers derive from
    /// it under their own purposes.
    pub fn new(
        store: Arc<dyn ConsoleSessionStore>,
        tokens: Arc<ApiTokens>,
        secrets: Arc<VaultSecrets>,
        session_hasher: CredentialHasher,
        csrf_hasher: CredentialHasher,
        sealer: Arc<Sealer>,
        ttl: Duration,
    ) -> Self {
        Self {
            store,
            tokens,
            secrets,
            session_hasher,
            csrf_hasher,
            sealer,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for whoever holds `presented` (an API token, or a vault secret by
    /// its `sk_` prefix); returns the session's token for the cookie.
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(
        &self,
        presented: &str,
    ) -> Result<(SecretString, ConsoleActor), ConsoleError> {
        let presented = presented.trim();
        let signed_in = if Environment::of_secret(presented).is_some() {
            let secret = self
                .secrets
                .identify(presented)
                .await?
                .ok_or(ConsoleError::BadCredential)?;
            ConsoleActor::Vault {
                secret_id: secret.id,
                environment: secret.environment,
            }
        } else {
            ConsoleActor::Token(
                self.tokens
                    .authenticate(presented)
                    .await?
                    .ok_or(ConsoleError::BadCredential)?,
            )
        };
        let actor = match &signed_in {
            ConsoleActor::Token(p) => ConsoleActorRef::ApiToken(p.token_id),
            ConsoleActor::Vault { secret_id, .. } => ConsoleActorRef::VaultSecret(*secret_id),
        };
        let token = SecretString::from(crypto::random_alphanumeric(SESSION_TOKEN_LEN));
        let now = now_micros();
        let expires_at = now + self.ttl.as_micros() as i64;
        let id = uuid::Uuid::new_v4().to_string();
        self.store
            .insert_console_session(
                &id,
                &self.session_hasher.hash(token.expose_secret()),
                actor,
                now,
                expires_at,
            )
            .await?;
        tracing::info!(session_id = %id, ?actor, "console session opened");
        Ok((token, signed_in))
    }

    /// The live session a cookie's token opens.
    pub async fn authenticate(&self, token: &str) -> Result<Option<ConsoleSession>, StoreError> {
        if token.len() != SESSION_TOKEN_LEN {
            return Ok(None);
        }
        self.store
            .console_session_by_token(&self.session_hasher.hash(token), now_micros())
            .await
    }

    /// The CSRF token of the session this cookie token opens: what its forms carry.
    pub fn csrf_token(&self, session_token: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.csrf_hasher.hash(session_token))
    }

    /// Whether a form's CSRF token is this session's, compared in constant time.
    pub fn csrf_matches(&self, session_token: &str, presented: &str) -> bool {
        let expected = self.csrf_token(session_token);
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }

    pub async fn sign_out(&self, session: &ConsoleSession) -> Result<(), StoreError> {
        self.store.delete_console_session(&session.id).await?;
        tracing::info!(session_id = %session.id, "console session closed");
        Ok(())
    }

    fn reveal_aad(session_id: &str) -> Vec<u8> {
        format!("switchboard/console-reveal/v1:{session_id}").into_bytes()
    }

    /// Keeps `reveal` sealed in the session for the page that shows it once.
    pub async fn keep_reveal(
        &self,
        session: &ConsoleSession,
        reveal: &Reveal,
    ) -> Result<(), StoreError> {
        // kind NUL subject NUL created-at NUL secret; only ids and a number before the secret.
        let mut plain = Zeroizing::new(Vec::new());
        plain.extend_from_slice(reveal.kind.as_str().as_bytes());
        plain.push(0);
        plain.extend_from_slice(reveal.subject.as_bytes());
        plain.push(0);
        plain.extend_from_slice(now_micros().to_string().as_bytes());
        plain.push(0);
        plain.extend_from_slice(reveal.secret.expose_secret().as_bytes());
        let sealed = self.sealer.seal(&plain, &Self::reveal_aad(&session.id));
        self.store.set_console_reveal(&session.id, &sealed).await
    }

    /// The kept reveal, if it is still fresh; it is gone from the store either way.
    pub async fn take_reveal(
        &self,
        session: &ConsoleSession,
    ) -> Result<Option<Reveal>, StoreError> {
        let Some(sealed) = self.store.take_console_reveal(&session.id).await? else {
            return Ok(None);
        };
        // Sealed under a key rotated away since, or damaged: as good as gone.
        let Ok(plain) = self.sealer.open(&sealed, &Self::reveal_aad(&session.id)) else {
            tracing::warn!(session_id = %session.id, "a kept console reveal could not be opened");
            return Ok(None);
        };
        let mut parts = plain.splitn(4, |b| *b == 0);
        let (Some(kind), Some(subject), Some(at), Some(secret)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let kind = std::str::from_utf8(kind).ok().and_then(RevealKind::parse);
        let at = std::str::from_utf8(at)
            .ok()
            .and_then(|a| a.parse::<i64>().ok());
        let (Some(kind), Some(at), Ok(subject), Ok(secret)) = (
            kind,
            at,
            std::str::from_utf8(subject),
            std::str::from_utf8(secret),
        ) else {
            return Ok(None);
        };
        if now_micros() - at > REVEAL_TTL.as_micros() as i64 {
            return Ok(None);
        }
        Ok(Some(Reveal {
            kind,
            subject: subject.to_owned(),
            secret: SecretString::from(secret.to_owned()),
        }))
    }

    /// The kept reveal if it is this `kind` for this `subject`; another one is kept for
    /// the page it belongs to.
    pub async fn take_reveal_for(
        &self,
        session: &ConsoleSession,
        kind: RevealKind,
        subject: &str,
    ) -> Result<Option<Reveal>, StoreError> {
        match self.take_reveal(session).await? {
            Some(r) if r.kind == kind && r.subject == subject => Ok(Some(r)),
            Some(other) => {
                self.keep_reveal(session, &other).await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Forgets expired sessions; returns how many.
    pub async fn clean_up(&self) -> Result<u64, StoreError> {
        self.store
            .delete_console_sessions_expired_before(now_micros())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reveal_kinds_round_trip() {
        for kind in [
            RevealKind::DataConnectionPassword,
            RevealKind::ApiToken,
            RevealKind::VaultSecret,
            RevealKind::ConnectLink,
        ] {
            assert_eq!(RevealKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(RevealKind::parse("nope"), None);
    }

    #[test]
    fn a_reveal_never_debugs_its_secret() {
        let reveal = Reveal {
            kind: RevealKind::ApiToken,
            subject: "7".into(),
            secret: SecretString::from("hunter2-very-secret".to_owned()),
        };
        assert!(!format!("{reveal:?}").contains("hunter2"));
    }
}
