//! The dialect's wire types: the JSON:API-style connection resource, its list with
//! absolute page links, and the documented create body.

use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};
use utoipa::{IntoParams, ToSchema};

use crate::api::AppState;
use crate::domain::data_connection::DataConnection;
use crate::domain::time::Timestamp;

/// A secret shown to its owner exactly once; redacted from `Debug`.
pub struct RevealedSecret(SecretString);

impl Serialize for RevealedSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedBy<'a> {
    id: i64,
    email: &'a str,
}

#[derive(Serialize, ToSchema)]
pub struct DataSourceEntry {
    source_name: String,
    source_id: i64,
    team_name: String,
    /// Table expressions to use in `FROM` through the gateway.
    data_sources: Vec<String>,
}

/// Borrowed from the connection: a list page is written from the in-memory snapshot
/// without copying its strings.
#[derive(Serialize, ToSchema)]
pub struct ConnectionAttributes<'a> {
    id: i64,
    #[schema(example = "clickhouse")]
    client_type: &'static str,
    note: Option<&'a str>,
    #[schema(example = "2025-11-07T13:20:55.652Z")]
    created_at: String,
    valid_until: Option<String>,
    host: &'a str,
    port: u16,
    username: &'a str,
    /// Present only in the create response.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    password: Option<RevealedSecret>,
    #[schema(example = "eu-nbg-2")]
    data_region: &'a str,
    ip_allowlist: Vec<String>,
    team_ids: Vec<i64>,
    team_names: Vec<&'a str>,
    created_by: Option<CreatedBy<'a>>,
    /// A Switchboard extension: queries admitted through the gateway (added in batches,
    /// a few seconds behind).
    query_count: u64,
    /// A Switchboard extension: response bytes sent through the gateway.
    response_bytes: u64,
    /// A Switchboard extension: the last query's time.
    last_used_at: Option<String>,
    /// Present on create and get.
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_query: Option<String>,
    /// Present on create and get.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_sources: Option<Vec<DataSourceEntry>>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionResource<'a> {
    /// The id as a string, JSON:API style.
    id: String,
    #[serde(rename = "type")]
    #[schema(example = "connection")]
    kind: &'static str,
    attributes: ConnectionAttributes<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionEnvelope<'a> {
    pub data: ConnectionResource<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct Pagination {
    pub first: String,
    pub last: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionList<'a> {
    pub data: Vec<ConnectionResource<'a>>,
    pub pagination: Pagination,
}

/// Body of `POST /api/v1/connections` (documentation; parsing is field by field so each
/// error can name its field).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateConnectionBody {
    /// Only `clickhouse`.
    client_type: String,
    /// Team names; not together with `team_ids`.
    team_names: Option<Vec<String>>,
    /// Team ids; not together with `team_names`.
    team_ids: Option<Vec<i64>>,
    /// A configured region name (or id).
    data_region: Option<String>,
    /// IPv4/IPv6 addresses or CIDR ranges.
    ip_allowlist: Option<Vec<String>>,
    /// ISO 8601 timestamp.
    valid_until: Option<String>,
    note: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Page number, from 1.
    page: Option<u64>,
    /// Items per page: default 50, at most 250 (larger values are capped).
    per_page: Option<u64>,
}

/// Which optional views of a connection a response carries.
pub enum View<'a> {
    ListItem,
    Detail,
    Created(&'a SecretString),
}

pub fn resource<'a>(
    state: &'a AppState,
    c: &'a DataConnection,
    view: View<'_>,
) -> ConnectionResource<'a> {
    let service = &state.services.data_connections;
    let teams = service.teams_of(c);
    let (sample_query, data_sources, password) = match view {
        View::ListItem => (None, None, None),
        View::Detail | View::Created(_) => {
            let password = match &view {
                View::Created(p) => Some(*p),
                _ => None,
            };
            let sources = service
                .data_sources(c)
                .into_iter()
                .map(|g| DataSourceEntry {
                    source_name: g.source_name,
                    source_id: g.source_id,
                    team_name: g.team_name,
                    data_sources: g.tables,
                })
                .collect();
            (
                Some(service.sample_query(c, password.map(|p| p.expose_secret()))),
                Some(sources),
                password.map(|p| RevealedSecret(p.clone())),
            )
        }
    };
    let team_ids = teams.iter().map(|t| t.id).collect();
    let team_names = teams.iter().map(|t| t.name.as_str()).collect();
    ConnectionResource {
        id: c.id.to_string(),
        kind: "connection",
        attributes: ConnectionAttributes {
            id: c.id,
            client_type: c.client_type.as_str(),
            note: c.note.as_deref(),
            created_at: c.created_at.to_iso8601_millis(),
            valid_until: c.valid_until.map(Timestamp::to_iso8601_millis),
            host: &c.host,
            port: c.port,
            username: &c.username,
            password,
            data_region: &c.region_id,
            ip_allowlist: c.ip_allowlist.to_strings(),
            team_ids,
            team_names,
            created_by: c.created_by.as_ref().map(|u| CreatedBy {
                id: u.id,
                email: &u.email,
            }),
            query_count: c.usage.queries,
            response_bytes: c.usage.response_bytes,
            last_used_at: c.usage.last_used_at.map(Timestamp::to_iso8601_millis),
            sample_query,
            data_sources,
        },
    }
}

/// One audit event, JSON:API style like the connections.
#[derive(Serialize, ToSchema)]
pub struct AuditEventResource {
    id: String,
    #[serde(rename = "type")]
    #[schema(example = "audit_event")]
    kind: &'static str,
    attributes: AuditEventAttributes,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventAttributes {
    id: i64,
    #[schema(example = "2025-07-19T16:19:29.702632Z")]
    at: String,
    /// api_token | vault_secret | cli | connect_link | anonymous
    actor_kind: &'static str,
    actor_id: Option<i64>,
    actor_user: Option<String>,
    #[schema(example = "data_connection.create")]
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    client_ip: Option<String>,
    /// success | refused | rejected | failed
    outcome: &'static str,
    status: Option<u16>,
}

impl From<crate::domain::audit::AuditEvent> for AuditEventResource {
    fn from(e: crate::domain::audit::AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            kind: "audit_event",
            attributes: AuditEventAttributes {
                id: e.id,
                at: crate::domain::integration::iso_micros(e.at),
                actor_kind: e.actor.kind.as_str(),
                actor_id: e.actor.id,
                actor_user: e.actor.user,
                action: e.action,
                target: e.target,
                request_id: e.request_id,
                client_ip: e.client_ip,
                outcome: e.outcome.as_str(),
                status: e.status,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventList {
    pub data: Vec<AuditEventResource>,
    pub pagination: Pagination,
}

/// Query parameters of the audit listing (documentation; parsed by hand).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditParams {
    /// `api_token:ID`, `vault_secret:ID`, `api_token`, `cli`, `connect_link`, `anonymous`, or a user's e-mail.
    actor: Option<String>,
    /// e.g. `data_connection.create`, `api_token.revoke`, `access.refused`.
    action: Option<String>,
    /// A connection's id, a token's id...
    target: Option<String>,
    /// success | refused | rejected | failed
    outcome: Option<String>,
    /// ISO 8601, inclusive.
    since: Option<String>,
    /// ISO 8601, exclusive.
    until: Option<String>,
    /// From 1.
    page: Option<u64>,
    /// Default 50, at most 250.
    per_page: Option<u64>,
}
