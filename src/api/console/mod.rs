//! The operator console at `/console/`: server-rendered pages for what an operator does
//! with connections. Every core flow works without JavaScript; `console.js` only adds copy
//! buttons and checks an allowlist as it is typed. Sign-in, the session cookie and CSRF
//! are in `auth`; each area has its module.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use utoipa_axum::router::OpenApiRouter;

use super::html::{CONSOLE_POLICY, page_response};
use super::{AppState, EdgeFailure};
use crate::domain::console::{ConsoleActor, ConsoleError as SessionError, Reveal, RevealKind};
use crate::domain::data_connection::DataConnectionError;
use crate::domain::integration::IntegrationError;
use crate::domain::ports::StoreError;
use crate::domain::token::TokenScope;

mod auth;
mod data;
mod tokens;
mod topology;
mod vault;

pub use auth::Signed;

/// Where the console lives.
pub const PREFIX: &str = "/console";
const SIGN_IN: &str = "/console/sign-in";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/console.js", get(script))
        .route(SIGN_IN, get(auth::sign_in_page).post(auth::sign_in))
        .route("/console/sign-out", post(auth::sign_out))
        .route(
            "/console/data-connections",
            get(data::list).post(data::create),
        )
        .route("/console/data-connections/new", get(data::new_form))
        .route("/console/data-connections/{id}", get(data::show))
        .route("/console/data-connections/{id}/rotate", post(data::rotate))
        .route("/console/data-connections/{id}/edit", post(data::edit))
        .route(
            "/console/data-connections/{id}/delete",
            get(data::confirm_delete).post(data::delete),
        )
        .route("/console/vault", get(vault::list))
        .route("/console/vault/connect-link", post(vault::connect_link))
        .route("/console/vault/{id}", get(vault::show).post(vault::update))
        .route(
            "/console/vault/{id}/delete",
            get(vault::confirm_delete).post(vault::delete),
        )
        .route(
            "/console/tokens",
            get(tokens::list).post(tokens::create_token),
        )
        .route("/console/tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/console/secrets", post(tokens::create_secret))
        .route("/console/secrets/{id}/revoke", post(tokens::revoke_secret))
        .route("/console/revealed", get(tokens::revealed))
        .route("/console/topology", get(topology::show))
}

/// The first page after sign-in: where this session's work is.
async fn home(signed: Option<Signed>) -> Redirect {
    match signed.map(|s| s.session.actor) {
        None => Redirect::to(SIGN_IN),
        Some(ConsoleActor::Vault { .. }) => Redirect::to("/console/vault"),
        Some(ConsoleActor::Token(_)) => Redirect::to("/console/data-connections"),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn stylesheet() -> Response {
    asset(include_str!("console.css"), "text/css; charset=utf-8")
}

async fn script() -> Response {
    asset(include_str!("console.js"), "text/javascript; charset=utf-8")
}

/// Every failure a console page can meet, as a page (or, signed out, a way to sign in).
#[derive(Debug)]
pub enum PageError {
    /// No live session: off to the sign-in page.
    SignInRequired,
    Status {
        status: StatusCode,
        title: &'static str,
        message: String,
    },
}

impl PageError {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self::Status {
            status,
            title,
            message: message.into(),
        }
    }

    fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here, or it is not yours to see.",
        )
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Not allowed", message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Please check what you sent",
            message,
        )
    }
}

impl From<EdgeFailure> for PageError {
    fn from(failure: EdgeFailure) -> Self {
        match failure {
            EdgeFailure::RouteNotFound => Self::not_found(),
            other => Self::new(other.status(), "Something went wrong", other.message()),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        EdgeFailure::from(e).into()
    }
}

impl From<SessionError> for PageError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::BadCredential => Self::new(
                StatusCode::UNAUTHORIZED,
                "Sign-in failed",
                "That is not a valid API token or vault secret.",
            ),
            SessionError::Store(e) => e.into(),
        }
    }
}

impl From<DataConnectionError> for PageError {
    fn from(e: DataConnectionError) -> Self {
        match e {
            DataConnectionError::NotFound => Self::not_found(),
            DataConnectionError::Invalid(_) => Self::bad_request(e.to_string()),
            DataConnectionError::Store(e) => e.into(),
        }
    }
}

impl From<IntegrationError> for PageError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::NotFound => Self::not_found(),
            IntegrationError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "Changed meanwhile",
                "Someone changed this connection while you were editing it. Reload and try again.",
            ),
            IntegrationError::Invalid { message, .. } => Self::bad_request(message),
            IntegrationError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "integration failure on a console page");
                EdgeFailure::Internal.into()
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::SignInRequired => Redirect::to(SIGN_IN).into_response(),
            Self::Status {
                status,
                title,
                message,
            } => page(
                status,
                title,
                None,
                html! {
                    h1 { (title) }
                    p.notice.bad role="alert" { (message) }
                    p { a href="/console/" { "Back to the console" } }
                },
            ),
        }
    }
}

/// Which area of the console a page is in, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    DataConnections,
    Vault,
    Tokens,
    Topology,
}

/// A console page: the navigation for a signed-in session, the content, the headers.
fn page(
    status: StatusCode,
    title: &str,
    nav: Option<(&Signed, Area)>,
    content: Markup,
) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · Switchboard" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/" { "Switchboard" }
                    @if let Some((signed, area)) = nav {
                        (navigation(signed, area))
                    }
                }
                main id="main" tabindex="-1" { (content) }
            }
        }
    };
    page_response(status, body, CONSOLE_POLICY)
}

fn navigation(signed: &Signed, current: Area) -> Markup {
    let mut areas = Vec::new();
    match &signed.session.actor {
        ConsoleActor::Token(principal) => {
            areas.push((
                Area::DataConnections,
                "/console/data-connections",
                "Data connections",
            ));
            if principal.scope == TokenScope::Global {
                areas.push((Area::Tokens, "/console/tokens", "Tokens & secrets"));
            }
        }
        ConsoleActor::Vault { .. } => areas.push((Area::Vault, "/console/vault", "Vault")),
    }
    areas.push((Area::Topology, "/console/topology", "Topology"));
    html! {
        nav aria-label="Console" {
            ul {
                @for (area, href, label) in areas {
                    li {
                        @if area == current {
                            a href=(href) aria-current="page" { (label) }
                        } @else {
                            a href=(href) { (label) }
                        }
                    }
                }
            }
        }
        div.who {
            span { (signed.describe()) }
            form method="post" action="/console/sign-out" {
                (signed.csrf_field())
                button.link type="submit" { "Sign out" }
            }
        }
    }
}

/// The page that shows a kept value once: a password on its connection's page, anything
/// else on `/console/revealed`.
fn reveal_page(reveal: &Reveal) -> String {
    match reveal.kind {
        RevealKind::DataConnectionPassword => {
            format!("/console/data-connections/{}", reveal.subject)
        }
        _ => "/console/revealed".to_owned(),
    }
}

/// Keeps a new secret in the session and sends the browser to the page that shows it once
/// (a redirect, so reloading that page does not repeat the post).
async fn show_once(
    state: &AppState,
    signed: &Signed,
    kind: RevealKind,
    subject: String,
    secret: secrecy::SecretString,
) -> Result<Response, PageError> {
    let reveal = Reveal {
        kind,
        subject,
        secret,
    };
    state
        .services
        .console
        .keep_reveal(&signed.session, &reveal)
        .await?;
    Ok(Redirect::to(&reveal_page(&reveal)).into_response())
}

/// A time as people read it: `2026-12-02 14:05 UTC`.
fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn format_micros(at: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(at).map_or_else(|| "-".into(), format_time)
}

fn format_millis(at: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(at).map_or_else(|| "-".into(), format_time)
}

/// How far `at` is from `now`, in the largest whole unit: "in 3 days", "2 hours ago".
fn relative(at_millis: i64, now_millis: i64) -> String {
    let delta = at_millis - now_millis;
    let seconds = delta.unsigned_abs() / 1000;
    let (n, unit) = match seconds {
        s if s < 60 => {
            return if delta > 0 {
                "in under a minute".into()
            } else {
                "just now".into()
            };
        }
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 365 * 86_400 => (s / 86_400, "day"),
        s => (s / (365 * 86_400), "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if delta >= 0 {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

/// A connection's expiry as a phrase and whether it has passed.
fn expiry(valid_until_millis: Option<i64>, now_millis: i64) -> (String, bool) {
    match valid_until_millis {
        None => ("never expires".into(), false),
        Some(at) if at <= now_millis => (format!("expired {}", relative(at, now_millis)), true),
        Some(at) => (format!("expires {}", relative(at, now_millis)), false),
    }
}

/// A value to copy: shown in a read-only field, with a copy button once the script runs.
fn copyable(id: &str, label: &str, value: &str, multiline: bool) -> Markup {
    html! {
        div.copy {
            label for=(id) { (label) }
            @if multiline {
                textarea id=(id) readonly rows="4" spellcheck="false" { (value) }
            } @else {
                input id=(id) type="text" readonly value=(value) spellcheck="false";
            }
            button.secondary type="button" data-copy=(id) hidden { "Copy" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn expiries_read_plainly() {
        let now = 1_000 * DAY;
        assert_eq!(expiry(None, now), ("never expires".into(), false));
        assert_eq!(
            expiry(Some(now + 3 * DAY + 5_000), now),
            ("expires in 3 days".into(), false)
        );
        assert_eq!(
            expiry(Some(now - 2 * 3_600_000), now),
            ("expired 2 hours ago".into(), true)
        );
        assert_eq!(
            expiry(Some(now + 60_000), now),
            ("expires in 1 minute".into(), false)
        );
        assert_eq!(expiry(Some(now), now), ("expired just now".into(), true));
        assert_eq!(relative(now + 30_000, now), "in under a minute");
        assert_eq!(relative(now + 800 * DAY, now), "in 2 years");
    }
}
