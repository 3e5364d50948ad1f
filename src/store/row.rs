//! Connection rows as JSON objects built by the database: one decoding for every backend.

use serde::Deserialize;

use super::StoreError;
use crate::domain::allowlist::{AllowEntry, IpAllowlist};
use crate::domain::data_connection::{ClientType, DataConnection, TeamScope};
use crate::domain::time::Timestamp;
use crate::domain::token::User;

#[derive(Deserialize)]
pub struct ConnectionRow {
    id: i64,
    client_type: String,
    note: Option<String>,
    created_at: i64,
    valid_until: Option<i64>,
    region_id: String,
    host: String,
    port: u16,
    username: String,
    ip_allowlist: Vec<String>,
    team_ids: Option<Vec<i64>>,
    created_by: Option<i64>,
    created_by_email: Option<String>,
}

pub fn corrupt(what: &str, id: i64) -> StoreError {
    StoreError::Corrupt(format!("data connection {id}: {what}"))
}

impl ConnectionRow {
    pub fn into_domain(self) -> Result<DataConnection, StoreError> {
        let id = self.id;
        let allowlist = self
            .ip_allowlist
            .iter()
            .map(|s| {
                s.parse::<AllowEntry>()
                    .map_err(|_| corrupt("ip_allowlist entry", id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let created_by = match (self.created_by, self.created_by_email) {
            (Some(user_id), Some(email)) => Some(User { id: user_id, email }),
            (None, _) => None,
            (Some(_), None) => return Err(corrupt("created_by refers to no user", id)),
        };
        Ok(DataConnection {
            id,
            client_type: ClientType::parse(&self.client_type)
                .ok_or_else(|| corrupt("client_type", id))?,
            note: self.note,
            created_at: Timestamp::from_millis(self.created_at),
            valid_until: self.valid_until.map(Timestamp::from_millis),
            region_id: self.region_id,
            host: self.host,
            port: self.port,
            username: self.username,
            ip_allowlist: IpAllowlist::new(allowlist),
            teams: self.team_ids.map_or(TeamScope::All, TeamScope::Teams),
            created_by,
        })
    }
}

pub fn parse_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("data connection row: {e}")))
}

use crate::domain::integration::{
    ConnectionState, Environment, IdentityType, IntegrationConnection, ListFilter,
};

/// Columns of `integration_connections` in the order [`integration_from_parts`] reads them.
pub const INTEGRATION_COLUMNS: &str = "id, environment, platform, platform_version, name, connection_key, identity, \
     identity_type, CAST(tags AS TEXT) AS tags, version, active, state, created_at";

#[allow(clippy::too_many_arguments)]
pub fn integration_from_parts(
    id: String,
    environment: String,
    platform: String,
    platform_version: String,
    name: Option<String>,
    key: String,
    identity: String,
    identity_type: String,
    tags: String,
    version: String,
    active: bool,
    state: String,
    created_at: i64,
) -> Result<IntegrationConnection, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("integration connection {id}: {what}"));
    Ok(IntegrationConnection {
        environment: Environment::parse(&environment).ok_or_else(|| bad("environment"))?,
        identity_type: IdentityType::parse(&identity_type).ok_or_else(|| bad("identity_type"))?,
        state: ConnectionState::parse(&state).ok_or_else(|| bad("state"))?,
        tags: serde_json::from_str(&tags).map_err(|_| bad("tags"))?,
        id,
        platform,
        platform_version,
        name,
        key,
        identity,
        version,
        active,
        created_at,
    })
}

/// A value bound into a list query.
pub enum Bind {
    Text(String),
    Bool(bool),
}

/// The `WHERE` clause of a list call and its values, for a backend's placeholder style
/// (`placeholder(n)` for the n-th value, from 1) and its way of testing an array of tags.
pub fn integration_filter(
    environment: Environment,
    filter: &ListFilter,
    placeholder: impl Fn(usize) -> String,
    has_tag: impl Fn(&str) -> String,
) -> (String, Vec<Bind>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    let mut push = |clause: &dyn Fn(&str) -> String, value: Bind, binds: &mut Vec<Bind>| {
        binds.push(value);
        clauses.push(clause(&placeholder(binds.len())));
    };
    push(
        &|p| format!("environment = {p}"),
        Bind::Text(environment.as_str().into()),
        &mut binds,
    );
    push(
        &|p| format!("active = {p}"),
        Bind::Bool(filter.active),
        &mut binds,
    );
    for (column, value) in [
        ("platform_version", &filter.platform_version),
        ("name", &filter.name),
        ("identity", &filter.identity),
        ("platform", &filter.platform),
    ] {
        if let Some(v) = value {
            push(
                &|p| format!("{column} = {p}"),
                Bind::Text(v.clone()),
                &mut binds,
            );
        }
    }
    if let Some(t) = filter.identity_type {
        push(
            &|p| format!("identity_type = {p}"),
            Bind::Text(t.as_str().into()),
            &mut binds,
        );
    }
    for tag in &filter.tags {
        push(&|p| has_tag(p), Bind::Text(tag.clone()), &mut binds);
    }
    if !filter.keys.is_empty() {
        let first = binds.len() + 1;
        let list: Vec<String> = (0..filter.keys.len())
            .map(|i| placeholder(first + i))
            .collect();
        binds.extend(filter.keys.iter().map(|k| Bind::Text(k.clone())));
        clauses.push(format!("connection_key IN ({})", list.join(", ")));
    }
    (clauses.join(" AND "), binds)
}
