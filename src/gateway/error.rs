//! Refusals and failures in ClickHouse's own error form: a status, the
//! `X-ClickHouse-Exception-Code` header and a `Code: N. DB::Exception: ...` body.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

pub const EXCEPTION_CODE_HEADER: &str = "x-clickhouse-exception-code";
/// ClickHouse's code for a setting the configuration lacks: here, the operator's.
const NO_ELEMENTS_IN_CONFIG: u32 = 139;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Every credential refusal looks the same, so none reveals which check failed; the
    /// check is logged.
    #[error("authentication failed ({reason})")]
    AuthenticationFailed { user: String, reason: &'static str },
    #[error("two authentication methods at once")]
    AmbiguousAuthentication,
    #[error("the request names no database and the connection spans several teams")]
    AmbiguousTeam,
    #[error("database {0} belongs to none of the connection's teams")]
    DatabaseNotInScope(String),
    #[error("team {0} has no upstream_user configured")]
    TeamWithoutUpstreamUser(i64),
    #[error("none of the connection's teams is configured")]
    TeamsNotConfigured,
    #[error("region {0} has no upstreams configured")]
    NoUpstream(String),
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("too many queries running for this connection")]
    TooManyQueries(usize),
    #[error("too many requests per minute for this connection")]
    RateLimited,
    #[error("the request body could not be read")]
    ClientBody,
}

impl GatewayError {
    fn parts(&self) -> (StatusCode, u32, String) {
        match self {
            Self::AuthenticationFailed { user, .. } => (
                StatusCode::FORBIDDEN,
                516,
                format!(
                    "{}: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)",
                    printable(user)
                ),
            ),
            Self::AmbiguousAuthentication => (
                StatusCode::FORBIDDEN,
                516,
                "Invalid authentication: it is not allowed to use more than one of X-ClickHouse HTTP headers, the Authorization header and the user/password URL parameters. (AUTHENTICATION_FAILED)".into(),
            ),
            Self::AmbiguousTeam => (
                StatusCode::BAD_REQUEST,
                81,
                "This connection spans several teams: name the team's database with the `database` URL parameter or the X-ClickHouse-Database header. (UNKNOWN_DATABASE)".into(),
            ),
            Self::DatabaseNotInScope(db) => (
                StatusCode::FORBIDDEN,
                291,
                format!("Access denied to database {}: it belongs to none of this connection's teams. (DATABASE_ACCESS_DENIED)", printable(db)),
            ),
            Self::TeamWithoutUpstreamUser(team) => (
                StatusCode::SERVICE_UNAVAILABLE,
                NO_ELEMENTS_IN_CONFIG,
                format!("The gateway's configuration gives team {team} no ClickHouse user: the operator must set upstream_user (and upstream_password_file) in its [[teams]] entry. (NO_ELEMENTS_IN_CONFIG)"),
            ),
            Self::TeamsNotConfigured => (
                StatusCode::SERVICE_UNAVAILABLE,
                NO_ELEMENTS_IN_CONFIG,
                "None of this connection's teams is in the gateway's configuration: the operator must restore its [[teams]] entry. (NO_ELEMENTS_IN_CONFIG)".into(),
            ),
            Self::NoUpstream(region) => (
                StatusCode::SERVICE_UNAVAILABLE,
                NO_ELEMENTS_IN_CONFIG,
                format!("The gateway's configuration has no ClickHouse server for region {}: the operator must list its upstreams in the [[regions]] entry. (NO_ELEMENTS_IN_CONFIG)", printable(region)),
            ),
            Self::UpstreamUnreachable => (
                StatusCode::BAD_GATEWAY,
                210,
                "The upstream ClickHouse server is unreachable. (NETWORK_ERROR)".into(),
            ),
            Self::TooManyQueries(max) => (
                StatusCode::TOO_MANY_REQUESTS,
                202,
                format!("Too many simultaneous queries for this connection. Maximum: {max}. (TOO_MANY_SIMULTANEOUS_QUERIES)"),
            ),
            Self::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                201,
                "Quota for this connection (requests per minute) has been exceeded. (QUOTA_EXCEEDED)".into(),
            ),
            Self::ClientBody => (
                StatusCode::BAD_REQUEST,
                210,
                "The request body could not be read. (NETWORK_ERROR)".into(),
            ),
            Self::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                209,
                "The upstream ClickHouse server did not answer in time. (SOCKET_TIMEOUT)".into(),
            ),
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AuthenticationFailed { .. } | Self::AmbiguousAuthentication => "authentication",
            Self::AmbiguousTeam | Self::DatabaseNotInScope(_) => "team",
            Self::TeamWithoutUpstreamUser(_) | Self::TeamsNotConfigured | Self::NoUpstream(_) => {
                "configuration"
            }
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::TooManyQueries(_) => "concurrency",
            Self::RateLimited => "rate",
            Self::ClientBody => "client_body",
        }
    }

    /// Logs a refusal once, with its reason (never a password). Upstream failures are
    /// logged where they happen, with the node.
    pub fn log(&self, client: std::net::IpAddr) {
        match self {
            Self::AuthenticationFailed { user, reason } => {
                tracing::info!(user = %user.escape_debug(), %client, reason, "gateway authentication refused");
            }
            Self::TeamWithoutUpstreamUser(_) | Self::TeamsNotConfigured | Self::NoUpstream(_) => {
                tracing::error!(%client, gap = %self, "gateway refused a request: the configuration is incomplete");
            }
            Self::UpstreamUnreachable | Self::UpstreamTimeout => {}
            _ => tracing::info!(%client, reason = %self, "gateway refused a request"),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let (status, code, message) = self.parts();
        let kind = if matches!(code, 516 | 291 | 81 | NO_ELEMENTS_IN_CONFIG) {
            "DB::Exception"
        } else {
            "DB::NetException"
        };
        let mut response = Response::new(Body::from(format!("Code: {code}. {kind}: {message}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        headers.insert(EXCEPTION_CODE_HEADER, HeaderValue::from(code));
        response
    }
}

/// A ClickHouse error's code: the `X-ClickHouse-Exception-Code` header, or (18.x sends
/// none) the `Code: N` the body starts with.
pub fn exception_code(headers: &axum::http::HeaderMap, body: &[u8]) -> Option<u32> {
    headers
        .get(EXCEPTION_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            std::str::from_utf8(body.get(..body.len().min(64))?)
                .ok()?
                .trim_start()
                .strip_prefix("Code: ")?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
}

/// Client-supplied text echoed in an error: no control characters, bounded length.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}
