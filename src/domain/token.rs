//! API tokens of the control plane.

/// Someone a token belongs to; shown as `created_by` on what the token creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
}

/// A global token may manage connections; a team token is limited to its team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    Global,
    Team(i64),
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: i64,
    pub scope: TokenScope,
    pub user: Option<User>,
}

/// Generated API tokens: 32 letters and digits from the CSPRNG.
pub const TOKEN_LEN: usize = 32;
/// Operator-provided tokens (bootstrap) must be at least this long.
pub const MIN_PROVIDED_TOKEN_LEN: usize = 16;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use super::ports::{ApiTokenInfo, Revoked, StoreError, TokenStore};
use crate::crypto::{self, CredentialHash, CredentialHasher};

/// How long a verified token is trusted without asking the store again. A revocation
/// clears it at once: here, and on every replica through the change feed (`forget`).
const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(30);
/// Bounds the cache; past it the cache starts over rather than growing.
const VERIFIED_TOKEN_CAPACITY: usize = 10_000;

/// Issues and checks API tokens; only their keyed hashes reach the store.
pub struct ApiTokens {
    store: Arc<dyn TokenStore>,
    hasher: CredentialHasher,
    /// Keyed by hash, so the cache holds no token either. Only successes are cached: a
    /// token created a moment ago is found in the store at once.
    verified: RwLock<HashMap<CredentialHash, (Principal, Instant)>>,
}

impl ApiTokens {
    pub fn new(store: Arc<dyn TokenStore>, hasher: CredentialHasher) -> Self {
        Self {
            store,
            hasher,
            verified: RwLock::default(),
        }
    }

    pub fn generate() -> SecretString {
        SecretString::from(crypto::random_alphanumeric(TOKEN_LEN))
    }

    #[tracing::instrument(skip_all)]
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>, StoreError> {
        let hash = self.hasher.hash(presented);
        if let Some((principal, at)) = self.verified.read().expect("not poisoned").get(&hash)
            && at.elapsed() < VERIFIED_TOKEN_TTL
        {
            return Ok(Some(principal.clone()));
        }
        let found = self.store.find_api_token(&hash).await?;
        if let Some(principal) = &found {
            let mut cache = self.verified.write().expect("not poisoned");
            if cache.len() >= VERIFIED_TOKEN_CAPACITY {
                cache.clear();
            }
            cache.insert(hash, (principal.clone(), Instant::now()));
        }
        Ok(found)
    }

    #[tracing::instrument(skip_all, fields(?scope))]
    pub async fn create(
        &self,
        scope: TokenScope,
        email: Option<&str>,
    ) -> Result<(i64, SecretString), StoreError> {
        let user = match email {
            Some(e) => Some(self.store.ensure_user(e).await?),
            None => None,
        };
        let token = Self::generate();
        let id = self
            .store
            .insert_api_token(
                &self.hasher.hash(token.expose_secret()),
                scope,
                user.as_ref(),
            )
            .await?;
        Ok((id, token))
    }

    /// Every token, oldest first; never a value or hash.
    pub async fn list(&self) -> Result<Vec<ApiTokenInfo>, StoreError> {
        self.store.api_tokens().await
    }

    /// Revokes a token: the store forgets it (and the console sessions it opened), and this
    /// process's cache forgets it before this returns; other processes' caches forget it
    /// when the change reaches them.
    #[tracing::instrument(skip(self))]
    pub async fn revoke(&self, id: i64) -> Result<Revoked, StoreError> {
        let revoked = self.store.delete_api_token(id).await?;
        if let Revoked::Done(_) = revoked {
            self.forget(id);
            tracing::info!(token_id = id, "api token revoked");
        }
        Ok(revoked)
    }

    /// Drops a token from the cache of verified tokens (it changed or is gone).
    pub fn forget(&self, token_id: i64) {
        self.verified
            .write()
            .expect("not poisoned")
            .retain(|_, (principal, _)| principal.token_id != token_id);
    }

    /// Drops every cached token: changes may have been missed.
    pub fn forget_all(&self) {
        self.verified.write().expect("not poisoned").clear();
    }

    /// Installs `token` as the first global token if the database has none yet.
    #[tracing::instrument(skip_all)]
    pub async fn install_first(&self, token: &SecretString) -> Result<bool, StoreError> {
        self.store
            .insert_first_api_token(&self.hasher.hash(token.expose_secret()))
            .await
    }
}
