//! The audit log's HTTP side: a layer on every matched route that records each change it
//! answers (who, what, which target, the request id, the client address, the outcome) and
//! each refused authentication, and `GET /api/v1/audit-events` (in `betterstack`).
//!
//! Who is calling is learnt where it is checked: the extractors that authenticate put the
//! actor in the request's [`AuditSlot`], as does a handler that creates something (its id).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, State};
use axum::http::request::Parts;
use axum::http::{Method, Request};
use axum::response::Response;

use super::AppServices;
use crate::domain::audit::{Actor, ActorKind, AuditEvent, Outcome};
use crate::domain::token::Principal;

#[derive(Debug, Default)]
struct Note {
    actor: Option<Actor>,
    target: Option<String>,
    refused: bool,
}

/// What the extractors and handlers of one request tell the audit layer.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Note>>);

impl AuditSlot {
    pub fn actor(&self, actor: Actor) {
        self.0.lock().expect("not poisoned").actor = Some(actor);
    }

    pub fn target(&self, target: impl Into<String>) {
        self.0.lock().expect("not poisoned").target = Some(target.into());
    }

    /// The credential presented was refused (whatever status the answer has).
    pub fn refused(&self) {
        self.0.lock().expect("not poisoned").refused = true;
    }

    /// The slot of the request these parts belong to.
    pub fn of(parts: &Parts) -> Self {
        parts.extensions.get::<Self>().cloned().unwrap_or_default()
    }
}

/// A handler's way to the slot: never fails (a route outside the layer gets a spare).
impl<S: Send + Sync> FromRequestParts<S> for AuditSlot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

pub fn token_actor(principal: &Principal) -> Actor {
    Actor {
        kind: ActorKind::ApiToken,
        id: Some(principal.token_id),
        user: principal.user.as_ref().map(|u| u.email.clone()),
    }
}

pub fn secret_actor(secret_id: i64) -> Actor {
    Actor {
        kind: ActorKind::VaultSecret,
        id: Some(secret_id),
        user: None,
    }
}

/// The action a route's change is recorded as; `None` for reads.
fn action_of(method: &Method, route: &str) -> Option<&'static str> {
    let action = match (method.as_str(), route) {
        ("POST", "/api/v1/connections") => "data_connection.create",
        ("PATCH", "/api/v1/connections/{id}") => "data_connection.update",
        ("DELETE", "/api/v1/connections/{id}") => "data_connection.delete",
        ("POST", "/api/v1/connections/{id}/rotate-password") => "data_connection.rotate_password",
        ("POST", "/api/v1/webhooks") => "webhook_endpoint.create",
        ("DELETE", "/api/v1/webhooks/{id}") => "webhook_endpoint.delete",
        ("POST", "/v1/vault/connections") => "integration.create",
        ("PATCH", "/v1/vault/connections/{id}") => "integration.update",
        ("DELETE", "/v1/vault/connections/{id}") => "integration.delete",
        ("POST", "/v1/connect/sessions") => "connect_session.create",
        ("POST", "/connect/{token}/credentials") => "connect_session.submit_credentials",
        ("POST", "/connect/{token}/oauth") => "connect_session.begin_consent",
        ("GET", "/v1/connect/callback") => "connect_session.callback",
        ("POST", "/console/sign-in") => "console.sign_in",
        ("POST", "/console/sign-out") => "console.sign_out",
        ("POST", "/console/data-connections") => "data_connection.create",
        ("POST", "/console/data-connections/{id}/delete") => "data_connection.delete",
        ("POST", "/console/data-connections/{id}/rotate") => "data_connection.rotate_password",
        ("POST", "/console/data-connections/{id}/edit") => "data_connection.update",
        ("POST", "/console/vault/{id}") => "integration.update",
        ("POST", "/console/vault/{id}/delete") => "integration.delete",
        ("POST", "/console/vault/connect-link") => "connect_session.create",
        ("POST", "/console/tokens") => "api_token.create",
        ("POST", "/console/tokens/{id}/revoke") => "api_token.revoke",
        ("POST", "/console/secrets") => "vault_secret.create",
        ("POST", "/console/secrets/{id}/revoke") => "vault_secret.revoke",
        _ => return None,
    };
    Some(action)
}

/// The path's `{id}` segment, read where the route pattern has it.
fn path_id(route: &str, path: &str) -> Option<String> {
    let at = route.split('/').position(|s| s == "{id}")?;
    path.split('/').nth(at).map(str::to_owned)
}

/// Records what the request did once it is answered: a change before its answer leaves;
/// anything else (a refusal on any route, a rejected or failed change) queued for the next
/// batch. The layer on the router's audited routes.
pub async fn record(
    State(services): State<Arc<AppServices>>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let recording = Recording::begin(&mut req, route, peer);
    let response = next.run(req).await;
    recording.finish(&services, response).await
}

/// One request's audit record in the making: what it asked, taken before its handler runs.
pub struct Recording {
    method: Method,
    /// The pattern of the route it matched (`/api/v1/connections/{id}`).
    route: Option<MatchedPath>,
    uri: axum::http::Uri,
    request_id: Option<axum::http::HeaderValue>,
    peer: Option<IpAddr>,
    slot: Option<AuditSlot>,
}

impl Recording {
    /// Starts recording `req`, which matched `route` and came from `peer`, and gives its
    /// extractors and handler the slot they tell who is calling. Only cheap clones
    /// (reference counts) here: the passthrough's every call comes by; text is made only
    /// for a request that is recorded.
    pub fn begin(
        req: &mut Request<Body>,
        route: Option<MatchedPath>,
        peer: Option<IpAddr>,
    ) -> Self {
        let slot = AuditSlot::default();
        req.extensions_mut().insert(slot.clone());
        Self {
            slot: Some(slot),
            ..Self::without_slot(req, route, peer)
        }
    }

    /// As [`Recording::begin`], for a handler that tells the slot nothing (the
    /// passthrough's): its record has what the request and its answer say.
    pub fn without_slot<B>(
        req: &Request<B>,
        route: Option<MatchedPath>,
        peer: Option<IpAddr>,
    ) -> Self {
        Self {
            method: req.method().clone(),
            route,
            uri: req.uri().clone(),
            request_id: req.headers().get(&super::edge::REQUEST_ID).cloned(),
            peer,
            slot: None,
        }
    }

    /// Records what the request did, now that `response` answers it, and gives it back.
    pub async fn finish(self, services: &AppServices, response: Response) -> Response {
        let route = self.route.as_ref().map_or("", MatchedPath::as_str);
        let path = self.uri.path();
        let status = response.status().as_u16();
        let note = self
            .slot
            .map(|slot| std::mem::take(&mut *slot.0.lock().expect("not poisoned")))
            .unwrap_or_default();
        let outcome = if note.refused {
            Outcome::Refused
        } else {
            Outcome::of_status(status)
        };
        let action = action_of(&self.method, route);
        // Reads are recorded only when a credential was refused (401, or a caller the
        // extractor turned away).
        let refused_read = action.is_none() && (status == 401 || note.refused);
        if action.is_none() && !refused_read {
            return response;
        }
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let client_ip = self.peer.map(|ip| ip.to_canonical().to_string());
        let event = AuditEvent {
            target: note.target.or_else(|| path_id(route, path)).or_else(|| {
                // A refused read names what it tried to reach (without a link's token).
                refused_read.then(|| super::edge::loggable_path(path).into_owned())
            }),
            request_id,
            client_ip,
            status: Some(status),
            ..AuditEvent::now(
                note.actor.unwrap_or_else(Actor::anonymous),
                action.unwrap_or("access.refused"),
                outcome,
            )
        };
        // A change made is written before its answer leaves; what changed nothing (refused,
        // rejected, failed), which a client can repeat at any rate, goes with the next
        // batch.
        if outcome != Outcome::Success {
            services.audit.record_later(event);
        } else if let Err(e) = services.audit.record(event).await {
            // The change is made and its answer is due; the missing event is logged.
            tracing::error!(error = %e, action = action.unwrap_or("-"), "writing an audit event failed");
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_where_the_route_has_them() {
        assert_eq!(
            path_id(
                "/api/v1/connections/{id}/rotate-password",
                "/api/v1/connections/42/rotate-password"
            ),
            Some("42".into())
        );
        assert_eq!(path_id("/api/v1/connections", "/api/v1/connections"), None);
    }

    #[test]
    fn only_changes_have_actions() {
        assert_eq!(action_of(&Method::GET, "/api/v1/connections"), None);
        assert_eq!(
            action_of(&Method::PATCH, "/api/v1/connections/{id}"),
            Some("data_connection.update")
        );
    }
}
