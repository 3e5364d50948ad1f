//! The ClickHouse HTTP gateway: authenticates issued credentials against the in-memory
//! snapshot and forwards the request, streaming both ways, to the region's ClickHouse as
//! the team's own upstream user. Team isolation is that user's rights in ClickHouse; the
//! gateway never reads the SQL.
//!
//! Which team serves a request: a connection scoped to one team uses that team. A
//! connection scoped to several (or all) teams uses the team whose databases contain the
//! request's `database` URL parameter (or `X-ClickHouse-Database` header); without one it
//! is refused with a message that says to name it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Response, StatusCode, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

use crate::config::GatewaySettings;
use crate::crypto::CredentialHasher;
use crate::domain::data_connection::{IssuedCredential, TeamScope};
use crate::domain::time::Timestamp;
use crate::domain::topology::{Team, Topology};
use crate::net::http::{ReplayableBody, strip_hop_by_hop};

pub mod auth;
pub mod directory;
pub mod doctor;
pub mod error;
pub mod limits;
mod metering;
pub mod upstream;

use auth::{KEY_HEADER, USER_HEADER};
use directory::CredentialDirectory;
pub use error::GatewayError;
use limits::ConnectionLimits;
use upstream::UpstreamPools;

/// Request bodies up to this size are read before forwarding, so that a node that
/// refuses the connection can be skipped for the next one. Larger bodies (big inserts)
/// stream straight to one node.
const REPLAYABLE_BODY_LIMIT: u64 = 1024 * 1024;
/// A refused request's body is read and dropped up to this size, within this time.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);
const QUOTA_HEADER: &str = "x-clickhouse-quota";

/// HTTP client to the upstream nodes: `http://` and `https://` alike.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The client of the upstream nodes: their connect timeout, the system's CAs and
/// `gateway.upstream_ca_file` for `https://` ones.
pub fn upstream_client(settings: &GatewaySettings) -> anyhow::Result<UpstreamClient> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.upstream_connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let tls = crate::net::client_tls_config(settings.upstream_ca_file.as_deref())
        .map_err(|e| e.context("gateway.upstream_ca_file"))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

pub struct Gateway {
    directory: Arc<CredentialDirectory>,
    topology: Arc<Topology>,
    passwords: CredentialHasher,
    trusted_proxies: Vec<IpNet>,
    client: UpstreamClient,
    response_timeout: Duration,
    health_check_interval: Duration,
    pools: Arc<UpstreamPools>,
    limits: ConnectionLimits,
}

impl Gateway {
    pub fn new(
        settings: &GatewaySettings,
        directory: Arc<CredentialDirectory>,
        topology: Arc<Topology>,
        passwords: CredentialHasher,
    ) -> anyhow::Result<Self> {
        let client = upstream_client(settings)?;
        Ok(Self {
            pools: Arc::new(UpstreamPools::new(&topology)),
            directory,
            topology,
            passwords,
            trusted_proxies: settings.trusted_proxies.clone(),
            client,
            response_timeout: settings.upstream_response_timeout,
            health_check_interval: settings.health_check_interval,
            limits: ConnectionLimits::new(
                settings.max_concurrent_queries_per_connection,
                settings.max_requests_per_minute_per_connection,
            ),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self)
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
        if !self.passwords.verify(
            presented.password.expose_secret(),
            &credential.password_hash,
        ) {
            return Err(refuse("wrong_password"));
        }
        if credential
            .valid_until
            .is_some_and(|until| until <= Timestamp::now())
        {
            return Err(refuse("expired"));
        }
        if !credential.ip_allowlist.allows(client) {
            return Err(refuse("address_not_allowed"));
        }
        Ok(credential)
    }

    /// The ClickHouse user a request logs in upstream as: the organisation's while no
    /// teams are configured, else the team's that serves it.
    fn upstream_user<'a>(
        &'a self,
        credential: &IssuedCredential,
        database: Option<&str>,
    ) -> Result<(&'a str, Option<&'a SecretString>), GatewayError> {
        if let Some(organisation) = self.topology.organisation_user() {
            return Ok((&organisation.user, organisation.password.as_ref()));
        }
        let team = self.team_for(credential, database)?;
        let user = team
            .upstream_user
            .as_deref()
            .ok_or(GatewayError::TeamWithoutUpstreamUser(team.id))?;
        Ok((user, team.upstream_password.as_ref()))
    }

    fn team_for<'a>(
        &'a self,
        credential: &IssuedCredential,
        database: Option<&str>,
    ) -> Result<&'a Team, GatewayError> {
        let teams: Vec<&Team> = match &credential.teams {
            TeamScope::All => self.topology.teams().iter().collect(),
            TeamScope::Teams(ids) => ids
                .iter()
                .filter_map(|id| self.topology.team(*id))
                .collect(),
        };
        match (teams.as_slice(), database) {
            ([only], _) => Ok(only),
            ([], _) => Err(GatewayError::TeamsNotConfigured),
            (_, None) => Err(GatewayError::AmbiguousTeam),
            (_, Some(db)) => teams
                .into_iter()
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

fn has_query_param(query: Option<&str>, name: &str) -> bool {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(k, _)| k == name)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The query string without the client's credentials (and its quota key, which goes as a
/// header); other parameters stay byte for byte.
fn upstream_query(query: Option<&str>) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            let key = url::form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            // quota_key goes as the X-ClickHouse-Quota header instead (see `forward`).
            key != "user" && key != "password" && key != "quota_key"
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response<Body> {
    let query = request.uri().query().map(str::to_owned);
    let path = request.uri().path().to_owned();
    // Liveness answers need no credentials, as in ClickHouse.
    if path == "/ping"
        || (path == "/"
            && request.method() == Method::GET
            && !has_query_param(query.as_deref(), "query"))
    {
        return ok_response();
    }
    let client_ip = auth::client_ip(peer.ip(), request.headers(), &gateway.trusted_proxies);
    let (parts, body) = request.into_parts();
    let refused = |e: GatewayError| {
        metrics::counter!("switchboard_gateway_refusals_total", "reason" => e.reason())
            .increment(1);
        e.log(client_ip);
        e.into_response()
    };
    // Everything that can refuse a request is decided before its body is touched.
    let admitted = match admit(&gateway, client_ip, &parts, query.as_deref()) {
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
    match forward(&gateway, admitted, parts, body, &path, query.as_deref()).await {
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
    upstream_user: &'a str,
    upstream_password: Option<&'a SecretString>,
    candidates: Vec<Arc<upstream::Node>>,
    admission: limits::Admission,
}

fn admit<'a>(
    gateway: &'a Gateway,
    client_ip: IpAddr,
    parts: &axum::http::request::Parts,
    query: Option<&str>,
) -> Result<Admitted<'a>, GatewayError> {
    let presented = auth::presented_credentials(&parts.headers, query)?;
    let credential = gateway.authenticate(&presented, client_ip)?;
    drop(presented);

    let database = query_param(query, "database").or_else(|| {
        parts
            .headers
            .get("x-clickhouse-database")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let (upstream_user, upstream_password) =
        gateway.upstream_user(&credential, database.as_deref())?;
    let no_upstream = || GatewayError::NoUpstream(credential.region_id.clone());
    let pool = gateway
        .pools
        .region(&credential.region_id)
        .ok_or_else(no_upstream)?;
    let session_id = query_param(query, "session_id");
    let candidates = pool.candidates(session_id.as_deref());
    if candidates.is_empty() {
        return Err(no_upstream());
    }
    let admission = gateway.limits.admit(credential.connection_id)?;
    Ok(Admitted {
        credential,
        upstream_user,
        upstream_password,
        candidates,
        admission,
    })
}

/// ClickHouse's codes for a login it refused: the gateway's own upstream user is wrong.
const UPSTREAM_LOGIN_REFUSED: &[u32] = &[192, 193, 516];
/// The most of an upstream 401's body read to tell why.
const REFUSAL_BODY_LIMIT: usize = 64 * 1024;

async fn forward(
    gateway: &Gateway,
    admitted: Admitted<'_>,
    mut parts: axum::http::request::Parts,
    body: Body,
    path: &str,
    query: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let Admitted {
        credential,
        upstream_user,
        upstream_password,
        candidates,
        admission,
    } = admitted;
    let connection_label = credential.connection_id.to_string();
    metrics::counter!("switchboard_gateway_queries_total", "connection_id" => connection_label.clone()).increment(1);
    let started = std::time::Instant::now();

    let upstream_query = upstream_query(query);
    let path_and_query = if upstream_query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{upstream_query}")
    };

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
    // Validated as header text at start-up (config), so these cannot fail.
    if let Ok(user) = HeaderValue::from_str(upstream_user) {
        parts.headers.insert(USER_HEADER, user);
    }
    if let Some(password) = upstream_password
        && let Ok(mut key) = HeaderValue::from_str(password.expose_secret())
    {
        key.set_sensitive(true);
        parts.headers.insert(KEY_HEADER, key);
    }
    // A quota key in the URL counts as an authentication method beside the X-ClickHouse
    // headers the gateway logs in with (ClickHouse refuses the two together, code 194);
    // as the X-ClickHouse-Quota header it means the same and is accepted.
    if let Some(key) = query_param(query, "quota_key")
        && !parts.headers.contains_key(QUOTA_HEADER)
        && let Ok(value) = HeaderValue::from_str(&key)
    {
        parts.headers.insert(QUOTA_HEADER, value);
    }

    let no_upstream = || GatewayError::NoUpstream(credential.region_id.clone());
    let mut body = ReplayableBody::read(body, REPLAYABLE_BODY_LIMIT)
        .await
        .map_err(|_| GatewayError::ClientBody)?;
    let mut last_error = GatewayError::UpstreamUnreachable;
    for node in candidates {
        let Some(outgoing) = body.take_body() else {
            break;
        };
        let uri: Uri = format!("{}{}", node.base, path_and_query)
            .parse()
            .map_err(|_| no_upstream())?;
        let mut upstream_request = axum::http::Request::new(outgoing);
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = parts.headers.clone();
        let attempt = tokio::time::timeout(
            gateway.response_timeout,
            gateway.client.request(upstream_request),
        )
        .await;
        let response = match attempt {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.is_connect() => {
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
                tracing::error!(user = upstream_user, upstream = %node.base, code, "upstream rejected the gateway's upstream user: check its password file");
            } else {
                tracing::info!(upstream = %node.base, code, "upstream refused the request's own authentication parameters");
            }
            let metered = metering::MeteredBody::new(
                http_body_util::Full::new(bytes),
                admission,
                connection_label,
                started,
            );
            return Ok(Response::from_parts(response_parts, Body::new(metered)));
        }
        let metered =
            metering::MeteredBody::new(response_body, admission, connection_label, started);
        return Ok(Response::from_parts(response_parts, Body::new(metered)));
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_from_the_query_and_the_rest_kept_verbatim() {
        assert_eq!(
            upstream_query(Some(
                "user=u&query=SELECT%201&password=p&database=db&default_format=JSONEachRow"
            )),
            "query=SELECT%201&database=db&default_format=JSONEachRow"
        );
        assert_eq!(
            upstream_query(Some("us%65r=u&x=1")),
            "x=1",
            "encoded names are decoded first"
        );
        assert_eq!(upstream_query(None), "");
    }
}
