//! Data connections: the list, the create form, a connection's page (its password shown
//! there once, right after create) and delete with a confirmation.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use secrecy::ExposeSecret;

use super::auth::{FormFields, Signed, SignedForm};
use super::{Area, PageError, copyable, expiry, format_millis, page, show_once};
use crate::api::AppState;
use crate::api::audit::AuditSlot;
use crate::domain::allowlist::{AllowEntry, IpAllowlist, MAX_ENTRIES as MAX_ALLOWLIST};
use crate::domain::console::RevealKind;
use crate::domain::data_connection::{
    ClientType, CreateDataConnection, DataConnection, DataConnectionError, FieldError, TeamScope,
    TeamSelector,
};
use crate::domain::pagination::{PageLinks, PageRequest};
use crate::domain::ports::ConnectionUpdate;
use crate::domain::time::Timestamp;
use crate::domain::token::{Principal, TokenScope};

const PER_PAGE: u64 = 50;

#[derive(serde::Deserialize)]
pub struct ListQuery {
    page: Option<String>,
    deleted: Option<String>,
}

/// A page number from the query; anything that is not a positive number is page 1.
fn page_number(raw: Option<&str>) -> u64 {
    raw.and_then(|p| p.parse::<u64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
}

pub(super) fn pager(base: &str, links: PageLinks, number: u64, total: u64) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager aria-label="Pages" {
            @if let Some(prev) = links.prev {
                a href={ (base) (sep) "page=" (prev) } rel="prev" { "← Previous" }
            }
            span { "Page " (number.min(links.last)) " of " (links.last) " · " (total) " in all" }
            @if let Some(next) = links.next {
                a href={ (base) (sep) "page=" (next) } rel="next" { "Next →" }
            }
        }
    }
}

fn region_name(state: &AppState, c: &DataConnection) -> String {
    state
        .services
        .topology
        .region_by_id(&c.region_id)
        .map_or_else(|| c.region_id.clone(), |r| r.name.clone())
}

fn team_names(state: &AppState, c: &DataConnection) -> String {
    match &c.teams {
        TeamScope::All => "All teams".into(),
        TeamScope::Teams(_) => state
            .services
            .data_connections
            .teams_of(c)
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn allowlist_text(c: &DataConnection) -> String {
    let entries = c.ip_allowlist.to_strings();
    if entries.is_empty() {
        "Any address".into()
    } else {
        entries.join(", ")
    }
}

/// Queries, bytes and the last use, as counted by the gateway.
fn usage_text(c: &DataConnection) -> String {
    let u = c.usage;
    match u.last_used_at {
        None => "never".into(),
        Some(at) => format!(
            "{} {}, {} bytes; last {}",
            u.queries,
            if u.queries == 1 { "query" } else { "queries" },
            u.response_bytes,
            super::relative(at.as_millis(), Timestamp::now().as_millis())
        ),
    }
}

fn expiry_cell(c: &DataConnection) -> Markup {
    let (text, expired) = expiry(
        c.valid_until.map(Timestamp::as_millis),
        Timestamp::now().as_millis(),
    );
    html! {
        @if expired { span.tag.bad { (text) } } @else { span { (text) } }
        @if let Some(at) = c.valid_until {
            br; small.muted { (format_millis(at.as_millis())) }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let principal = signed.token()?;
    let number = page_number(query.page.as_deref());
    let request = PageRequest {
        number,
        size: PER_PAGE,
    };
    let (connections, total) = state
        .services
        .data_connections
        .list_for(principal, request)
        .await?;
    let links = PageLinks::new(request, total);
    let content = html! {
        div.heading {
            h1 { "Data connections" }
            a.button href="/console/data-connections/new" { "New connection" }
        }
        @if let TokenScope::Team(team) = principal.scope {
            p.lede { "Connections of team " (team_label(&state, team)) " only, as your team token allows." }
        }
        @if let Some(id) = query.deleted.as_deref().and_then(|d| d.parse::<i64>().ok()) {
            p.notice.good role="status" { "Connection " (id) " was deleted. Its credentials stopped working at once." }
        }
        @if connections.is_empty() {
            p.empty { "No data connections yet." }
        } @else {
            div.table-wrap {
                table {
                    caption.visually-hidden { "Data connections" }
                    thead { tr {
                        th scope="col" { "Note" } th scope="col" { "Username" } th scope="col" { "Region" }
                        th scope="col" { "Teams" } th scope="col" { "Allowlist" } th scope="col" { "Expiry" }
                        th scope="col" { "Created by" } th scope="col" { "Used" }
                    } }
                    tbody {
                        @for c in &connections {
                            tr {
                                td { a href={ "/console/data-connections/" (c.id) } {
                                    @match &c.note { Some(n) => (n), None => { "Connection " (c.id) } }
                                } }
                                td { code { (c.username) } }
                                td { (region_name(&state, c)) }
                                td { (team_names(&state, c)) }
                                td { (allowlist_text(c)) }
                                td { (expiry_cell(c)) }
                                td { @match &c.created_by { Some(u) => (u.email), None => span.muted { "a token without a user" } } }
                                td { (usage_text(c)) }
                            }
                        }
                    }
                }
            }
        }
        (pager("/console/data-connections", links, number, total))
    };
    Ok(page(
        StatusCode::OK,
        "Data connections",
        Some((&signed, Area::DataConnections)),
        content,
    ))
}

fn team_label(state: &AppState, team: i64) -> String {
    state
        .services
        .topology
        .team(team)
        .map_or_else(|| format!("#{team}"), |t| t.name.clone())
}

/// What the create form was sent, to fill it again beside its errors.
#[derive(Default)]
struct Draft {
    teams: Vec<String>,
    region: Option<String>,
    allowlist: String,
    valid_until: String,
    note: String,
}

fn field_errors<'a>(errors: &'a [FieldError], field: &str) -> Vec<&'a str> {
    errors
        .iter()
        .filter(|e| e.field == field || (field == "teams" && e.field.starts_with("team")))
        .map(|e| e.message.as_str())
        .collect()
}

fn errors_for(id: &str, messages: &[&str]) -> Markup {
    html! {
        @if !messages.is_empty() {
            ul.field-error id={ (id) "-error" } role="alert" {
                @for m in messages { li { (m) } }
            }
        }
    }
}

fn create_form(
    state: &AppState,
    signed: &Signed,
    principal: &Principal,
    draft: &Draft,
    errors: &[FieldError],
) -> Markup {
    let topology = &state.services.topology;
    let region_errors = field_errors(errors, "data_region");
    let team_errors = field_errors(errors, "teams");
    let allow_errors = field_errors(errors, "ip_allowlist");
    let until_errors = field_errors(errors, "valid_until");
    let note_errors = field_errors(errors, "note");
    html! {
        h1 { "New data connection" }
        @if !errors.is_empty() {
            p.notice.bad role="alert" { "The connection was not created: fix what is marked below." }
        }
        form.stack method="post" action="/console/data-connections" {
            (signed.csrf_field())
            fieldset {
                legend { "Teams" }
                @match principal.scope {
                    TokenScope::Team(team) => {
                        p { "Team " strong { (team_label(state, team)) } " (a team token creates connections for its own team)." }
                    }
                    TokenScope::Global => {
                        @if topology.teams().is_empty() {
                            p.hint { "No teams are configured: the connection reads what the organisation's ClickHouse user can." }
                        }
                        @for team in topology.teams() {
                            @let id = format!("team-{}", team.id);
                            div.check {
                                input type="checkbox" id=(id) name="team" value=(team.id)
                                    checked[draft.teams.iter().any(|t| *t == team.id.to_string())];
                                label for=(id) { (team.name) " " small.muted { "(" (team.sources.len()) @if team.sources.len() == 1 { " source)" } @else { " sources)" } } }
                            }
                        }
                        @if !topology.teams().is_empty() {
                            p.hint { "None chosen: every team, including teams added later." }
                        }
                    }
                }
                (errors_for("teams", &team_errors))
            }
            label for="data_region" { "Region" }
            select id="data_region" name="data_region" {
                @for region in topology.regions() {
                    @let chosen = draft.region.as_deref().map_or(region.default, |r| r == region.name);
                    option value=(region.name) selected[chosen] {
                        (region.name) " (" (region.id) ")" @if region.default { " · default" }
                    }
                }
            }
            (errors_for("data_region", &region_errors))
            label for="ip_allowlist" { "IP allowlist" }
            textarea id="ip_allowlist" name="ip_allowlist" rows="3" spellcheck="false"
                data-allowlist="" aria-describedby="ip_allowlist-hint ip_allowlist-error"
                placeholder="203.0.113.7\n10.0.0.0/8" { (draft.allowlist) }
            p.hint id="ip_allowlist-hint" { "Addresses and CIDR ranges, one per line or separated by commas. Empty: any address." }
            p.field-error.live id="ip_allowlist-live" aria-live="polite" {}
            (errors_for("ip_allowlist", &allow_errors))
            label for="valid_until" { "Expires at (UTC)" }
            input id="valid_until" name="valid_until" type="datetime-local" value=(draft.valid_until)
                aria-describedby="valid_until-hint";
            p.hint id="valid_until-hint" { "Empty: never expires." }
            (errors_for("valid_until", &until_errors))
            label for="note" { "Note" }
            input id="note" name="note" type="text" maxlength="1000" value=(draft.note)
                placeholder="What it is for, and for whom";
            (errors_for("note", &note_errors))
            div.actions {
                button type="submit" { "Create connection" }
                a href="/console/data-connections" { "Cancel" }
            }
        }
    }
}

pub async fn new_form(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Response, PageError> {
    let principal = signed.token()?;
    let form = create_form(&state, &signed, principal, &Draft::default(), &[]);
    Ok(page(
        StatusCode::OK,
        "New data connection",
        Some((&signed, Area::DataConnections)),
        form,
    ))
}

/// `2026-12-24T18:00` (what `datetime-local` sends, seconds optional) as UTC.
fn parse_local_utc(text: &str) -> Option<Timestamp> {
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| Timestamp::from_millis(t.and_utc().timestamp_millis()))
        .or_else(|| Timestamp::parse_iso8601(text))
}

/// An allowlist as typed: entries separated by commas or white space.
fn allowlist_field(text: &str, errors: &mut Vec<FieldError>) -> IpAllowlist {
    let entries: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > MAX_ALLOWLIST {
        errors.push(FieldError {
            field: "ip_allowlist",
            message: format!("at most {MAX_ALLOWLIST} entries, got {}", entries.len()),
        });
    }
    let mut allow = Vec::new();
    for entry in entries.iter().take(MAX_ALLOWLIST) {
        match entry.parse::<AllowEntry>() {
            Ok(e) => allow.push(e),
            Err(e) => errors.push(FieldError {
                field: "ip_allowlist",
                message: e.to_string(),
            }),
        }
    }
    IpAllowlist::new(allow)
}

/// A time as a `datetime-local` field holds it: `2099-06-01T12:30` (UTC).
fn minute_text(t: Timestamp) -> String {
    t.to_iso8601_millis().chars().take(16).collect()
}

/// An expiry as the picker sends it; empty: never.
fn valid_until_field(text: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    if text.is_empty() {
        return None;
    }
    let parsed = parse_local_utc(text);
    if parsed.is_none() {
        errors.push(FieldError {
            field: "valid_until",
            message: "not a date and time; pick one, or leave it empty".into(),
        });
    }
    parsed
}

/// The create form as the domain's request (with what parsed), and what did not parse.
fn parse_create(
    fields: &FormFields,
    principal: &Principal,
) -> (Draft, CreateDataConnection, Vec<FieldError>) {
    let draft = Draft {
        teams: fields.all("team").into_iter().map(str::to_owned).collect(),
        region: fields.get("data_region").map(str::to_owned),
        allowlist: fields.get("ip_allowlist").unwrap_or("").to_owned(),
        valid_until: fields.get("valid_until").unwrap_or("").to_owned(),
        note: fields.get("note").unwrap_or("").to_owned(),
    };
    let mut errors = Vec::new();
    let teams = match principal.scope {
        TokenScope::Team(team) => TeamSelector::Ids(vec![team]),
        TokenScope::Global if draft.teams.is_empty() => TeamSelector::Unspecified,
        TokenScope::Global => {
            let ids: Option<Vec<i64>> = draft.teams.iter().map(|t| t.parse().ok()).collect();
            match ids {
                Some(ids) => TeamSelector::Ids(ids),
                None => {
                    errors.push(FieldError {
                        field: "team_ids",
                        message: "a chosen team is not a team id".into(),
                    });
                    TeamSelector::Unspecified
                }
            }
        }
    };
    let ip_allowlist = allowlist_field(&draft.allowlist, &mut errors);
    let valid_until = valid_until_field(&draft.valid_until, &mut errors);
    let request = CreateDataConnection {
        client_type: ClientType::ClickHouse,
        teams,
        data_region: draft.region.clone(),
        ip_allowlist,
        valid_until,
        note: Some(draft.note.clone()).filter(|n| !n.is_empty()),
    };
    (draft, request, errors)
}

pub async fn create(
    State(state): State<AppState>,
    audit: AuditSlot,
    form: SignedForm,
) -> Result<Response, PageError> {
    let signed = &form.signed;
    let principal = signed.token()?;
    let (draft, request, mut errors) = parse_create(&form.fields, principal);
    let connections = &state.services.data_connections;
    let outcome = if errors.is_empty() {
        connections.create(principal, request).await
    } else {
        // The domain's rules for what did parse too, so one answer names every field.
        errors.extend(connections.check_fields(
            request.data_region.as_deref(),
            &request.teams,
            request.valid_until,
            request.note.as_deref(),
        ));
        Err(DataConnectionError::Invalid(errors))
    };
    match outcome {
        Ok(created) => {
            let id = created.connection.id;
            audit.target(id.to_string());
            show_once(
                &state,
                signed,
                RevealKind::DataConnectionPassword,
                id.to_string(),
                created.password,
            )
            .await
        }
        Err(DataConnectionError::Invalid(errors)) => Ok(page(
            StatusCode::BAD_REQUEST,
            "New data connection",
            Some((signed, Area::DataConnections)),
            create_form(&state, signed, principal, &draft, &errors),
        )),
        Err(e) => Err(e.into()),
    }
}

fn connection_id(raw: &str) -> Result<i64, PageError> {
    raw.parse().map_err(|_| PageError::not_found())
}

/// The connection the path names, if the signed-in token may manage it (else 404).
async fn managed_connection(
    state: &AppState,
    signed: &Signed,
    raw: &str,
) -> Result<DataConnection, PageError> {
    let principal = signed.token()?;
    let id = connection_id(raw)?;
    Ok(state
        .services
        .data_connections
        .get_for(principal, id)
        .await?)
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path(raw): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let edited = query.edited.is_some();
    let c = managed_connection(&state, &signed, &raw).await?;
    let id = c.id;
    let connections = &state.services.data_connections;
    let reveal = state
        .services
        .console
        .take_reveal_for(
            &signed.session,
            RevealKind::DataConnectionPassword,
            &id.to_string(),
        )
        .await?;
    let password = reveal.as_ref().map(|r| r.secret.expose_secret());
    let sample = connections.sample_query(&c, password);
    let sources = connections.data_sources(&c);
    let title = c.note.clone().unwrap_or_else(|| format!("Connection {id}"));
    let content = html! {
        p.crumbs { a href="/console/data-connections" { "Data connections" } " / " (id) }
        h1 { (title) }
        @if let Some(password) = password {
            section.reveal aria-labelledby="reveal-title" {
                h2 id="reveal-title" { "New password: copy it now" }
                p { "This is the only time the password is shown. It is stored only as a hash: if it is lost, delete the connection and create another." }
                (copyable("password", "Password", password, false))
            }
        }
        dl.facts {
            dt { "Username" } dd { code { (c.username) } }
            dt { "Host" } dd { code { (c.host) ":" (c.port) } }
            dt { "Region" } dd { (region_name(&state, &c)) " (" (c.region_id) ")" }
            dt { "Teams" } dd { (team_names(&state, &c)) }
            dt { "IP allowlist" } dd { (allowlist_text(&c)) }
            dt { "Expiry" } dd { (expiry_cell(&c)) }
            dt { "Created" } dd { (format_millis(c.created_at.as_millis())) }
            dt { "Created by" } dd { @match &c.created_by { Some(u) => (u.email), None => "a token without a user" } }
            dt { "Used" } dd { (usage_text(&c)) }
        }
        h2 { "Sample query" }
        @if password.is_none() {
            p.hint { "With " code { "INSERT_PASSWORD" } " in place of the password, which is never shown again." }
        }
        (copyable("sample_query", "Command", &sample, true))
        h2 { "Data sources" }
        @if sources.is_empty() {
            p.empty { "No sources are configured for its teams." }
        } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "Source" } th scope="col" { "Team" } th scope="col" { "Tables" } } }
                tbody { @for s in &sources { tr {
                    td { (s.source_name) " " small.muted { "#" (s.source_id) } }
                    td { (s.team_name) }
                    td { @for t in &s.tables { code { (t) } " " } }
                } } }
            } }
        }
        h2 { "Change" }
        @if edited { p.notice.good role="status" { "Saved. The gateway applies it from the next query." } }
        form.stack method="post" action={ "/console/data-connections/" (id) "/edit" } {
            (signed.csrf_field())
            label for="edit-note" { "Note" }
            input id="edit-note" name="note" type="text" maxlength="1000" value=(c.note.as_deref().unwrap_or(""));
            label for="edit-allowlist" { "IP allowlist" }
            textarea id="edit-allowlist" name="ip_allowlist" rows="3" spellcheck="false" data-allowlist=""
                aria-describedby="edit-allowlist-live" { (c.ip_allowlist.to_strings().join("\n")) }
            p.field-error.live id="edit-allowlist-live" aria-live="polite" {}
            label for="edit-valid-until" { "Expires at (UTC; empty: never)" }
            input id="edit-valid-until" name="valid_until" type="datetime-local"
                value=(c.valid_until.map(minute_text).unwrap_or_default());
            div.actions { button type="submit" { "Save changes" } }
        }
        h2 { "New password" }
        form.stack method="post" action={ "/console/data-connections/" (id) "/rotate" } {
            (signed.csrf_field())
            label for="overlap" { "The current password keeps working for" }
            select id="overlap" name="overlap_seconds" {
                option value="0" { "no time: it stops at once" }
                option value="600" { "10 minutes" }
                option value="3600" { "1 hour" }
                option value="86400" { "1 day" }
            }
            div.actions { button.secondary type="submit" { "Rotate password" } }
        }
        h2 { "Delete" }
        p { a.button.danger href={ "/console/data-connections/" (id) "/delete" } { "Delete this connection…" } }
    };
    Ok(page(
        StatusCode::OK,
        &title,
        Some((&signed, Area::DataConnections)),
        content,
    ))
}

fn connection_name(c: &DataConnection) -> String {
    match &c.note {
        Some(note) => format!("“{note}” ({})", c.username),
        None => format!("connection {} ({})", c.id, c.username),
    }
}

#[derive(serde::Deserialize)]
pub struct ShowQuery {
    edited: Option<String>,
}

pub async fn edit(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    let current = managed_connection(&state, &form.signed, &raw).await?;
    let id = current.id;
    let mut errors = Vec::new();
    let until_text = form.fields.get("valid_until").unwrap_or("");
    // An expiry left as shown is not changed (it may have passed meanwhile).
    let until_unchanged = current
        .valid_until
        .map(|t| minute_text(t) == until_text)
        .unwrap_or(until_text.is_empty());
    let update = ConnectionUpdate {
        note: Some(form.fields.get("note").map(str::to_owned)),
        valid_until: (!until_unchanged).then(|| valid_until_field(until_text, &mut errors)),
        ip_allowlist: Some(allowlist_field(
            form.fields.get("ip_allowlist").unwrap_or(""),
            &mut errors,
        )),
    };
    if !errors.is_empty() {
        return Err(DataConnectionError::Invalid(errors).into());
    }
    state.services.data_connections.update(id, update).await?;
    Ok(Redirect::to(&format!("/console/data-connections/{id}?edited=1")).into_response())
}

pub async fn rotate(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    let id = managed_connection(&state, &form.signed, &raw).await?.id;
    let overlap = form
        .fields
        .get("overlap_seconds")
        .unwrap_or("0")
        .parse::<u64>()
        .map_err(|_| {
            PageError::bad_request("choose how long the current password keeps working")
        })?;
    let rotated = state
        .services
        .data_connections
        .rotate_password(id, std::time::Duration::from_secs(overlap))
        .await?;
    show_once(
        &state,
        &form.signed,
        RevealKind::DataConnectionPassword,
        id.to_string(),
        rotated.password,
    )
    .await
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    signed: Signed,
    Path(raw): Path<String>,
) -> Result<Response, PageError> {
    let c = managed_connection(&state, &signed, &raw).await?;
    let id = c.id;
    let name = connection_name(&c);
    let content = html! {
        div.narrow {
            h1 { "Delete " (name) "?" }
            p { "Its username and password stop working at once, in the gateway of every replica. This cannot be undone." }
            form method="post" action={ "/console/data-connections/" (id) "/delete" } {
                (signed.csrf_field())
                div.actions {
                    button.danger type="submit" { "Delete " (name) }
                    a href={ "/console/data-connections/" (id) } { "Keep it" }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        "Delete connection",
        Some((&signed, Area::DataConnections)),
        content,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    let principal = form.signed.token()?;
    let id = connection_id(&raw)?;
    state
        .services
        .data_connections
        .delete_for(principal, id)
        .await?;
    Ok(Redirect::to(&format!("/console/data-connections?deleted={id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_local_values_are_utc() {
        let t = parse_local_utc("2030-01-02T03:04").unwrap();
        assert_eq!(t.to_iso8601_millis(), "2030-01-02T03:04:00.000Z");
        assert!(parse_local_utc("2030-01-02T03:04:05").is_some());
        assert!(parse_local_utc("2030-01-02T03:04:05Z").is_some());
        assert!(parse_local_utc("tomorrow").is_none());
    }

    #[test]
    fn page_numbers_default_to_one() {
        assert_eq!(page_number(None), 1);
        assert_eq!(page_number(Some("0")), 1);
        assert_eq!(page_number(Some("x")), 1);
        assert_eq!(page_number(Some("3")), 3);
    }
}
