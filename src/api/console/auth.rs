//! Signing in and out, the session cookie, and the checks every form post passes: a live
//! session, a request from this console's own pages (`Origin`, `Sec-Fetch-Site`), and the
//! session's CSRF token.

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{PageError, SIGN_IN, page};
use crate::api::AppState;
use crate::api::audit::{AuditSlot, secret_actor, token_actor};
use crate::domain::audit::Actor;
use crate::domain::console::{ConsoleActor, ConsoleError, ConsoleSession};
use crate::domain::token::{Principal, TokenScope};

const COOKIE: &str = "switchboard_console";
const CSRF_FIELD: &str = "csrf";

/// A request with a live console session.
pub struct Signed {
    pub session: ConsoleSession,
    /// The cookie's token; the CSRF token derives from it.
    token: SecretString,
    csrf: String,
}

impl Signed {
    /// The API token this session acts as, if it was opened with one.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.session.actor {
            ConsoleActor::Token(p) => Some(p),
            ConsoleActor::Vault { .. } => None,
        }
    }

    /// A global token's session, or a page saying what this needs.
    pub fn global(&self) -> Result<&Principal, PageError> {
        match self.principal() {
            Some(p) if p.scope == TokenScope::Global => Ok(p),
            _ => Err(PageError::forbidden(
                "This page needs a session opened with a global API token.",
            )),
        }
    }

    /// A token's session (global or team), or a page saying what this needs.
    pub fn token(&self) -> Result<&Principal, PageError> {
        self.principal().ok_or_else(|| {
            PageError::forbidden(
                "Data connections need a session opened with an API token; this one was opened with a vault secret.",
            )
        })
    }

    /// Who the session acts as, for the header: never the credential.
    pub fn describe(&self) -> String {
        match &self.session.actor {
            ConsoleActor::Token(p) => {
                let kind = match p.scope {
                    TokenScope::Global => "Global token".to_owned(),
                    TokenScope::Team(team) => format!("Team {team} token"),
                };
                match &p.user {
                    Some(user) => format!("{kind} #{} · {}", p.token_id, user.email),
                    None => format!("{kind} #{}", p.token_id),
                }
            }
            ConsoleActor::Vault {
                secret_id,
                environment,
            } => format!("Vault secret #{secret_id} · {}", environment.as_str()),
        }
    }

    /// The hidden field every form of this session carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf); }
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// Who a console session acts as, for the audit log.
pub fn audit_actor(actor: &ConsoleActor) -> Actor {
    match actor {
        ConsoleActor::Token(p) => token_actor(p),
        ConsoleActor::Vault { secret_id, .. } => secret_actor(*secret_id),
    }
}

async fn session_of(parts: &Parts, state: &AppState) -> Result<Option<Signed>, PageError> {
    let Some(token) = cookie_token(&parts.headers) else {
        return Ok(None);
    };
    let console = &state.services.console;
    let audit = AuditSlot::of(parts);
    let Some(session) = console.authenticate(token).await? else {
        // A cookie that opens nothing (expired, signed out, its token revoked, or forged).
        audit.refused();
        return Ok(None);
    };
    audit.actor(audit_actor(&session.actor));
    Ok(Some(Signed {
        csrf: console.csrf_token(token),
        token: SecretString::from(token.to_owned()),
        session,
    }))
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        session_of(parts, state)
            .await?
            .ok_or(PageError::SignInRequired)
    }
}

impl OptionalFromRequestParts<AppState> for Signed {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, PageError> {
        session_of(parts, state).await
    }
}

/// A posted form's fields. Values may be credentials: wiped when dropped, never printed.
pub struct FormFields(Vec<(String, Zeroizing<String>)>);

impl std::fmt::Debug for FormFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl FormFields {
    fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
                .collect(),
        )
    }

    /// The first value of a field, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every value of a field (checkboxes, multiple selects), blanks left out.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// Refuses a post that another site's page made: a browser says where a request came from
/// (`Sec-Fetch-Site`, `Origin`), and only this console's pages may post to it.
fn check_same_origin(parts: &Parts, state: &AppState) -> Result<(), PageError> {
    let refused = || PageError::forbidden("This form did not come from this console's own pages.");
    let headers = &parts.headers;
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| refused())?;
    let public = state.services.public_url.as_str();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let scheme = if state.services.secure_cookies {
        "https"
    } else {
        "http"
    };
    let matches_host = host.is_some_and(|h| origin == format!("{scheme}://{h}"));
    if origin == public || matches_host {
        Ok(())
    } else {
        Err(refused())
    }
}

const MAX_FORM_BYTES: usize = 64 * 1024;

async fn form_body(req: Request, state: &AppState) -> Result<(Parts, FormFields), PageError> {
    let (parts, body) = req.into_parts();
    check_same_origin(&parts, state)?;
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            PageError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too much",
                "The form sent more than this console accepts.",
            )
        })?;
    Ok((parts, FormFields::parse(&bytes)))
}

/// A form posted by a signed-in session from its own page, with its CSRF token checked.
pub struct SignedForm {
    pub signed: Signed,
    pub fields: FormFields,
}

impl FromRequest<AppState> for SignedForm {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (parts, fields) = form_body(req, state).await?;
        let signed = session_of(&parts, state)
            .await?
            .ok_or(PageError::SignInRequired)?;
        let presented = fields.get(CSRF_FIELD).unwrap_or("");
        if !state
            .services
            .console
            .csrf_matches(signed.token.expose_secret(), presented)
        {
            tracing::warn!(session_id = %signed.session.id, "console form refused: CSRF token missing or wrong");
            AuditSlot::of(&parts).refused();
            return Err(PageError::forbidden(
                "This form has expired or did not come from this console. Go back, reload the page and try again.",
            ));
        }
        Ok(Self { signed, fields })
    }
}

fn sign_in_form(error: Option<&str>) -> Markup {
    html! {
        div.narrow {
            h1 { "Sign in" }
            p.lede { "Use a global or team API token for data connections, or a vault secret (" code { "sk_test_…" } " or " code { "sk_live_…" } ") for the vault." }
            @if let Some(error) = error {
                p.notice.bad role="alert" { (error) }
            }
            form method="post" action=(SIGN_IN) autocomplete="off" {
                label for="credential" { "API token or vault secret" }
                input id="credential" name="credential" type="password" required autofocus
                    autocomplete="off" spellcheck="false" autocapitalize="off";
                button type="submit" { "Sign in" }
            }
            p.hint { "The value is checked and forgotten: the console keeps only a session, which ends when you sign out, when it expires, or when the token or secret is revoked." }
        }
    }
}

pub async fn sign_in_page(signed: Option<Signed>) -> Response {
    if signed.is_some() {
        return Redirect::to("/console/").into_response();
    }
    page(StatusCode::OK, "Sign in", None, sign_in_form(None))
}

fn session_cookie(value: &str, max_age_seconds: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{secure}"
    ))
    .expect("cookie text is ASCII")
}

pub async fn sign_in(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
) -> Result<Response, PageError> {
    let (parts, fields) = form_body(req, &state).await?;
    let presented = fields.get("credential").unwrap_or("");
    let console = &state.services.console;
    match console.sign_in(presented).await {
        Ok((token, actor)) => {
            AuditSlot::of(&parts).actor(audit_actor(&actor));
            let mut response = Redirect::to("/console/").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(
                    token.expose_secret(),
                    console.ttl().as_secs(),
                    state.services.secure_cookies,
                ),
            );
            Ok(response)
        }
        Err(ConsoleError::BadCredential) => {
            tracing::warn!("console sign-in refused: unknown token or secret");
            Ok(page(
                StatusCode::UNAUTHORIZED,
                "Sign in",
                None,
                sign_in_form(Some("That is not a valid API token or vault secret.")),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn sign_out(
    axum::extract::State(state): axum::extract::State<AppState>,
    form: SignedForm,
) -> Result<Response, PageError> {
    state
        .services
        .console
        .sign_out(&form.signed.session)
        .await?;
    let mut response = Redirect::to(SIGN_IN).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, state.services.secure_cookies),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; switchboard_console=abc ; b=2"),
        );
        assert_eq!(cookie_token(&headers), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("switchboard_consolex=1"),
        );
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn form_fields_hide_their_values() {
        let fields = FormFields::parse(b"credential=s3cr3t-value&x=+1+&x=&x=2");
        assert_eq!(fields.get("credential"), Some("s3cr3t-value"));
        assert_eq!(fields.all("x"), vec!["1", "2"]);
        assert!(!format!("{fields:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = session_cookie("t", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(
            !session_cookie("t", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
