//! The ClickHouse HTTP gateway: authenticates issued credentials against the in-memory
//! snapshot and forwards the request, streaming both ways, to the region's ClickHouse as
//! the team's own upstream user. Team isolation is that user's rights in ClickHouse; the
//! gateway never reads the SQL.
//!
//! Which team serves a request: a connection scoped to one team uses that team. A
//! connection scoped to several (or all) teams uses the team whose databases contain the
//! request's `database` URL parameter (or `X-ClickHouse-Database` header); without one it
//! is refused with a message that says to name it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use ipnet::IpNet;
use secrecy::ExposeSecret;

use crate::config::GatewaySettings;
use crate::crypto::CredentialHasher;
use crate::domain::data_connection::{IssuedCredential, TeamScope};
use crate::domain::time::Timestamp;
use crate::domain::topology::{Team, Topology};
use crate::net::http::{ReplayableBody, strip_hop_by_hop};
use crate::net::pool::{Http1Pool, SendError};

pub mod auth;
pub mod directory;
pub mod doctor;
pub mod error;
pub mod limits;
mod metering;
mod query;
pub mod upstream;

use auth::{KEY_HEADER, USER_HEADER};
use directory::CredentialDirectory;
pub use error::GatewayError;
use limits::ConnectionLimits;
use query::QueryParams;
use upstream::{UpstreamIdentity, UpstreamPools};

/// Request bodies up to this size are read before forwarding, so that a node that
/// refuses the connection can be skipped for the next one. Larger bodies (big inserts)
/// stream straight to one node.
const REPLAYABLE_BODY_LIMIT: u64 = 1024 * 1024;
/// A refused request's body is read and dropped up to this size, within this time.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);
const QUOTA_HEADER: &str = "x-clickhouse-quota";

/// Kept-alive connections to the upstream nodes, `http://` and `https://` alike: each
/// serving thread's own, and one for the health checks and the doctor.
pub type UpstreamClient = Arc<Http1Pool<UpstreamConnector>>;
pub type UpstreamConnector = HttpsConnector<HttpConnector>;

/// How the gateway reaches the upstream nodes: their connect timeout, the system's CAs and
/// `gateway.upstream_ca_file` for `https://` ones.
pub fn upstream_connector(settings: &GatewaySettings) -> anyhow::Result<UpstreamConnector> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.upstream_connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let tls = crate::net::client_tls_config(settings.upstream_ca_file.as_deref())
        .map_err(|e| e.context("gateway.upstream_ca_file"))?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector))
}

/// A pool of connections of its own.
fn client_with(connector: UpstreamConnector) -> UpstreamClient {
    Http1Pool::new(connector, MAX_IDLE_PER_NODE, UPSTREAM_IDLE_TIMEOUT)
}

pub fn upstream_client(settings: &GatewaySettings) -> anyhow::Result<UpstreamClient> {
    upstream_connector(settings).map(client_with)
}

/// One serving thread's gateway: every request on its connections, whatever its path.
#[derive(Clone)]
pub struct Worker(Arc<WorkerState>);

impl crate::net::Handler for Worker {
    fn handle(
        &self,
        request: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + use<> {
        // Boxed: the future is kilobytes, and hyper moves it into place.
        Box::pin(handle(self.0.clone(), peer, request.map(Body::new)))
    }
}

/// What one serving thread of the gateway holds: the shared gateway, and the upstream
/// connections that stay on that thread.
struct WorkerState {
    gateway: Arc<Gateway>,
    upstreams: UpstreamClient,
}

/// Idle upstream connections kept per node and serving thread, and for how long.
const MAX_IDLE_PER_NODE: usize = 256;
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Gateway {
    directory: Arc<CredentialDirectory>,
    topology: Arc<Topology>,
    passwords: CredentialHasher,
    trusted_proxies: Vec<IpNet>,
    connector: UpstreamConnector,
    /// For health checks; requests use their worker's.
    client: UpstreamClient,
    response_timeout: Duration,
    health_check_interval: Duration,
    pools: Arc<UpstreamPools>,
    limits: ConnectionLimits,
    /// The organisation's login while no teams are configured.
    organisation: Option<UpstreamIdentity>,
    /// Each team's login, for the teams that have one.
    team_logins: HashMap<i64, UpstreamIdentity>,
    meters: metering::Meters,
    usage: Arc<crate::domain::usage::UsageMeter>,
}

impl Gateway {
    pub fn new(
        settings: &GatewaySettings,
        directory: Arc<CredentialDirectory>,
        topology: Arc<Topology>,
        passwords: CredentialHasher,
    ) -> anyhow::Result<Self> {
        let connector = upstream_connector(settings)?;
        let organisation = topology
            .organisation_user()
            .map(UpstreamIdentity::of)
            .transpose()?;
        let team_logins = topology
            .teams()
            .iter()
            .filter_map(|team| {
                let user = team.upstream_user.as_deref()?;
                Some(
                    UpstreamIdentity::new(user, team.upstream_password.as_ref())
                        .map(|login| (team.id, login)),
                )
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            pools: Arc::new(UpstreamPools::new(&topology)?),
            directory,
            topology,
            passwords,
            trusted_proxies: settings.trusted_proxies.clone(),
            client: client_with(connector.clone()),
            connector,
            response_timeout: settings.upstream_response_timeout,
            health_check_interval: settings.health_check_interval,
            limits: ConnectionLimits::new(
                settings.max_concurrent_queries_per_connection,
                settings.max_requests_per_minute_per_connection,
            ),
            organisation,
            team_logins,
            meters: metering::Meters::register(),
            usage: Arc::default(),
        })
    }

    /// The gateway's handler for one serving thread (see [`crate::net::serve_on_workers`]).
    pub fn worker(self: Arc<Self>) -> Worker {
        Worker(Arc::new(WorkerState {
            upstreams: client_with(self.connector.clone()),
            gateway: self,
        }))
    }

    /// What the gateway counts of each connection's use, for the store in batches.
    pub fn usage(&self) -> Arc<crate::domain::usage::UsageMeter> {
        self.usage.clone()
    }

    /// The upstream nodes' health as the checks last saw it.
    pub fn upstream_health(&self) -> Arc<dyn crate::domain::topology::UpstreamHealth> {
        self.pools.clone()
    }

    /// Pings every upstream node periodically; runs until dropped.
    pub fn health_checks(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.pools
            .clone()
            .check_health(self.client.clone(), self.health_check_interval)
    }

    /// Every refusal is the same answer; the reason is logged, never told.
    fn authenticate(
        &self,
        presented: &auth::Presented,
        client: IpAddr,
    ) -> Result<Arc<IssuedCredential>, GatewayError> {
        let refuse = |reason: &'static str| {
            metrics::counter!("switchboard_gateway_auth_refusals_total", "reason" => reason)
                .increment(1);
            GatewayError::AuthenticationFailed {
                user: presented.user.clone(),
                reason,
            }
        };
        let Some(credential) = self.directory.lookup(&presented.user) else {
            // Spend the same work as a real check, so timing does not tell users apart.
            let _ = self
                .passwords
                .verify(presented.password.expose_secret(), &[0; 32]);
            return Err(refuse("unknown_user"));
        };
        let password = presented.password.expose_secret();
        let current = self.passwords.verify(password, &credential.password_hash);
        // During a rotation's overlap the replaced password works too, until its end.
        let replaced = || {
            credential.previous_password.is_some_and(|(hash, until)| {
                Timestamp::now() < until && self.passwords.verify(password, &hash)
            })
        };
        if !current && !replaced() {
            return Err(refuse("wrong_password"));
        }
        if credential
            .connection
            .valid_until
            .is_some_and(|until| until <= Timestamp::now())
        {
            return Err(refuse("expired"));
        }
        if !credential.connection.ip_allowlist.allows(client) {
            return Err(refuse("address_not_allowed"));
        }
        Ok(credential)
    }

    /// The ClickHouse login a request goes upstream with: the organisation's while no
    /// teams are configured, else that of the team that serves it.
    fn upstream_login(
        &self,
        credential: &IssuedCredential,
        database: Option<&str>,
    ) -> Result<&UpstreamIdentity, GatewayError> {
        if let Some(organisation) = &self.organisation {
            return Ok(organisation);
        }
        let team = self.team_for(credential, database)?;
        self.team_logins
            .get(&team.id)
            .ok_or(GatewayError::TeamWithoutUpstreamUser(team.id))
    }

    fn team_for<'a>(
        &'a self,
        credential: &IssuedCredential,
        database: Option<&str>,
    ) -> Result<&'a Team, GatewayError> {
        let in_scope = |team: &&Team| match &credential.connection.teams {
            TeamScope::All => true,
            TeamScope::Teams(ids) => ids.contains(&team.id),
        };
        let mut teams = self.topology.teams().iter().filter(in_scope);
        match (teams.next(), teams.next(), database) {
            (None, _, _) => Err(GatewayError::TeamsNotConfigured),
            (Some(only), None, _) => Ok(only),
            (Some(_), Some(_), None) => Err(GatewayError::AmbiguousTeam),
            (Some(first), Some(second), Some(db)) => [first, second]
                .into_iter()
                .chain(teams)
                .find(|t| t.databases.iter().any(|d| d == db))
                .ok_or_else(|| GatewayError::DatabaseNotInScope(db.to_owned())),
        }
    }
}

fn ok_response() -> Response<Body> {
    let mut response = Response::new(Body::from("Ok.\n"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

async fn handle(
    worker: Arc<WorkerState>,
    peer: SocketAddr,
    request: Request<Body>,
) -> Response<Body> {
    let mut params = QueryParams::parse(request.uri().query());
    // Liveness answers need no credentials, as in ClickHouse.
    let path = request.uri().path();
    if path == "/ping" || (path == "/" && request.method() == Method::GET && !params.has_query) {
        return ok_response();
    }
    let gateway = &worker.gateway;
    let client_ip = auth::client_ip(peer.ip(), request.headers(), &gateway.trusted_proxies);
    let (parts, body) = request.into_parts();
    let refused = |e: GatewayError| {
        metrics::counter!("switchboard_gateway_refusals_total", "reason" => e.reason())
            .increment(1);
        e.log(client_ip);
        e.into_response()
    };
    // Everything that can refuse a request is decided before its body is touched.
    let admitted = match admit(gateway, client_ip, &parts, &mut params) {
        Ok(admitted) => admitted,
        Err(e) => {
            let keep_alive = drain(&parts.headers, body).await;
            let mut response = refused(e);
            if !keep_alive {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
    };
    match forward(&worker, admitted, parts, body, params).await {
        Ok(response) => response,
        Err(e) => refused(e),
    }
}

/// A refused request's body, read and dropped (as ClickHouse does) so the client can send
/// its next request on the same connection: true when that worked. A body too large to
/// drain, one that is slow, and one the client waits to be asked for (`Expect:
/// 100-continue`) are not read; the answer then says `Connection: close`.
async fn drain(headers: &axum::http::HeaderMap, body: Body) -> bool {
    use http_body::Body as _;
    if headers.contains_key(header::EXPECT) {
        return false;
    }
    let declared = body.size_hint().upper();
    if declared == Some(0) {
        return true;
    }
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return false;
    }
    let read = http_body_util::Limited::new(body, DRAIN_LIMIT);
    matches!(
        tokio::time::timeout(DRAIN_TIME, http_body_util::BodyExt::collect(read)).await,
        Ok(Ok(_))
    )
}

/// What was decided about a request before its body: who it is, and as whom it goes on.
struct Admitted<'a> {
    credential: Arc<IssuedCredential>,
    login: &'a UpstreamIdentity,
    candidates: Vec<Arc<upstream::Node>>,
    admission: limits::Admission,
}

fn admit<'a>(
    gateway: &'a Gateway,
    client_ip: IpAddr,
    parts: &axum::http::request::Parts,
    params: &mut QueryParams,
) -> Result<Admitted<'a>, GatewayError> {
    let presented =
        auth::presented_credentials(&parts.headers, params.user.take(), params.password.take())?;
    let credential = gateway.authenticate(&presented, client_ip)?;
    drop(presented);

    let database = params.database.as_deref().or_else(|| {
        parts
            .headers
            .get("x-clickhouse-database")
            .and_then(|v| v.to_str().ok())
    });
    let login = gateway.upstream_login(&credential, database)?;
    let no_upstream = || GatewayError::NoUpstream(credential.connection.region_id.clone());
    let pool = gateway
        .pools
        .region(&credential.connection.region_id)
        .ok_or_else(no_upstream)?;
    let candidates = pool.candidates(params.session_id.as_deref());
    if candidates.is_empty() {
        return Err(no_upstream());
    }
    let admission = gateway.limits.admit(credential.connection.id)?;
    Ok(Admitted {
        credential,
        login,
        candidates,
        admission,
    })
}

/// ClickHouse's codes for a login it refused: the gateway's own upstream user is wrong.
const UPSTREAM_LOGIN_REFUSED: &[u32] = &[192, 193, 516];
/// The most of an upstream 401's body read to tell why.
const REFUSAL_BODY_LIMIT: usize = 64 * 1024;

async fn forward(
    worker: &WorkerState,
    admitted: Admitted<'_>,
    mut parts: axum::http::request::Parts,
    body: Body,
    params: QueryParams,
) -> Result<Response<Body>, GatewayError> {
    let Admitted {
        credential,
        login,
        candidates,
        admission,
    } = admitted;
    let gateway = &worker.gateway;
    gateway.meters.queries.increment(1);
    // Counted when the answer ends, or here if no upstream answers.
    let usage = gateway.usage.ticket(credential.connection.id);
    let started = std::time::Instant::now();

    let path = parts.uri.path();
    let path_and_query = if params.upstream.is_empty() {
        PathAndQuery::try_from(path)
    } else {
        PathAndQuery::try_from(format!("{path}?{}", params.upstream))
    }
    // From a URI that parsed, less some of its parameters: cannot fail.
    .map_err(|_| GatewayError::NoUpstream(credential.connection.region_id.clone()))?;

    strip_hop_by_hop(&mut parts.headers);
    // The client's credentials and address claims never reach the upstream.
    for name in [
        header::AUTHORIZATION,
        header::HOST,
        HeaderName::from_static("x-forwarded-for"),
    ] {
        parts.headers.remove(name);
    }
    parts.headers.remove(USER_HEADER);
    parts.headers.remove(KEY_HEADER);
    parts.headers.insert(USER_HEADER, login.user.clone());
    if let Some(key) = &login.key {
        parts.headers.insert(KEY_HEADER, key.clone());
    }
    // A quota key in the URL counts as an authentication method beside the X-ClickHouse
    // headers the gateway logs in with (ClickHouse refuses the two together, code 194);
    // as the X-ClickHouse-Quota header it means the same and is accepted.
    if let Some(key) = &params.quota_key
        && !parts.headers.contains_key(QUOTA_HEADER)
        && let Ok(value) = HeaderValue::from_str(key)
    {
        parts.headers.insert(QUOTA_HEADER, value);
    }

    let mut body = ReplayableBody::read(body, REPLAYABLE_BODY_LIMIT)
        .await
        .map_err(|_| GatewayError::ClientBody)?;
    let mut last_error = GatewayError::UpstreamUnreachable;
    let mut candidates = candidates.into_iter().peekable();
    while let Some(node) = candidates.next() {
        let Some(outgoing) = body.take_body() else {
            break;
        };
        let mut upstream_request = axum::http::Request::new(outgoing);
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = node.uri(path_and_query.clone());
        // The last node to try takes the headers; earlier ones need a copy.
        *upstream_request.headers_mut() = if candidates.peek().is_some() {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let attempt = tokio::time::timeout(
            gateway.response_timeout,
            worker.upstreams.send(upstream_request),
        )
        .await;
        let response = match attempt {
            Ok(Ok(response)) => response,
            Ok(Err(e @ SendError::Connect(_))) => {
                tracing::warn!(upstream = %node.base, error = %e, "upstream refused the connection; trying the next");
                node.mark(false);
                last_error = GatewayError::UpstreamUnreachable;
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %node.base, error = %e, "upstream failed");
                return Err(GatewayError::UpstreamUnreachable);
            }
            Err(_) => {
                tracing::warn!(upstream = %node.base, "upstream timed out");
                return Err(GatewayError::UpstreamTimeout);
            }
        };
        let (mut response_parts, response_body) = response.into_parts();
        strip_hop_by_hop(&mut response_parts.headers);
        if response_parts.status == StatusCode::UNAUTHORIZED {
            // Small, and read to tell whose mistake it is before it goes on.
            let bytes = http_body_util::BodyExt::collect(http_body_util::Limited::new(
                response_body,
                REFUSAL_BODY_LIMIT,
            ))
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
            let code = error::exception_code(&response_parts.headers, &bytes);
            if code.is_some_and(|c| UPSTREAM_LOGIN_REFUSED.contains(&c)) {
                tracing::error!(user = login.user_name(), upstream = %node.base, code, "upstream rejected the gateway's upstream user: check its password file");
            } else {
                tracing::info!(upstream = %node.base, code, "upstream refused the request's own authentication parameters");
            }
            let metered = metering::MeteredBody::new(
                http_body_util::Full::new(bytes),
                admission,
                gateway.meters.clone(),
                started,
                usage,
            );
            return Ok(Response::from_parts(response_parts, Body::new(metered)));
        }
        let metered = metering::MeteredBody::new(
            response_body,
            admission,
            gateway.meters.clone(),
            started,
            usage,
        );
        return Ok(Response::from_parts(response_parts, Body::new(metered)));
    }
    Err(last_error)
}
