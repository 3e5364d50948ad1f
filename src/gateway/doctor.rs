//! `switchboard doctor`: whether the ClickHouse users the gateway logs in as keep teams
//! apart. Isolation is ClickHouse's own (the gateway never reads the SQL), so a team user
//! that can read another team's database, or run a table function (`url()` to the server
//! itself runs as whichever user answers there without a password), or a passwordless
//! `default` user on the node, lets one team's connection read another's data.
//!
//! For every region's nodes and every upstream user: it logs in, lists the databases the
//! user sees, probes the other teams' databases and `url()`, and tries `default` without a
//! password. Every finding comes with the fix for the node's ClickHouse version. `serve`
//! runs the same checks once at start-up and logs the findings as warnings.

use std::fmt::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use secrecy::{ExposeSecret, SecretString};

use super::auth::{KEY_HEADER, USER_HEADER};
use super::{UpstreamClient, upstream_client};
use crate::config::Settings;
use crate::domain::topology::{Team, Topology};

/// Longest wait for one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer a probe reads.
const ANSWER_LIMIT: usize = 64 * 1024;

/// ClickHouse's codes for "not allowed": readonly mode, access denied, unknown user or
/// wrong password, not enough privileges.
const REFUSED: &[u32] = &[164, 192, 193, 291, 497, 516];

/// What the checks found, as text for a person, and how many findings.
#[derive(Debug, Default)]
pub struct Report {
    text: String,
    findings: Vec<Finding>,
}

/// One problem and how to fix it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub problem: String,
    pub fix: String,
}

impl Report {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn findings(&self) -> usize {
        self.findings.len()
    }

    pub fn list(&self) -> &[Finding] {
        &self.findings
    }

    fn line(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.text, "{}", line.as_ref());
    }

    fn ok(&mut self, what: impl AsRef<str>) {
        self.line(format!("    ok: {}", what.as_ref()));
    }

    fn finding(&mut self, problem: String, fix: String) {
        self.line(format!("    FINDING: {problem}"));
        self.line(format!("      fix: {fix}"));
        self.findings.push(Finding { problem, fix });
    }
}

/// A ClickHouse answer: the status, the exception code (if any) and the body.
struct Answer {
    status: StatusCode,
    code: Option<u32>,
    body: String,
}

impl Answer {
    fn refused(&self) -> bool {
        !self.status.is_success() && self.code.is_some_and(|c| REFUSED.contains(&c))
    }

    /// The first line of a ClickHouse error, bounded.
    fn error(&self) -> String {
        let line = self.body.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            line.chars().take(300).collect()
        }
    }
}

/// A user the gateway logs in as, with what it may reach.
struct Identity<'a> {
    label: String,
    user: &'a str,
    password: Option<&'a SecretString>,
    /// Databases of the other teams (nothing for the organisation-wide user).
    foreign: Vec<&'a str>,
}

fn identities(topology: &Topology) -> Vec<Identity<'_>> {
    if let Some(org) = topology.organisation_user() {
        return vec![Identity {
            label: format!(
                "organisation-wide user `{}` (no [[teams]] configured)",
                org.user
            ),
            user: &org.user,
            password: org.password.as_ref(),
            foreign: Vec::new(),
        }];
    }
    let teams = topology.teams();
    teams
        .iter()
        .filter_map(|team: &Team| {
            let user = team.upstream_user.as_deref()?;
            Some(Identity {
                label: format!("team {} \"{}\" user `{user}`", team.id, team.name),
                user,
                password: team.upstream_password.as_ref(),
                foreign: teams
                    .iter()
                    .filter(|t| t.id != team.id)
                    .flat_map(|t| t.databases.iter().map(String::as_str))
                    .filter(|d| !team.databases.iter().any(|own| own == d))
                    .collect(),
            })
        })
        .collect()
}

/// Who asks, and where.
#[derive(Clone, Copy)]
struct Asker<'a> {
    client: &'a UpstreamClient,
    node: &'a str,
    user: &'a str,
    password: Option<&'a SecretString>,
}

async fn ask(who: Asker<'_>, sql: &str, database: Option<&str>) -> Result<Answer, String> {
    let Asker {
        client,
        node,
        user,
        password,
    } = who;
    let path = match database {
        Some(db) => format!(
            "{node}/?database={}",
            url::form_urlencoded::byte_serialize(db.as_bytes()).collect::<String>()
        ),
        None => format!("{node}/"),
    };
    let mut request = Request::post(path)
        .body(Body::from(sql.to_owned()))
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    headers.insert(
        USER_HEADER,
        HeaderValue::from_str(user).map_err(|_| "the user name is not header text".to_owned())?,
    );
    if let Some(password) = password {
        let mut key = HeaderValue::from_str(password.expose_secret())
            .map_err(|_| "the password is not header text".to_owned())?;
        key.set_sensitive(true);
        headers.insert(KEY_HEADER, key);
    }
    let response = tokio::time::timeout(PROBE_TIMEOUT, client.send(request))
        .await
        .map_err(|_| format!("{node} did not answer within {PROBE_TIMEOUT:?}"))?
        .map_err(|e| format!("{node} is unreachable: {e}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = http_body_util::Limited::new(response.into_body(), ANSWER_LIMIT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let code = super::error::exception_code(&headers, &body);
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(Answer { status, code, body })
}

/// `18.16.1` -> (18, 16).
fn version_of(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether the node grants privileges with SQL (ClickHouse 20.5 and later).
fn has_grants(version: Option<(u32, u32)>) -> bool {
    version.is_some_and(|v| v >= (20, 5))
}

fn fix_table_functions(user: &str, version: Option<(u32, u32)>) -> String {
    if has_grants(version) {
        format!(
            "let `{user}` only read its databases: `REVOKE ALL ON *.* FROM {user}; GRANT SELECT ON <its database>.* TO {user}` \
             (table functions need CREATE TEMPORARY TABLE and the SOURCES privileges, which it must not have); \
             for a user in users.xml (22.x and later), `<grants><query>GRANT SELECT ON <its database>.*</query></grants>`"
        )
    } else {
        format!(
            "give `{user}` a profile with `<readonly>1</readonly>` in users.xml: before 20.5, ClickHouse refuses table \
             functions only in read-only mode 1 (mode 2 allows them); clients of that user then cannot change settings per query"
        )
    }
}

fn fix_foreign_database(user: &str, database: &str, version: Option<(u32, u32)>) -> String {
    if has_grants(version) {
        format!(
            "`REVOKE SELECT ON {database}.* FROM {user}` (grant it only its own team's databases)"
        )
    } else {
        format!(
            "list only its own team's databases in `<allow_databases>` of `{user}` in users.xml (without that element a user sees every database)"
        )
    }
}

const FIX_DEFAULT: &str = "give the `default` user a password (`<password_sha256_hex>` in users.xml, or \
     `ALTER USER default IDENTIFIED BY '...'` from 20.5) or remove it, and let the gateway log in as users with passwords \
     (upstream.user and upstream.password_file, or each team's upstream_user and upstream_password_file)";

/// Runs every check against the configured topology.
pub async fn examine(settings: &Settings) -> anyhow::Result<Report> {
    let client = upstream_client(&settings.gateway)?;
    Ok(examine_with(&client, &settings.topology).await)
}

pub async fn examine_with(client: &UpstreamClient, topology: &Topology) -> Report {
    let mut report = Report::default();
    let identities = identities(topology);
    if identities.is_empty() {
        report.line("no team has an upstream_user: the gateway cannot serve any data connection");
        report.finding(
            "no upstream user is configured for any team".into(),
            "set upstream_user and upstream_password_file in each [[teams]] entry".into(),
        );
    }
    for region in topology.regions() {
        if region.upstreams.is_empty() {
            report.line(format!("region {} ({})", region.name, region.id));
            report.finding(
                format!(
                    "region {} has no ClickHouse node: its connections are refused",
                    region.id
                ),
                "list its ClickHouse HTTP endpoints in upstreams of its [[regions]] entry".into(),
            );
        }
        for node in &region.upstreams {
            let node = node.as_str().trim_end_matches('/');
            report.line(format!(
                "region {} ({}), node {node}",
                region.name, region.id
            ));
            for identity in &identities {
                report.line(format!("  {}", identity.label));
                let version;
                let who = Asker {
                    client,
                    node,
                    user: identity.user,
                    password: identity.password,
                };
                let login = ask(who, "SELECT version()", None).await;
                match login {
                    Err(e) => {
                        report.finding(
                            format!("cannot reach the node as `{}`: {e}", identity.user),
                            "start ClickHouse there, or correct the region's upstreams (upstream.url without [[regions]])".into(),
                        );
                        continue;
                    }
                    Ok(a) if !a.status.is_success() => {
                        report.finding(
                            format!("`{}` cannot log in: {}", identity.user, a.error()),
                            "check the user name and its password file in the configuration against the node's users".into(),
                        );
                        continue;
                    }
                    Ok(a) => {
                        version = version_of(&a.body);
                        report.ok(format!("logs in (ClickHouse {})", a.body.trim()));
                    }
                }
                if let Ok(a) = ask(who, "SHOW DATABASES", None).await
                    && a.status.is_success()
                {
                    let seen: Vec<&str> = a.body.lines().map(str::trim).collect();
                    report.ok(format!("sees databases: {}", seen.join(", ")));
                }
                for database in &identity.foreign {
                    // The database of a request is checked against the user's rights before
                    // anything runs (SHOW TABLES is not: it reads system.tables).
                    match ask(who, "SELECT 1", Some(database)).await {
                        Ok(a) if a.status.is_success() => report.finding(
                            format!(
                                "`{}` can read database {database}, which belongs to another team",
                                identity.user
                            ),
                            fix_foreign_database(identity.user, database, version),
                        ),
                        _ => report.ok(format!("cannot read {database} (another team's)")),
                    }
                }
                let url_probe =
                    format!("SELECT count() FROM url('{node}/ping', TSV, 'answer String')");
                match ask(who, &url_probe, None).await {
                    Ok(a) if a.refused() => {
                        report.ok("table functions such as url() are refused");
                    }
                    Err(e) => report.line(format!("    could not probe table functions: {e}")),
                    Ok(_) => report.finding(
                        format!(
                            "`{}` can run table functions: url() reaches any address the server can (itself included), remote() and file() likewise",
                            identity.user
                        ),
                        fix_table_functions(identity.user, version),
                    ),
                }
            }
            let anonymous = Asker {
                client,
                node,
                user: "default",
                password: None,
            };
            match ask(anonymous, "SELECT 1", None).await {
                Ok(a) if a.status.is_success() => report.finding(
                    format!(
                        "a passwordless `default` user answers at {node}: a table function in any connection's query runs as it and reads every database"
                    ),
                    FIX_DEFAULT.into(),
                ),
                Ok(_) => report.ok("no passwordless `default` user"),
                Err(_) => {}
            }
        }
    }
    report
}
