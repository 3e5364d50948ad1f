//! Data connections: issued ClickHouse credentials scoped to teams, a region, an
//! allowlist and an expiry.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::allowlist::IpAllowlist;
use super::echo::{echo, echo_names};
use super::pagination::PageRequest;
use super::ports::{
    ChangeSync, ConnectionPages, ConnectionUpdate, DataConnectionStore, StoreError,
};
use super::time::Timestamp;
use super::token::{Principal, TokenScope, User};
use super::topology::{Region, Team, Topology};
use super::usage::Usage;
use crate::crypto::{self, CredentialHash, CredentialHasher};

pub const USERNAME_RANDOM_LEN: usize = 32;
pub const PASSWORD_LEN: usize = 64;
pub const NOTE_MAX_CHARS: usize = 1000;
/// The longest a replaced password keeps working after a rotation.
pub const MAX_PASSWORD_OVERLAP: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    ClickHouse,
}

impl ClientType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClickHouse => "clickhouse",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s == "clickhouse").then_some(Self::ClickHouse)
    }
}

/// Which teams' data a connection may read. `All` follows the organisation: a team added
/// to the configuration later is included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamScope {
    All,
    Teams(Vec<i64>),
}

#[derive(Debug, Clone)]
pub struct DataConnection {
    pub id: i64,
    pub client_type: ClientType,
    pub note: Option<String>,
    pub created_at: Timestamp,
    pub valid_until: Option<Timestamp>,
    pub region_id: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub ip_allowlist: IpAllowlist,
    pub teams: TeamScope,
    pub created_by: Option<User>,
    /// Counted by the gateway, added in batches (a few seconds behind).
    pub usage: Usage,
}

/// What the store persists for a new connection; the password only as its keyed hash.
#[derive(Debug, Clone)]
pub struct NewDataConnection {
    pub client_type: ClientType,
    pub note: Option<String>,
    pub created_at: Timestamp,
    pub valid_until: Option<Timestamp>,
    pub region_id: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password_hash: CredentialHash,
    pub ip_allowlist: IpAllowlist,
    pub teams: TeamScope,
    pub created_by: Option<User>,
}

/// A connection's password as stored: the current one's hash and, during a rotation's
/// overlap, the replaced one's with the moment it stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashes {
    pub current: CredentialHash,
    pub previous: Option<(CredentialHash, Timestamp)>,
}

/// What the gateway needs to authenticate a connection's credentials: the connection as
/// the control plane lists it (shared with the list's entry, not copied) and its password
/// hashes.
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    pub connection: Arc<DataConnection>,
    pub password_hash: CredentialHash,
    /// The replaced password during a rotation's overlap, and when it stops working.
    pub previous_password: Option<(CredentialHash, Timestamp)>,
}

impl IssuedCredential {
    pub fn of(connection: Arc<DataConnection>, passwords: PasswordHashes) -> Self {
        Self {
            connection,
            password_hash: passwords.current,
            previous_password: passwords.previous,
        }
    }
}

/// How a create request names its teams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamSelector {
    Unspecified,
    Names(Vec<String>),
    Ids(Vec<i64>),
}

/// A create request, already parsed into types at the API edge.
#[derive(Debug, Clone)]
pub struct CreateDataConnection {
    pub client_type: ClientType,
    pub teams: TeamSelector,
    pub data_region: Option<String>,
    pub ip_allowlist: IpAllowlist,
    pub valid_until: Option<Timestamp>,
    pub note: Option<String>,
}

/// A new connection and the one and only copy of its password.
pub struct Created {
    pub connection: DataConnection,
    pub password: SecretString,
}

/// One source a connection can query, with the table expressions to paste into `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSourceGroup {
    pub source_name: String,
    pub source_id: i64,
    pub team_name: String,
    pub tables: Vec<String>,
}

/// One rule a request breaks, and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataConnectionError {
    /// Every rule the request breaks, at once.
    #[error("{}", .0.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("connection not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The names in a list, or "none".
fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Whether `principal` may see and manage `connection`.
pub fn manages(principal: &Principal, connection: &DataConnection) -> bool {
    match principal.scope {
        TokenScope::Global => true,
        TokenScope::Team(team) => connection.teams == TeamScope::Teams(vec![team]),
    }
}

pub struct DataConnections {
    store: Arc<dyn DataConnectionStore>,
    topology: Arc<Topology>,
    passwords: CredentialHasher,
    /// A create or delete returns once the gateway's snapshot holds it, so the very next
    /// gateway request sees the change.
    snapshots: Arc<dyn ChangeSync>,
    pages: Arc<dyn ConnectionPages>,
}

impl DataConnections {
    pub fn new(
        store: Arc<dyn DataConnectionStore>,
        topology: Arc<Topology>,
        passwords: CredentialHasher,
        snapshots: Arc<dyn ChangeSync>,
        pages: Arc<dyn ConnectionPages>,
    ) -> Self {
        Self {
            store,
            topology,
            passwords,
            snapshots,
            pages,
        }
    }

    /// The rules a create request's fields break (those it could parse), for one 422
    /// naming every invalid field.
    pub fn check_fields(
        &self,
        data_region: Option<&str>,
        teams: &TeamSelector,
        valid_until: Option<Timestamp>,
        note: Option<&str>,
    ) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(e) = self.region(data_region) {
            errors.push(e);
        }
        if let Err(e) = self.resolve_teams(teams) {
            errors.extend(e);
        }
        if let Err(e) = check_valid_until(valid_until, Timestamp::now()) {
            errors.push(e);
        }
        if let Err(e) = clean_note(note) {
            errors.push(e);
        }
        errors
    }

    fn region(&self, name: Option<&str>) -> Result<&Region, FieldError> {
        let Some(name) = name else {
            return Ok(self.topology.default_region());
        };
        self.topology.find_region(name).ok_or_else(|| {
            field_error(
                "data_region",
                format!(
                    "data_region '{name}' is not a configured region (configured: {}); to offer it, add a [[regions]] entry with name = \"{name}\" to the configuration",
                    listed(self.topology.regions().iter().map(|r| r.name.as_str())),
                    name = echo(name),
                ),
            )
        })
    }

    #[tracing::instrument(skip_all, fields(connection_id))]
    pub async fn create(
        &self,
        principal: &Principal,
        request: CreateDataConnection,
    ) -> Result<Created, DataConnectionError> {
        let now = Timestamp::now();
        let region = self.region(request.data_region.as_deref());
        let teams = self.resolve_teams(&request.teams);
        let until = check_valid_until(request.valid_until, now);
        let note = clean_note(request.note.as_deref());
        let (region, teams, note) = match (region, teams, until, note) {
            (Ok(region), Ok(teams), Ok(()), Ok(note)) => (region, teams, note),
            (region, teams, until, note) => {
                let mut errors = Vec::new();
                errors.extend(region.err());
                errors.extend(teams.err().into_iter().flatten());
                errors.extend(until.err());
                errors.extend(note.err());
                return Err(DataConnectionError::Invalid(errors));
            }
        };

        // A username collision needs two equal 190-bit random strings; retrying keeps the
        // unique index an invariant rather than an error a client could see.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let username = format!("u{}", crypto::random_alphanumeric(USERNAME_RANDOM_LEN));
            let password = SecretString::from(crypto::random_alphanumeric(PASSWORD_LEN));
            let new = NewDataConnection {
                client_type: request.client_type,
                note: note.clone(),
                created_at: now,
                valid_until: request.valid_until,
                region_id: region.id.clone(),
                host: region.host.clone(),
                port: region.port,
                username,
                password_hash: self.passwords.hash(password.expose_secret()),
                ip_allowlist: request.ip_allowlist.clone(),
                teams: teams.clone(),
                created_by: principal.user.clone(),
            };
            match self.store.insert_data_connection(new).await {
                Ok((connection, change)) => {
                    self.snapshots.applied(change).await;
                    tracing::Span::current().record("connection_id", connection.id);
                    tracing::info!(connection_id = connection.id, "data connection created");
                    return Ok(Created {
                        connection,
                        password,
                    });
                }
                Err(StoreError::Conflict(_)) if attempts < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The teams a request names; the unknown ones reported together.
    fn resolve_teams(&self, selector: &TeamSelector) -> Result<TeamScope, Vec<FieldError>> {
        let (field, found, unknown): (&'static str, Vec<i64>, Vec<String>) = match selector {
            TeamSelector::Unspecified => return Ok(TeamScope::All),
            TeamSelector::Names(names) if names.is_empty() => return Ok(TeamScope::All),
            TeamSelector::Ids(ids) if ids.is_empty() => return Ok(TeamScope::All),
            TeamSelector::Names(names) => {
                let (known, unknown): (Vec<_>, Vec<_>) = names
                    .iter()
                    .map(|n| (n, self.topology.team_by_name(n)))
                    .partition(|(_, team)| team.is_some());
                (
                    "team_names",
                    known.iter().filter_map(|(_, t)| t.map(|t| t.id)).collect(),
                    unknown.into_iter().map(|(n, _)| format!("'{n}'")).collect(),
                )
            }
            TeamSelector::Ids(ids) => {
                let (known, unknown): (Vec<i64>, Vec<i64>) = ids
                    .iter()
                    .partition(|id| self.topology.team(**id).is_some());
                (
                    "team_ids",
                    known,
                    unknown.iter().map(i64::to_string).collect(),
                )
            }
        };
        if !unknown.is_empty() {
            let what = if field == "team_names" {
                "no team is named"
            } else {
                "no team has id"
            };
            return Err(vec![field_error(
                field,
                format!(
                    "{field}: {what} {} (configured teams: {}); to add one, give it a [[teams]] entry in the configuration",
                    echo_names(&unknown),
                    listed(self.topology.teams().iter().map(|t| t.name.as_str()))
                ),
            )]);
        }
        let mut ids = found;
        ids.sort_unstable();
        ids.dedup();
        Ok(TeamScope::Teams(ids))
    }

    /// A page in id order, and how many there are: from memory (the gateway's snapshot),
    /// which holds this process's own writes once they return and another process's
    /// within the change feed's delay.
    pub fn list(&self, page: PageRequest) -> (Vec<Arc<DataConnection>>, u64) {
        // Beyond any representable offset: certainly past the end.
        let offset = page
            .offset()
            .and_then(|o| u64::try_from(o).ok())
            .unwrap_or(u64::MAX);
        self.pages
            .page(offset, usize::try_from(page.size).unwrap_or(usize::MAX))
    }

    /// What `principal` may see: every connection for a global token; for a team token,
    /// the connections that reach exactly its team (one reaching other teams too is not
    /// the team's alone to manage).
    pub async fn list_for(
        &self,
        principal: &Principal,
        page: PageRequest,
    ) -> Result<(Vec<Arc<DataConnection>>, u64), DataConnectionError> {
        match principal.scope {
            TokenScope::Global => Ok(self.list(page)),
            TokenScope::Team(team) => {
                let Some(offset) = page.offset() else {
                    return Ok((Vec::new(), 0));
                };
                let (connections, total) = self
                    .store
                    .list_team_data_connections(team, offset, page.limit())
                    .await?;
                Ok((connections.into_iter().map(Arc::new).collect(), total))
            }
        }
    }

    /// A connection `principal` may manage (see [`Self::list_for`]); another team's is
    /// not found.
    pub async fn get_for(
        &self,
        principal: &Principal,
        id: i64,
    ) -> Result<DataConnection, DataConnectionError> {
        let connection = self.get(id).await?;
        if manages(principal, &connection) {
            Ok(connection)
        } else {
            Err(DataConnectionError::NotFound)
        }
    }

    pub async fn delete_for(
        &self,
        principal: &Principal,
        id: i64,
    ) -> Result<(), DataConnectionError> {
        self.get_for(principal, id).await?;
        self.delete(id).await
    }

    pub async fn get(&self, id: i64) -> Result<DataConnection, DataConnectionError> {
        self.store
            .get_data_connection(id)
            .await?
            .ok_or(DataConnectionError::NotFound)
    }

    pub async fn delete(&self, id: i64) -> Result<(), DataConnectionError> {
        if let Some(change) = self.store.delete_data_connection(id).await? {
            self.snapshots.applied(change).await;
            tracing::info!(connection_id = id, "data connection deleted");
            Ok(())
        } else {
            Err(DataConnectionError::NotFound)
        }
    }

    /// Changes a connection's note, expiry or allowlist in place; every gateway follows
    /// within its change feed's delay (this process's before this returns).
    #[tracing::instrument(skip(self, update))]
    pub async fn update(
        &self,
        id: i64,
        mut update: ConnectionUpdate,
    ) -> Result<DataConnection, DataConnectionError> {
        let mut errors = Vec::new();
        if let Some(Some(until)) = update.valid_until
            && let Err(e) = check_valid_until(Some(until), Timestamp::now())
        {
            errors.push(e);
        }
        if let Some(note) = &update.note {
            match clean_note(note.as_deref()) {
                Ok(cleaned) => update.note = Some(cleaned),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(DataConnectionError::Invalid(errors));
        }
        let (connection, change) = self
            .store
            .update_data_connection(id, &update)
            .await?
            .ok_or(DataConnectionError::NotFound)?;
        self.snapshots.applied(change).await;
        tracing::info!(connection_id = id, "data connection updated");
        Ok(connection)
    }

    /// Gives a connection a new password, returned once. The old one keeps working for
    /// `overlap` (none: it stops at once), so clients can switch without a gap.
    #[tracing::instrument(skip(self))]
    pub async fn rotate_password(
        &self,
        id: i64,
        overlap: Duration,
    ) -> Result<Created, DataConnectionError> {
        if overlap > MAX_PASSWORD_OVERLAP {
            return Err(DataConnectionError::Invalid(vec![field_error(
                "overlap_seconds",
                format!(
                    "overlap_seconds must be at most {} (a week)",
                    MAX_PASSWORD_OVERLAP.as_secs()
                ),
            )]));
        }
        let password = SecretString::from(crypto::random_alphanumeric(PASSWORD_LEN));
        let until = (!overlap.is_zero()).then(|| {
            Timestamp::from_millis(Timestamp::now().as_millis() + overlap.as_millis() as i64)
        });
        let change = self
            .store
            .rotate_data_connection_password(
                id,
                &self.passwords.hash(password.expose_secret()),
                until,
            )
            .await?
            .ok_or(DataConnectionError::NotFound)?;
        self.snapshots.applied(change).await;
        tracing::info!(
            connection_id = id,
            overlap_seconds = overlap.as_secs(),
            "data connection password rotated"
        );
        Ok(Created {
            connection: self.get(id).await?,
            password,
        })
    }

    /// The configured teams a connection reaches, in id order.
    pub fn teams_of<'a>(&'a self, connection: &'a DataConnection) -> Vec<&'a Team> {
        match &connection.teams {
            TeamScope::All => self.topology.teams().iter().collect(),
            TeamScope::Teams(ids) => ids
                .iter()
                .filter_map(|id| self.topology.team(*id))
                .collect(),
        }
    }

    pub fn data_sources(&self, connection: &DataConnection) -> Vec<DataSourceGroup> {
        self.teams_of(connection)
            .into_iter()
            .flat_map(|team| {
                team.sources.iter().map(move |s| DataSourceGroup {
                    source_name: s.name.clone(),
                    source_id: s.id,
                    team_name: team.name.clone(),
                    tables: s.tables.clone(),
                })
            })
            .collect()
    }

    /// A curl command that runs a query through this connection's gateway. The password
    /// is shown only when the caller has it (the create response).
    pub fn sample_query(&self, connection: &DataConnection, password: Option<&str>) -> String {
        let tls = self
            .topology
            .region_by_id(&connection.region_id)
            .is_some_and(|r| r.tls);
        let scheme = if tls { "https" } else { "http" };
        let default_port = if tls { 443 } else { 80 };
        let authority = if connection.port == default_port {
            connection.host.clone()
        } else if connection.host.contains(':') {
            format!("[{}]:{}", connection.host, connection.port)
        } else {
            format!("{}:{}", connection.host, connection.port)
        };
        // A real table of the connection's first source if it has one, named with its
        // database, which also tells the gateway which team serves it (a connection of
        // several teams needs that). Nothing else: every setting is one that some
        // ClickHouse version lacks.
        let teams = self.teams_of(connection);
        let table = teams
            .iter()
            .flat_map(|t| t.sources.iter())
            .flat_map(|s| s.tables.first())
            .next();
        let (query, database) = match table {
            Some(table) => (
                format!("SELECT * FROM {table} LIMIT 10 FORMAT Pretty"),
                table.split_once('.').map(|(db, _)| db.to_owned()),
            ),
            None => (
                "SELECT version() FORMAT Pretty".to_owned(),
                (teams.len() > 1)
                    .then(|| {
                        teams
                            .iter()
                            .flat_map(|t| t.databases.first())
                            .next()
                            .cloned()
                    })
                    .flatten(),
            ),
        };
        let parameters = database
            .filter(|db| !db.is_empty() && !db.contains(['(', ' ', ',']))
            .map(|db| {
                format!(
                    "?database={}",
                    url::form_urlencoded::byte_serialize(db.as_bytes()).collect::<String>()
                )
            })
            .unwrap_or_default();
        format!(
            "curl -u {}:{} -H 'Content-type: plain/text' -X POST '{scheme}://{authority}/{parameters}' -d \"{}\"",
            connection.username,
            password.unwrap_or("INSERT_PASSWORD"),
            shell_double_quoted(&query)
        )
    }
}

fn check_valid_until(until: Option<Timestamp>, now: Timestamp) -> Result<(), FieldError> {
    match until {
        Some(until) if until <= now => Err(field_error(
            "valid_until",
            format!(
                "valid_until must be in the future, not {}",
                until.to_iso8601_millis()
            ),
        )),
        _ => Ok(()),
    }
}

/// A note trimmed, empty as none; at most [`NOTE_MAX_CHARS`], no NUL.
fn clean_note(note: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(note) = note.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if note.chars().count() > NOTE_MAX_CHARS {
        return Err(field_error(
            "note",
            format!("note must be at most {NOTE_MAX_CHARS} characters"),
        ));
    }
    if note.contains('\0') {
        return Err(field_error("note", "note must not contain NUL characters"));
    }
    Ok(Some(note.to_owned()))
}

/// Escapes what a POSIX shell interprets inside double quotes.
fn shell_double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_escaping_covers_specials() {
        assert_eq!(shell_double_quoted(r#"a"b$c`d\e"#), r#"a\"b\$c\`d\\e"#);
    }

    #[test]
    fn client_type_parses_only_clickhouse() {
        assert_eq!(
            ClientType::parse("clickhouse"),
            Some(ClientType::ClickHouse)
        );
        assert_eq!(ClientType::parse("ClickHouse"), None);
        assert_eq!(ClientType::parse("postgres"), None);
    }
}
