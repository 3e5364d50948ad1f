//! Validating the operator's topology: regions (with their upstream nodes) and teams (with
//! their sources and upstream users).

use std::collections::HashSet;

use anyhow::{Context, bail};
use url::Url;

use super::raw::{RawRegion, RawTeam};
use super::validate::read_header_secret;
use crate::domain::topology::{Region, Source, Team};

pub fn validate_regions(raw: Vec<RawRegion>) -> anyhow::Result<Vec<Region>> {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    let single = raw.len() == 1;
    let mut regions = Vec::with_capacity(raw.len());
    for r in raw {
        let at = format!("[[regions]] name = \"{}\"", r.name);
        if r.name.trim().is_empty() || r.id.trim().is_empty() {
            bail!("every [[regions]] entry needs a non-empty name and id");
        }
        if !names.insert(r.name.clone()) {
            bail!("{at}: the name is used by two regions; region names must be unique");
        }
        if !ids.insert(r.id.clone()) {
            bail!(
                "{at}: id \"{}\" is used by two regions; region ids must be unique",
                r.id
            );
        }
        let follows_gateway = match (&r.host, r.port) {
            (None, None) => true,
            (Some(host), Some(port)) => {
                if url::Host::parse(host).is_err() || host.contains(['/', '\'', '"', ' ']) {
                    bail!("{at}: host \"{host}\" is not a host name or IP address");
                }
                if port == 0 {
                    bail!("{at}: port must be between 1 and 65535");
                }
                false
            }
            _ => bail!(
                "{at}: host and port go together: set both (the address clients reach the gateway at), or neither (this server's gateway address)"
            ),
        };
        let upstreams = r
            .upstreams
            .iter()
            .map(|u| {
                let url = Url::parse(u).with_context(|| {
                    format!("{at}: upstream \"{u}\" is not a URL like \"http://127.0.0.1:8123\"")
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    bail!("{at}: upstream \"{u}\" must be http:// or https://");
                }
                Ok(url)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        regions.push(Region {
            default: r.default || single,
            name: r.name,
            id: r.id,
            host: r.host.unwrap_or_default(),
            port: r.port.unwrap_or_default(),
            follows_gateway,
            tls: r.tls,
            upstreams,
        });
    }
    match regions.iter().filter(|r| r.default).count() {
        1 => Ok(regions),
        0 => bail!(
            "several regions are configured and none is the default: set `default = true` on one [[regions]] entry"
        ),
        _ => bail!("more than one region has `default = true`: keep it on exactly one"),
    }
}

pub fn validate_teams(raw: Vec<RawTeam>) -> anyhow::Result<Vec<Team>> {
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    let mut source_ids = HashSet::new();
    let mut teams = Vec::with_capacity(raw.len());
    for t in raw {
        let at = format!("[[teams]] id = {}", t.id);
        if t.name.trim().is_empty() {
            bail!("{at}: name must not be empty");
        }
        if !ids.insert(t.id) {
            bail!("{at}: two teams have this id; team ids must be unique");
        }
        if !names.insert(t.name.clone()) {
            bail!(
                "{at}: name \"{}\" is used by two teams; team names must be unique",
                t.name
            );
        }
        if let Some(user) = &t.upstream_user
            && (user.trim().is_empty() || axum::http::HeaderValue::from_str(user).is_err())
        {
            bail!("{at}: upstream_user must be a ClickHouse user name");
        }
        let upstream_password = match (&t.upstream_user, &t.upstream_password_file) {
            (Some(_), Some(p)) => Some(read_header_secret(
                &format!("{at}: upstream_password_file"),
                p,
            )?),
            (None, Some(_)) => {
                bail!("{at}: upstream_password_file is set but upstream_user is not")
            }
            _ => None,
        };
        let mut sources = Vec::with_capacity(t.sources.len());
        for s in t.sources {
            if !source_ids.insert(s.id) {
                bail!(
                    "{at}: source id {} is used twice; source ids must be unique",
                    s.id
                );
            }
            sources.push(Source {
                id: s.id,
                name: s.name,
                tables: s.tables,
            });
        }
        let databases = t
            .databases
            .unwrap_or_else(|| Team::databases_of_sources(&sources));
        teams.push(Team {
            id: t.id,
            name: t.name,
            upstream_user: t.upstream_user,
            upstream_password,
            databases,
            sources,
        });
    }
    Ok(teams)
}
