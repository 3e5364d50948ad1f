//! The organisation's topology as the operator configured it: regions and teams.

use secrecy::SecretString;
use url::Url;

#[derive(Debug, Clone)]
pub struct Region {
    /// What a create request sends as `data_region` (e.g. `germany`).
    pub name: String,
    /// What responses show as `data_region` (e.g. `eu-nbg-2`).
    pub id: String,
    /// The public address of this region's gateway, handed out in connections.
    pub host: String,
    pub port: u16,
    /// Whether the gateway is reached over HTTPS (shapes `sample_query`).
    pub tls: bool,
    pub upstreams: Vec<Url>,
    pub default: bool,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub id: i64,
    pub name: String,
    /// Table expressions a connection of this team can query through the gateway.
    pub tables: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Team {
    pub id: i64,
    pub name: String,
    pub upstream_user: Option<String>,
    pub upstream_password: Option<SecretString>,
    /// ClickHouse databases holding this team's data; a request naming one of them (the
    /// `database` parameter) is served as this team.
    pub databases: Vec<String>,
    pub sources: Vec<Source>,
}

impl Team {
    /// Databases named by the sources' tables (`team_1234.app_logs` names `team_1234`).
    pub fn databases_of_sources(sources: &[Source]) -> Vec<String> {
        let mut dbs: Vec<String> = sources
            .iter()
            .flat_map(|s| &s.tables)
            .filter_map(|t| t.split_once('.').map(|(db, _)| db.to_owned()))
            .filter(|db| !db.is_empty() && !db.contains(['(', ' ', ',']))
            .collect();
        dbs.sort();
        dbs.dedup();
        dbs
    }
}

/// Validated at start-up: region names and ids are unique, exactly one region is the
/// default, team ids and names are unique.
#[derive(Debug, Clone)]
pub struct Topology {
    regions: Vec<Region>,
    teams: Vec<Team>,
}

impl Topology {
    /// The caller (config validation) guarantees the invariants above.
    pub fn new(regions: Vec<Region>, teams: Vec<Team>) -> Self {
        debug_assert_eq!(regions.iter().filter(|r| r.default).count(), 1);
        Self { regions, teams }
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    pub fn default_region(&self) -> &Region {
        self.regions
            .iter()
            .find(|r| r.default)
            .expect("validated: one default region")
    }

    /// A create request may name a region by its request name or by its id.
    pub fn find_region(&self, name_or_id: &str) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| r.name == name_or_id)
            .or_else(|| self.regions.iter().find(|r| r.id == name_or_id))
    }

    /// Points the default region at an address known only after binding (port 0).
    pub fn set_default_region_address(&mut self, host: String, port: u16) {
        if let Some(region) = self.regions.iter_mut().find(|r| r.default) {
            region.host = host;
            region.port = port;
        }
    }

    pub fn region_by_id(&self, id: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.id == id)
    }

    pub fn team(&self, id: i64) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    pub fn team_by_name(&self, name: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.name == name)
    }
}
