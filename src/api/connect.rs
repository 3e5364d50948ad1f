//! The hosted connect page: what an end user sees at a connect session's link. Plain
//! server-rendered HTML (no script, no external asset: it works offline and on a phone),
//! a form per platform that takes a key, a button per platform that signs in with OAuth2,
//! and the OAuth2 callback. The backend's side of a session is `pica::sessions`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use secrecy::SecretString;
use url::Url;
use utoipa_axum::router::OpenApiRouter;

use super::audit::AuditSlot;
use super::{AppState, EdgeFailure};
use crate::domain::audit::{Actor, ActorKind};
use crate::domain::catalog::{AuthMethod, Platform};
use crate::domain::connect::{CallbackParams, ConnectError, Finished, PageView, split_state};
use crate::domain::integration::{IntegrationError, OpenCredentials};

/// Where the pages live; the path's next segment is the session's token.
pub const PREFIX: &str = "/connect/";
pub const CALLBACK_PATH: &str = "/v1/connect/callback";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/connect/{token}", get(page))
        .route("/connect/{token}/credentials", post(submit_credentials))
        .route("/connect/{token}/oauth", post(begin_consent))
}

/// The callback is under the Pica prefix (the redirect URI providers are registered with),
/// but answers a browser: HTML, never the dialect's JSON.
pub fn callback_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().route(CALLBACK_PATH, get(callback))
}

/// Every failure a page can meet, as a page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
        }
    }
}

impl From<EdgeFailure> for PageError {
    fn from(failure: EdgeFailure) -> Self {
        Self::new(failure.status(), "Something went wrong", failure.message())
    }
}

impl From<ConnectError> for PageError {
    fn from(e: ConnectError) -> Self {
        let message = e.to_string();
        match e {
            ConnectError::Invalid { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "Please check what you entered",
                message,
            ),
            ConnectError::NotFound => Self::new(
                StatusCode::NOT_FOUND,
                "This link does not work",
                "This link is not valid. Ask for a new one.",
            ),
            ConnectError::Expired => Self::new(
                StatusCode::GONE,
                "This link has expired",
                "Links last a short while. Ask whoever sent it for a new one.",
            ),
            ConnectError::Used => Self::new(
                StatusCode::CONFLICT,
                "This link has been used",
                "Each link works once. Ask whoever sent it for a new one to connect again.",
            ),
            ConnectError::StateMismatch => Self::new(
                StatusCode::BAD_REQUEST,
                "The sign-in did not match",
                message,
            ),
            ConnectError::Provider(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "The account was not connected",
                message,
            ),
            ConnectError::Integration(IntegrationError::NotFound) => Self::new(
                StatusCode::NOT_FOUND,
                "The account was not connected",
                "The connection this link renews no longer exists.",
            ),
            ConnectError::Integration(_) => Self::new(
                StatusCode::CONFLICT,
                "The account was not connected",
                message,
            ),
            ConnectError::Store(e) => EdgeFailure::from(e).into(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout(
            self.title,
            html! {
                h1 { (self.title) }
                p.message role="alert" { (self.message) }
            },
        );
        html_response(self.status, body)
    }
}

fn html_response(status: StatusCode, body: Markup) -> Response {
    super::html::page_response(status, body, super::html::SELF_CONTAINED_POLICY)
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #fff;
  --card: #f6f8fa; --accent: #0b5cad; --accent-fg: #fff; --bad: #b42318; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9da7b3; --line: #30363d;
  --bg: #0d1117; --card: #161b22; --accent: #4493f8; --accent-fg: #0d1117; --bad: #ff7b72; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 34rem; margin: 0 auto; padding: 2rem 1rem 3rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
.lede { color: var(--muted); margin: 0 0 1.5rem; }
ul.platforms { list-style: none; margin: 0; padding: 0; display: grid; gap: 1rem; }
.card { border: 1px solid var(--line); background: var(--card); border-radius: .75rem; padding: 1rem; }
.head { display: flex; gap: .75rem; align-items: center; margin-bottom: .75rem; }
.badge { flex: none; width: 2.5rem; height: 2.5rem; border-radius: .6rem; display: grid;
  place-items: center; font-weight: 700; background: var(--accent); color: var(--accent-fg); }
.logo { flex: none; width: 2.5rem; height: 2.5rem; border-radius: .6rem; object-fit: contain; }
.head h2 { font-size: 1.1rem; margin: 0; }
.head p { margin: 0; color: var(--muted); font-size: .9rem; }
label { display: block; font-weight: 600; margin: .5rem 0 .25rem; }
input[type=text], input[type=password] { width: 100%; padding: .6rem .7rem; font: inherit;
  border: 1px solid var(--line); border-radius: .5rem; background: var(--bg); color: var(--fg); }
button { margin-top: .75rem; width: 100%; padding: .7rem 1rem; font: inherit; font-weight: 600;
  border: 0; border-radius: .5rem; background: var(--accent); color: var(--accent-fg); cursor: pointer; }
button:focus-visible, input:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.hint { color: var(--muted); font-size: .85rem; margin: .25rem 0 0; }
.message { padding: .75rem 1rem; border-radius: .5rem; border: 1px solid var(--line); }
.error { border-color: var(--bad); color: var(--bad); margin: 0 0 1rem; }
"#;

fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { (content) } }
        }
    }
}

/// A credential field's label and whether to hide what is typed.
fn field_label(auth: &AuthMethod, field: &str) -> (String, bool) {
    match (auth, field) {
        (AuthMethod::Header { name }, "api_key") => (format!("API key (sent as {name})"), true),
        (AuthMethod::Query { .. }, "api_key") | (_, "api_key") => ("API key".into(), true),
        (_, "username") => ("Username".into(), false),
        (_, "password") => ("Password".into(), true),
        (_, other) => (other.into(), true),
    }
}

fn initial(platform: &Platform) -> String {
    platform
        .name
        .chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_else(|| "?".into())
}

fn platform_card(token: &str, platform: &Platform, error: Option<(&str, &str)>) -> Markup {
    let id = |field: &str| format!("{}-{field}", platform.key);
    html! {
        li.card {
            div.head {
                // Only an inline image: the page loads nothing from elsewhere.
                @match platform.image.as_deref().filter(|i| i.starts_with("data:image/")) {
                    Some(image) => img.logo src=(image) alt="" width="40" height="40";
                    None => div.badge aria-hidden="true" { (initial(platform)) }
                }
                div {
                    h2 { (platform.name) }
                    @if !platform.description.is_empty() { p { (platform.description) } }
                }
            }
            @if let Some((for_platform, message)) = error {
                @if for_platform == platform.key {
                    p.message.error role="alert" { (message) }
                }
            }
            @match &platform.auth {
                AuthMethod::OAuth2 { authorize_url: Some(_), .. } => {
                    form method="post" action={ (token) "/oauth" } {
                        input type="hidden" name="platform" value=(platform.key);
                        button type="submit" { "Sign in with " (platform.name) }
                    }
                    p.hint { "You will be sent to " (platform.name) " to approve access, then back here." }
                }
                AuthMethod::OAuth2 { .. } => {
                    p.hint { (platform.name) " cannot be linked from this page: its sign-in is not configured." }
                }
                auth => {
                    form method="post" action={ (token) "/credentials" } autocomplete="off" {
                        input type="hidden" name="platform" value=(platform.key);
                        @for field in auth.credential_fields() {
                            @let (label, secret) = field_label(auth, field);
                            label for=(id(field)) { (label) }
                            input id=(id(field)) name=(field) type=(if secret { "password" } else { "text" })
                                required autocomplete="off" spellcheck="false" autocapitalize="off";
                        }
                        button type="submit" { "Connect " (platform.name) }
                    }
                    p.hint { "Stored encrypted; it is never shown again." }
                }
            }
        }
    }
}

fn connect_page(token: &str, view: &PageView<'_>, error: Option<(&str, &str)>) -> Markup {
    let title = if view.session.reconnect_key.is_some() {
        "Reconnect your account"
    } else {
        "Connect an account"
    };
    layout(
        title,
        html! {
            h1 { (title) }
            p.lede {
                @if view.platforms.len() == 1 { "Link your " (view.platforms[0].name) " account." }
                @else { "Choose the service to link." }
            }
            @if view.platforms.is_empty() {
                p.message { "No service can be linked from this link." }
            }
            ul.platforms {
                @for platform in &view.platforms { (platform_card(token, platform, error)) }
            }
        },
    )
}

fn finished(done: Finished) -> Response {
    if let Some(url) = done.redirect {
        return Redirect::to(url.as_str()).into_response();
    }
    let body = layout(
        "Connected",
        html! {
            h1 { (done.platform_name) " is connected" }
            p.message role="status" { "You can close this window." }
        },
    );
    html_response(StatusCode::OK, body)
}

async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let view = state.services.connect.page(&token).await?;
    Ok(html_response(
        StatusCode::OK,
        connect_page(&token, &view, None),
    ))
}

/// The end user on a connect page: who the audit log names.
fn link_holder(audit: &AuditSlot) {
    audit.actor(Actor {
        kind: ActorKind::ConnectLink,
        id: None,
        user: None,
    });
}

async fn submit_credentials(
    State(state): State<AppState>,
    Path(token): Path<String>,
    audit: AuditSlot,
    body: Bytes,
) -> Result<Response, PageError> {
    link_holder(&audit);
    let mut platform = String::new();
    let mut credentials = OpenCredentials::new();
    for (name, value) in url::form_urlencoded::parse(&body) {
        if name == "platform" {
            platform = value.into_owned();
        } else {
            // Each value a secret from here on, wiped when dropped.
            credentials.insert(name.into_owned(), SecretString::from(value.into_owned()));
        }
    }
    let connect = &state.services.connect;
    match connect
        .submit_credentials(&token, &platform, credentials)
        .await
    {
        Ok(done) => {
            audit.target(done.session_id.clone());
            Ok(finished(done))
        }
        // A typo: the same page again, saying what to fix; the link still works.
        Err(ConnectError::Invalid { message, .. }) => {
            let view = connect.page(&token).await?;
            Ok(html_response(
                StatusCode::BAD_REQUEST,
                connect_page(&token, &view, Some((&platform, &message))),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

async fn begin_consent(
    State(state): State<AppState>,
    Path(token): Path<String>,
    audit: AuditSlot,
    body: Bytes,
) -> Result<Response, PageError> {
    link_holder(&audit);
    let platform = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "platform")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let (to, session_id): (Url, String) = state
        .services
        .connect
        .begin_consent(&token, &platform)
        .await?;
    audit.target(session_id);
    // 303: the browser follows with a GET.
    Ok(Redirect::to(to.as_str()).into_response())
}

async fn callback(
    State(state): State<AppState>,
    audit: AuditSlot,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    link_holder(&audit);
    let mut params = CallbackParams::default();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*name {
            "state" => params.state = Some(value.into_owned()),
            "code" => params.code = Some(SecretString::from(value.into_owned())),
            "error" => params.error = Some(value.into_owned()),
            "error_description" => params.error_description = Some(value.into_owned()),
            _ => {}
        }
    }
    // The state names the session (its secret part stays out of the log).
    if let Some(id) = params.state.as_deref().and_then(split_state) {
        audit.target(id);
    }
    let connect = &state.services.connect;
    match connect.callback(params).await {
        Ok(done) => Ok(finished(done)),
        Err(failure) => match failure.redirect {
            Some(url) => Ok(Redirect::to(url.as_str()).into_response()),
            None => Err(failure.error.into()),
        },
    }
}
