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
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: i64,
    pub scope: TokenScope,
    pub user: Option<User>,
}

/// Generated API tokens: 32 letters and digits from the CSPRNG.
pub const TOKEN_LEN: usize = 32;
/// Operator-provided tokens (bootstrap) must be at least this long.
pub const MIN_PROVIDED_TOKEN_LEN: usize = 16;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::crypto::{self, CredentialHasher};
use crate::store::{Store, StoreError};

/// Issues and checks API tokens; only their keyed hashes reach the store.
pub struct ApiTokens {
    store: Arc<dyn Store>,
    hasher: CredentialHasher,
}

impl ApiTokens {
    pub fn new(store: Arc<dyn Store>, hasher: CredentialHasher) -> Self {
        Self { store, hasher }
    }

    pub fn generate() -> SecretString {
        SecretString::from(crypto::random_alphanumeric(TOKEN_LEN))
    }

    #[tracing::instrument(skip_all)]
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>, StoreError> {
        self.store
            .find_api_token(&self.hasher.hash(presented))
            .await
    }

    #[tracing::instrument(skip_all, fields(?scope))]
    pub async fn create(
        &self,
        scope: TokenScope,
        email: Option<&str>,
    ) -> Result<SecretString, StoreError> {
        let user = match email {
            Some(e) => Some(self.store.ensure_user(e).await?),
            None => None,
        };
        let token = Self::generate();
        self.store
            .insert_api_token(
                &self.hasher.hash(token.expose_secret()),
                scope,
                user.as_ref(),
            )
            .await?;
        Ok(token)
    }

    /// Installs `token` as the first global token if the database has none yet.
    #[tracing::instrument(skip_all)]
    pub async fn install_first(&self, token: &SecretString) -> Result<bool, StoreError> {
        self.store
            .insert_first_api_token(&self.hasher.hash(token.expose_secret()))
            .await
    }
}
