//! Refusals and failures in ClickHouse's own error form: a status, the
//! `X-ClickHouse-Exception-Code` header and a `Code: N. DB::Exception: ...` body.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

pub const EXCEPTION_CODE_HEADER: &str = "x-clickhouse-exception-code";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Every credential refusal looks the same, so none reveals which check failed.
    #[error("authentication failed")]
    AuthenticationFailed { user: String },
    #[error("two authentication methods at once")]
    AmbiguousAuthentication,
    #[error("the request names no database and the connection spans several teams")]
    AmbiguousTeam,
    #[error("database {0} belongs to none of the connection's teams")]
    DatabaseNotInScope(String),
    #[error("the connection's teams have no upstream user configured")]
    NoUpstreamUser,
    #[error("the connection's region has no upstream")]
    NoUpstream,
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
            Self::AuthenticationFailed { user } => (
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
            Self::NoUpstreamUser => (
                StatusCode::SERVICE_UNAVAILABLE,
                210,
                "The gateway has no upstream user for this connection's team; the operator must set upstream_user. (NETWORK_ERROR)".into(),
            ),
            Self::NoUpstream => (
                StatusCode::SERVICE_UNAVAILABLE,
                210,
                "The gateway has no upstream for this connection's region. (NETWORK_ERROR)".into(),
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
            Self::NoUpstreamUser | Self::NoUpstream => "configuration",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::TooManyQueries(_) => "concurrency",
            Self::RateLimited => "rate",
            Self::ClientBody => "client_body",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let (status, code, message) = self.parts();
        let kind = if code == 516 || code == 291 || code == 81 {
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

/// Client-supplied text echoed in an error: no control characters, bounded length.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}
