//! The vault: integration connections of the session's environment, filtered as the API's
//! list call filters them (the same query parser), each with its health; a connection's
//! page edits its name, tags and active flag and deletes it; a "connect link" makes a
//! connect session to hand to an end user.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use secrecy::SecretString;

use super::auth::{Signed, SignedForm};
use super::data::pager;
use super::{Area, PageError, format_micros, page, show_once};
use crate::api::AppState;
use crate::api::pica::parse::{comma_list, parse_list};
use crate::domain::connect::{ConnectError, NewSession};
use crate::domain::console::RevealKind;
use crate::domain::integration::{
    ConnectionState, Environment, IdentityType, IntegrationConnection, Patch,
};
use crate::domain::pagination::{PageLinks, PageRequest};

fn environment_of(signed: &Signed) -> Result<Environment, PageError> {
    match signed.session.actor {
        crate::domain::console::ConsoleActor::Vault { environment, .. } => Ok(environment),
        crate::domain::console::ConsoleActor::Token(_) => Err(PageError::forbidden(
            "The vault needs a session opened with a vault secret (sk_test_… or sk_live_…). Sign out and sign in with one.",
        )),
    }
}

fn state_tag(state: ConnectionState) -> Markup {
    let class = match state {
        ConnectionState::Operational => "tag good",
        ConnectionState::Degraded => "tag warn",
        ConnectionState::Failed => "tag bad",
        ConnectionState::Unknown => "tag",
    };
    html! { span class=(class) { (state.as_str()) } }
}

fn next_refresh(c: &IntegrationConnection) -> String {
    match (c.health.retry_at, c.health.expires_at) {
        (Some(retry), _) => format!("retry {}", format_micros(retry)),
        (None, Some(expires)) => format!("token expires {}", format_micros(expires)),
        (None, None) => "no refresh".into(),
    }
}

/// The query's value of `name`, for filling the filter form again.
fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn filter_form(state: &AppState, pairs: &[(String, String)]) -> Markup {
    let platforms = state.services.integrations.catalog().platforms();
    let chosen_state = query_value(pairs, "state");
    let active = query_value(pairs, "active");
    let platform = query_value(pairs, "platform");
    html! {
        form.filters method="get" action="/console/vault" role="search" aria-label="Filter connections" {
            div {
                label for="f-platform" { "Platform" }
                select id="f-platform" name="platform" {
                    option value="" { "Any" }
                    @for p in platforms {
                        option value=(p.key) selected[platform == p.key] { (p.name) }
                    }
                }
            }
            div {
                label for="f-identity" { "Identity" }
                input id="f-identity" name="identity" type="text" value=(query_value(pairs, "identity"));
            }
            div {
                label for="f-tags" { "Tags" }
                input id="f-tags" name="tags" type="text" value=(query_value(pairs, "tags")) placeholder="a,b";
            }
            div {
                label for="f-active" { "Active" }
                select id="f-active" name="active" {
                    option value="true" selected[active != "false"] { "Active" }
                    option value="false" selected[active == "false"] { "Inactive" }
                }
            }
            div {
                label for="f-state" { "State" }
                select id="f-state" name="state" {
                    option value="" { "Any" }
                    @for s in [ConnectionState::Operational, ConnectionState::Degraded, ConnectionState::Failed, ConnectionState::Unknown] {
                        option value=(s.as_str()) selected[chosen_state == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            div.filter-actions {
                button type="submit" { "Filter" }
                a href="/console/vault" { "Clear" }
            }
        }
    }
}

fn connect_link_form(state: &AppState, signed: &Signed) -> Markup {
    let platforms = state.services.integrations.catalog().platforms();
    html! {
        details.panel {
            summary { "Make a connect link" }
            p.hint { "A single-use link for an end user to link their own account; the connection appears here when they finish." }
            form.stack method="post" action="/console/vault/connect-link" {
                (signed.csrf_field())
                label for="cl-identity" { "End user's identity" }
                input id="cl-identity" name="identity" type="text" required placeholder="user_123";
                label for="cl-identity-type" { "Identity type" }
                select id="cl-identity-type" name="identity_type" {
                    @for t in ["user", "team", "organization", "project"] { option value=(t) { (t) } }
                }
                label for="cl-platform" { "Platform" }
                select id="cl-platform" name="platform" {
                    option value="" { "Let them choose" }
                    @for p in platforms.iter().filter(|p| p.linkable()) {
                        option value=(p.key) { (p.name) }
                    }
                }
                label for="cl-tags" { "Tags" }
                input id="cl-tags" name="tags" type="text" placeholder="a,b";
                div.actions { button type="submit" { "Make link" } }
            }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let environment = environment_of(&signed)?;
    let raw = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .filter(|(k, v)| k != "page" && !v.trim().is_empty())
        .collect();
    // The API's parser: the console filters and pages exactly as
    // `GET /v1/vault/connections` does (its page size, its refusals).
    let (filter, offset, limit, number) =
        parse_list(Some(&raw)).map_err(|e| PageError::bad_request(e.to_string()))?;
    let request = PageRequest {
        number,
        size: limit as u64,
    };
    let (connections, total) = state
        .services
        .integrations
        .list(environment, &filter, offset, limit)
        .await?;
    let base = {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.extend_pairs(&pairs);
        format!("/console/vault?{}", s.finish())
    };
    let content = html! {
        div.heading {
            h1 { "Vault" small.muted { " · " (environment.as_str()) } }
        }
        (filter_form(&state, &pairs))
        (connect_link_form(&state, &signed))
        @if connections.is_empty() {
            p.empty { "No connections match." }
        } @else {
            div.table-wrap { table {
                caption.visually-hidden { "Integration connections" }
                thead { tr {
                    th scope="col" { "Connection" } th scope="col" { "Identity" } th scope="col" { "Tags" }
                    th scope="col" { "State" } th scope="col" { "Last error" } th scope="col" { "Next refresh" }
                } }
                tbody { @for c in &connections { tr {
                    td {
                        a href={ "/console/vault/" (c.id) } { (c.name.as_deref().unwrap_or(&c.platform)) }
                        br; small.muted { (c.platform) @if !c.active { " · inactive" } }
                    }
                    td { (c.identity) " " small.muted { "(" (c.identity_type.as_str()) ")" } }
                    td { @for t in &c.tags { span.tag { (t) } " " } }
                    td { (state_tag(c.state)) }
                    td { @match &c.health.last_error { Some(e) => span.error-text { (e) }, None => span.muted { "none" } } }
                    td { (next_refresh(c)) }
                } } }
            } }
        }
        (pager(&base, PageLinks::new(request, total), number, total))
    };
    Ok(page(
        StatusCode::OK,
        "Vault",
        Some((&signed, Area::Vault)),
        content,
    ))
}

fn uuid_of(raw: &str) -> Result<&str, PageError> {
    uuid::Uuid::try_parse(raw)
        .map(|_| raw)
        .map_err(|_| PageError::not_found())
}

/// The connection a path names, in the session's environment.
async fn connection_of(
    state: &AppState,
    signed: &Signed,
    raw: &str,
) -> Result<(Environment, IntegrationConnection), PageError> {
    let environment = environment_of(signed)?;
    let connection = state
        .services
        .integrations
        .get(environment, uuid_of(raw)?)
        .await?;
    Ok((environment, connection))
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path(raw): Path<String>,
) -> Result<Response, PageError> {
    let (_, c) = connection_of(&state, &signed, &raw).await?;
    Ok(detail(&signed, &c, None, StatusCode::OK))
}

fn detail(
    signed: &Signed,
    c: &IntegrationConnection,
    notice: Option<&str>,
    status: StatusCode,
) -> Response {
    let title = c.name.clone().unwrap_or_else(|| c.platform.clone());
    let h = &c.health;
    let content = html! {
        p.crumbs { a href="/console/vault" { "Vault" } " / " (title) }
        h1 { (title) }
        @if let Some(n) = notice { p.notice.good role="status" { (n) } }
        dl.facts {
            dt { "Platform" } dd { (c.platform) " " small.muted { (c.platform_version) } }
            dt { "Key" } dd { code { (c.key) } }
            dt { "Identity" } dd { (c.identity) " (" (c.identity_type.as_str()) ")" }
            dt { "State" } dd { (state_tag(c.state)) @if !c.active { " " span.tag { "inactive" } } }
            dt { "Last error" } dd { @match &h.last_error { Some(e) => { (e) @if let Some(at) = h.last_error_at { " " small.muted { (format_micros(at)) } } }, None => "none" } }
            dt { "Next refresh" } dd { (next_refresh(c)) }
            dt { "Last used" } dd { @match h.last_used_at { Some(at) => (format_micros(at)), None => "never" } }
            dt { "Refreshes" } dd { (h.refresh_attempts) " attempted, " (h.consecutive_failures) " failed in a row" }
            dt { "Created" } dd { (format_micros(c.created_at)) }
            dt { "Version" } dd { (c.version) }
        }
        h2 { "Edit" }
        form.stack method="post" action={ "/console/vault/" (c.id) } {
            (signed.csrf_field())
            input type="hidden" name="version" value=(c.version);
            label for="name" { "Name" }
            input id="name" name="name" type="text" value=(c.name.as_deref().unwrap_or(""));
            label for="tags" { "Tags" }
            input id="tags" name="tags" type="text" value=(c.tags.join(", ")) aria-describedby="tags-hint";
            p.hint id="tags-hint" { "Separated by commas." }
            div.check {
                input id="active" name="active" type="checkbox" value="true" checked[c.active];
                label for="active" { "Active (inactive connections refuse passthrough calls)" }
            }
            div.actions { button type="submit" { "Save" } }
        }
        h2 { "Delete" }
        p { a.button.danger href={ "/console/vault/" (c.id) "/delete" } { "Delete this connection…" } }
    };
    page(status, &title, Some((signed, Area::Vault)), content)
}

pub async fn update(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    let environment = environment_of(&form.signed)?;
    let patch = Patch {
        tags: Some(comma_list(form.fields.get("tags").unwrap_or(""))),
        name: Some(form.fields.get("name").map(str::to_owned)),
        active: Some(form.fields.get("active") == Some("true")),
        credentials: None,
        // Saved over what the page showed only.
        expected_version: Some(form.fields.get("version").unwrap_or("").to_owned()),
    };
    let updated = state
        .services
        .integrations
        .patch(environment, uuid_of(&raw)?, patch)
        .await?;
    Ok(detail(
        &form.signed,
        &updated,
        Some("Saved."),
        StatusCode::OK,
    ))
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    signed: Signed,
    Path(raw): Path<String>,
) -> Result<Response, PageError> {
    let (_, c) = connection_of(&state, &signed, &raw).await?;
    let name = c.name.clone().unwrap_or_else(|| c.platform.clone());
    let content = html! {
        div.narrow {
            h1 { "Delete “" (name) "” of " (c.identity) "?" }
            p { "Its stored credential is destroyed and passthrough calls with its key stop at once. This cannot be undone." }
            form method="post" action={ "/console/vault/" (c.id) "/delete" } {
                (signed.csrf_field())
                div.actions {
                    button.danger type="submit" { "Delete “" (name) "”" }
                    a href={ "/console/vault/" (c.id) } { "Keep it" }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        "Delete connection",
        Some((&signed, Area::Vault)),
        content,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    let environment = environment_of(&form.signed)?;
    state
        .services
        .integrations
        .delete(environment, uuid_of(&raw)?)
        .await?;
    Ok(Redirect::to("/console/vault").into_response())
}

pub async fn connect_link(
    State(state): State<AppState>,
    form: SignedForm,
) -> Result<Response, PageError> {
    let environment = environment_of(&form.signed)?;
    let fields = &form.fields;
    let identity_type = IdentityType::parse(fields.get("identity_type").unwrap_or("user"))
        .ok_or_else(|| {
            PageError::bad_request("identity type must be user, team, organization or project")
        })?;
    let request = NewSession {
        identity: fields.get("identity").unwrap_or("").to_owned(),
        identity_type,
        platforms: fields
            .get("platform")
            .map(|p| vec![p.to_owned()])
            .unwrap_or_default(),
        tags: comma_list(fields.get("tags").unwrap_or("")),
        name: None,
        reconnect_key: None,
        return_url: None,
    };
    let created = match state.services.connect.create(environment, request).await {
        Ok(created) => created,
        Err(ConnectError::Invalid { message, .. }) => return Err(PageError::bad_request(message)),
        Err(ConnectError::Store(e)) => return Err(e.into()),
        Err(other) => return Err(PageError::bad_request(other.to_string())),
    };
    show_once(
        &state,
        &form.signed,
        RevealKind::ConnectLink,
        crate::domain::integration::iso_micros(created.expires_at),
        SecretString::from(created.url),
    )
    .await
}
