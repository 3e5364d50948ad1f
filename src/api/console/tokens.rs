//! API tokens and vault secrets: listed (never a value), made (the value shown once, on
//! the page right after), revoked (at once, everywhere: the store forgets it, and every
//! process's token cache and passthrough snapshot with it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use secrecy::ExposeSecret;

use super::auth::{Signed, SignedForm};
use super::{Area, PageError, copyable, format_millis, page, show_once};
use crate::api::AppState;
use crate::api::audit::AuditSlot;
use crate::domain::console::RevealKind;
use crate::domain::integration::Environment;
use crate::domain::ports::Revoked;
use crate::domain::token::TokenScope;

/// A table row's revoke button, confirmed first where the script runs.
fn revoke_button(signed: &Signed, area: &str, id: i64, what: &str, consequence: &str) -> Markup {
    html! {
        form method="post" action={ "/console/" (area) "/" (id) "/revoke" } {
            (signed.csrf_field())
            button.danger.small type="submit" data-confirm={ "Revoke " (what) " #" (id) "? " (consequence) } { "Revoke #" (id) }
        }
    }
}

pub async fn list(State(state): State<AppState>, signed: Signed) -> Result<Response, PageError> {
    let me = signed.global()?.token_id;
    let tokens = state.services.tokens.list().await?;
    let secrets = state.services.vault_secrets.list().await?;
    let teams = state.services.topology.teams();
    let content = html! {
        h1 { "Tokens & secrets" }
        p.lede { "Values are never stored or shown again after they are made: only their keyed hashes are kept." }
        h2 { "API tokens" }
        div.table-wrap { table {
            caption.visually-hidden { "API tokens" }
            thead { tr { th scope="col" { "Token" } th scope="col" { "Scope" } th scope="col" { "User" } th scope="col" { "Created" } th scope="col" { span.visually-hidden { "Actions" } } } }
            tbody { @for t in &tokens { tr {
                td { "#" (t.id) @if t.id == me { " " span.tag { "this session" } } }
                td { @match t.scope {
                    TokenScope::Global => "global",
                    TokenScope::Team(team) => { "team " (teams.iter().find(|x| x.id == team).map_or_else(|| format!("#{team}"), |x| x.name.clone())) },
                } }
                td { @match &t.user { Some(u) => (u.email), None => span.muted { "none" } } }
                td { (format_millis(t.created_at.as_millis())) }
                td { (revoke_button(&signed, "tokens", t.id, "token", "It stops working at once.")) }
            } } }
        } }
        form.stack.panel method="post" action="/console/tokens" {
            h3 { "New API token" }
            (signed.csrf_field())
            label for="scope" { "Scope" }
            select id="scope" name="scope" {
                option value="global" { "Global: every connection" }
                @for team in teams { option value=(team.id) { "Team " (team.name) ": its connections only" } }
            }
            label for="email" { "User's e-mail (shown as created_by)" }
            input id="email" name="email" type="email" autocomplete="off";
            div.actions { button type="submit" { "Create token" } }
        }
        h2 { "Vault secrets" }
        div.table-wrap { table {
            caption.visually-hidden { "Vault secrets" }
            thead { tr { th scope="col" { "Secret" } th scope="col" { "Environment" } th scope="col" { "Created" } th scope="col" { span.visually-hidden { "Actions" } } } }
            tbody { @for s in &secrets { tr {
                td { "#" (s.id) }
                td { (s.environment.as_str()) }
                td { (format_millis(s.created_at.as_millis())) }
                td { (revoke_button(&signed, "secrets", s.id, "secret", "Calls with it stop at once.")) }
            } } }
        } }
        form.stack.panel method="post" action="/console/secrets" {
            h3 { "New vault secret" }
            (signed.csrf_field())
            label for="environment" { "Environment" }
            select id="environment" name="environment" {
                option value="test" { "test (sk_test_…)" }
                option value="live" { "live (sk_live_…)" }
            }
            div.actions { button type="submit" { "Create secret" } }
        }
    };
    Ok(page(
        StatusCode::OK,
        "Tokens & secrets",
        Some((&signed, Area::Tokens)),
        content,
    ))
}

pub async fn create_token(
    State(state): State<AppState>,
    audit: AuditSlot,
    form: SignedForm,
) -> Result<Response, PageError> {
    form.signed.global()?;
    let scope = match form.fields.get("scope").unwrap_or("global") {
        "global" => TokenScope::Global,
        team => {
            let id: i64 = team
                .parse()
                .ok()
                .filter(|id| state.services.topology.team(*id).is_some())
                .ok_or_else(|| PageError::bad_request("choose global or a configured team"))?;
            TokenScope::Team(id)
        }
    };
    let email = form.fields.get("email");
    if email.is_some_and(|e| !e.contains('@') || e.len() > 254) {
        return Err(PageError::bad_request("that is not an e-mail address"));
    }
    let (id, token) = state.services.tokens.create(scope, email).await?;
    audit.target(id.to_string());
    show_once(
        &state,
        &form.signed,
        RevealKind::ApiToken,
        id.to_string(),
        token,
    )
    .await
}

pub async fn create_secret(
    State(state): State<AppState>,
    form: SignedForm,
) -> Result<Response, PageError> {
    form.signed.global()?;
    let environment = form
        .fields
        .get("environment")
        .and_then(Environment::parse)
        .ok_or_else(|| PageError::bad_request("choose the test or live environment"))?;
    let secret = state.services.vault_secrets.create(environment).await?;
    show_once(
        &state,
        &form.signed,
        RevealKind::VaultSecret,
        environment.as_str().to_owned(),
        secret,
    )
    .await
}

fn revoked(outcome: Revoked, what: &str) -> Result<Response, PageError> {
    match outcome {
        Revoked::Done(_) => Ok(Redirect::to("/console/tokens").into_response()),
        Revoked::NotFound => Err(PageError::not_found()),
        Revoked::LastGlobalToken => Err(PageError::new(
            StatusCode::CONFLICT,
            "Not revoked",
            format!(
                "{what} is the last global token: nobody could manage this install without it. Create another global token first."
            ),
        )),
    }
}

fn path_id(raw: &str) -> Result<i64, PageError> {
    raw.parse().map_err(|_| PageError::not_found())
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    form.signed.global()?;
    let id = path_id(&raw)?;
    let outcome = state.services.tokens.revoke(id).await?;
    revoked(outcome, &format!("Token #{id}"))
}

pub async fn revoke_secret(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    form.signed.global()?;
    let id = path_id(&raw)?;
    let outcome = state.services.vault_secrets.revoke(id).await?;
    revoked(outcome, &format!("Secret #{id}"))
}

/// The page right after a token, secret or connect link was made: its value, once.
pub async fn revealed(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Response, PageError> {
    let reveal = state.services.console.take_reveal(&signed.session).await?;
    let Some(reveal) = reveal else {
        let content = html! {
            h1 { "Nothing to show" }
            p { "A new value is shown once, on the page right after it was made, and this one has been shown already (or was made more than ten minutes ago)." }
            p { a href="/console/" { "Back to the console" } }
        };
        return Ok(page(
            StatusCode::OK,
            "Nothing to show",
            Some((&signed, Area::Tokens)),
            content,
        ));
    };
    let value = reveal.secret.expose_secret();
    let (title, area, body) = match reveal.kind {
        RevealKind::ApiToken => (
            "API token created",
            Area::Tokens,
            html! {
                p { "Token #" (reveal.subject) ". Send it as " code { "Authorization: Bearer …" } ". This is the only time it is shown." }
                (copyable("secret", "Token", value, false))
                p { a href="/console/tokens" { "Back to tokens" } }
            },
        ),
        RevealKind::VaultSecret => (
            "Vault secret created",
            Area::Tokens,
            html! {
                p { "A " (reveal.subject) " secret. Send it as " code { "x-pica-secret" } ". This is the only time it is shown." }
                (copyable("secret", "Secret", value, false))
                p { a href="/console/tokens" { "Back to tokens" } }
            },
        ),
        RevealKind::ConnectLink => (
            "Connect link made",
            Area::Vault,
            html! {
                p { "Hand this link to the end user. It works once and expires at " (reveal.subject) "." }
                (copyable("secret", "Link", value, false))
                p { a href="/console/vault" { "Back to the vault" } }
            },
        ),
        // Its own page shows it: kept again, and off there.
        RevealKind::DataConnectionPassword => {
            return show_once(&state, &signed, reveal.kind, reveal.subject, reveal.secret).await;
        }
    };
    let content = html! {
        h1 { (title) }
        section.reveal { (body) }
    };
    Ok(page(StatusCode::OK, title, Some((&signed, area)), content))
}
