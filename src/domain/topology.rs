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
    /// `host` and `port` were not configured: they are this server's gateway's bound
    /// address (set once it is bound).
    pub follows_gateway: bool,
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

/// A ClickHouse user the gateway logs in as upstream.
#[derive(Debug, Clone)]
pub struct UpstreamUser {
    pub user: String,
    /// `None`: no password (ClickHouse's stock `default` user).
    pub password: Option<SecretString>,
}

/// Validated at start-up: region names and ids are unique, exactly one region is the
/// default, team ids and names are unique.
#[derive(Debug, Clone)]
pub struct Topology {
    regions: Vec<Region>,
    teams: Vec<Team>,
    /// The one upstream user of an organisation without `[[teams]]`: every connection
    /// reads what it can.
    organisation_user: UpstreamUser,
}

impl Topology {
    /// The caller (config validation) guarantees the invariants above.
    pub fn new(regions: Vec<Region>, teams: Vec<Team>, organisation_user: UpstreamUser) -> Self {
        debug_assert_eq!(regions.iter().filter(|r| r.default).count(), 1);
        Self {
            regions,
            teams,
            organisation_user,
        }
    }

    /// The upstream user while no teams are configured.
    pub fn organisation_user(&self) -> Option<&UpstreamUser> {
        self.teams.is_empty().then_some(&self.organisation_user)
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

    /// Gives the regions without a configured address the gateway's, known only once it
    /// is bound (port 0 picks one).
    pub fn follow_gateway_address(&mut self, host: &str, port: u16) {
        for region in self.regions.iter_mut().filter(|r| r.follows_gateway) {
            region.host = host.to_owned();
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

/// One upstream node as the gateway's health checks last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    pub url: String,
    pub healthy: bool,
}

/// What the gateway knows of its upstream nodes, read by the console's topology view.
pub trait UpstreamHealth: Send + Sync {
    /// A region's nodes in configuration order (none for an unknown region).
    fn nodes_of(&self, region_id: &str) -> Vec<NodeHealth>;
}
