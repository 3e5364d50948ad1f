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
