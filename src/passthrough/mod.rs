//! The passthrough proxy, the data plane of integration connections: calls a connection's
//! own platform with its stored credential injected, streaming both ways, through the
//! guarded outbound client (timeouts, no redirects followed, no private addresses unless
//! the platform allows them).
//!
//! A call reads only the in-memory [`directory::VaultDirectory`] (secret → environment, key
//! → connection and sealed credential), never the database; what it observes about the
//! credential is written behind its answer. Only an OAuth2 token refresh, once per token
//! lifetime, touches the store (its lease keeps replicas from refreshing twice).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};

use crate::crypto::CredentialHasher;
use crate::domain::catalog::Platform;
use crate::domain::integration::{
    Environment, IntegrationConnection, IntegrationError, Integrations, OpenCredentials,
};
use crate::net::http::ReplayableBody;
use crate::net::outbound::{OutboundClient, OutboundError};

pub mod directory;
mod inject;
mod url;

use directory::VaultDirectory;
pub use url::target_url;

pub const CONNECTION_KEY_HEADER: &str = "x-pica-connection-key";

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("the path would leave the platform's base URL")]
    OutsidePlatform,
    #[error(transparent)]
    Outbound(#[from] OutboundError),
}

/// Request bodies up to this size are kept, so that an OAuth2 call the platform refuses
/// can be sent again once after a token refresh; larger ones stream and are not retried.
const RETRY_BODY_LIMIT: u64 = 1024 * 1024;

/// Why a passthrough call got no answer from the platform.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The vault secret is not one of ours.
    #[error("unknown vault secret")]
    Unauthorized,
    #[error(transparent)]
    Connection(#[from] IntegrationError),
    #[error(transparent)]
    Platform(#[from] PassthroughError),
    #[error("the request body could not be read")]
    ClientBody,
}

pub struct Passthrough {
    outbound: Arc<OutboundClient>,
    integrations: Arc<Integrations>,
    directory: Arc<VaultDirectory>,
    /// Hashes presented vault secrets as the store keeps them.
    secrets: CredentialHasher,
}

impl Passthrough {
    pub fn new(
        outbound: Arc<OutboundClient>,
        integrations: Arc<Integrations>,
        directory: Arc<VaultDirectory>,
        secrets: CredentialHasher,
    ) -> Self {
        Self {
            outbound,
            integrations,
            directory,
            secrets,
        }
    }

    /// The environment a presented vault secret opens, from the snapshot.
    fn environment_of(&self, secret: &str) -> Option<Environment> {
        let claimed = Environment::of_secret(secret)?;
        self.directory
            .environment_of(&self.secrets.hash(secret))
            .filter(|env| *env == claimed)
    }

    /// A passthrough call on the connection `key` names, with the `secret` presented: its
    /// credential injected (an expired OAuth2 token refreshed first), and what the platform
    /// says recorded on the connection. An OAuth2 call the platform refuses with 401 is
    /// retried once with a refreshed token when its body could be kept.
    pub async fn forward(
        &self,
        secret: &str,
        key: &str,
        path: &str,
        query: Option<&str>,
        request: Request<Body>,
    ) -> Result<Response<Body>, ForwardError> {
        let environment = self
            .environment_of(secret)
            .ok_or(ForwardError::Unauthorized)?;
        let linked = self
            .directory
            .connection(environment, key)
            .ok_or(IntegrationError::NotFound)?;
        let call = self.integrations.open_for_call(&linked).await?;
        let (connection, platform) = (&call.connection, call.platform);
        if !platform.auth.is_oauth2() {
            let response = self
                .call(platform, &call.credentials, path, query, request)
                .await?;
            self.observe(connection, &response);
            return Ok(response);
        }
        let (parts, body) = request.into_parts();
        let mut body = ReplayableBody::read(body, RETRY_BODY_LIMIT)
            .await
            .map_err(|_| ForwardError::ClientBody)?;
        let again = |body: Body| {
            let mut request = Request::new(body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.headers_mut() = parts.headers.clone();
            request
        };
        let first_body = body.take_body().unwrap_or_default();
        let first = self
            .call(platform, &call.credentials, path, query, again(first_body))
            .await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            self.observe(connection, &first);
            return Ok(first);
        }
        // The token was refused before its expiry: refresh (once, however many calls ask)
        // and retry. A refresh that fails has already recorded why on the connection.
        let (fresh, credentials) = match self.integrations.refresh_rejected(connection).await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(connection_id = %connection.id, error = %e, "refresh after a 401 failed");
                return Ok(first);
            }
        };
        let Some(retry_body) = body.take_body() else {
            // The body streamed already; the next call will carry the fresh token.
            return Ok(first);
        };
        let retry = self
            .call(platform, &credentials, path, query, again(retry_body))
            .await?;
        self.observe(&fresh, &retry);
        Ok(retry)
    }

    /// Records what the platform's answer says about the credential: in the snapshot at
    /// once (the next call sees it), in the store behind the answer.
    fn observe(&self, connection: &IntegrationConnection, response: &Response<Body>) {
        if let Some(state) = self
            .integrations
            .record_call(connection, response.status().as_u16())
        {
            self.directory.observe_state(&connection.id, state);
        }
    }

    /// Sends `request` (method, headers and body of the client's call) to `path` on the
    /// platform with the credential injected. Redirects come back as they are.
    async fn call(
        &self,
        platform: &Platform,
        credentials: &OpenCredentials,
        path: &str,
        query: Option<&str>,
        request: Request<Body>,
    ) -> Result<Response<Body>, PassthroughError> {
        let mut url = target_url(&platform.base_url, path, query)?;
        let (mut parts, body) = request.into_parts();
        inject::outbound_headers(&mut parts.headers);
        inject::inject(&platform.auth, credentials, &mut parts.headers, &mut url);
        parts.uri = url
            .as_str()
            .parse()
            .map_err(|_| PassthroughError::OutsidePlatform)?;
        parts.version = axum::http::Version::HTTP_11;
        let mut response = self
            .outbound
            .send(
                platform.allow_private_network,
                &url,
                Request::from_parts(parts, body),
            )
            .await?;
        inject::scrub_echoed(response.headers_mut(), credentials);
        Ok(response)
    }
}
