//! `switchboard doctor` against a real ClickHouse: a safe team user passes; a user that can
//! read another team's database, one that can run url(), and a passwordless `default` each
//! are a finding and a non-zero exit.

use crate::common::binary;
use crate::common::clickhouse::{ADMIN_PASSWORD, ClickHouse, user_xml};

/// Team A's user is `alpha`, Team B's `beta`.
fn config(ch: &ClickHouse) -> String {
    std::fs::write(ch.path().join("alpha.secret"), "alpha-password").unwrap();
    std::fs::write(ch.path().join("beta.secret"), "beta-password").unwrap();
    let dir = ch.path().display();
    format!(
        r#"
[[regions]]
name = "local"
id = "local-1"
upstreams = ["{url}"]

[[teams]]
id = 1
name = "A"
upstream_user = "alpha"
upstream_password_file = "{dir}/alpha.secret"
databases = ["team_a"]

[[teams]]
id = 2
name = "B"
upstream_user = "beta"
upstream_password_file = "{dir}/beta.secret"
databases = ["team_b"]
"#,
        url = ch.url
    )
}

async fn clickhouse(
    beta_profile: &str,
    beta_databases: Option<&[&str]>,
    admin: Option<&str>,
) -> ClickHouse {
    let users = format!(
        "{}{}",
        user_xml("alpha", "alpha-password", "readonly1", Some(&["team_a"])),
        user_xml("beta", "beta-password", beta_profile, beta_databases),
    );
    ClickHouse::start_with_users(&users, admin).await
}

/// Runs `switchboard doctor`; returns whether it passed, and what it printed.
fn doctor(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchboard.toml"), config).unwrap();
    let out = std::process::Command::new(binary())
        .current_dir(dir.path())
        .args(["--config", "switchboard.toml", "doctor"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn safe_team_users_pass() {
    let ch = clickhouse("readonly1", Some(&["team_b"]), Some(ADMIN_PASSWORD)).await;
    let (ok, output) = doctor(&config(&ch));
    assert!(ok, "{output}");
    assert!(
        output.contains("table functions such as url() are refused"),
        "{output}"
    );
    assert!(output.contains("cannot read team_b"), "{output}");
    assert!(
        output.contains("no passwordless `default` user"),
        "{output}"
    );
}

#[tokio::test]
async fn a_user_that_reads_another_teams_database_is_a_finding() {
    // No allow_databases: beta sees every database, team A's included.
    let ch = clickhouse("readonly1", None, Some(ADMIN_PASSWORD)).await;
    let (ok, output) = doctor(&config(&ch));
    assert!(!ok, "{output}");
    assert!(
        output.contains("`beta` can read database team_a, which belongs to another team"),
        "{output}"
    );
    assert!(
        output.contains("allow_databases"),
        "the fix is named: {output}"
    );
}

#[tokio::test]
async fn a_user_that_can_run_table_functions_is_a_finding() {
    // Read-only mode 2 still runs url(), which reaches the server itself.
    let ch = clickhouse("readonly", Some(&["team_b"]), Some(ADMIN_PASSWORD)).await;
    let (ok, output) = doctor(&config(&ch));
    assert!(!ok, "{output}");
    assert!(
        output.contains("`beta` can run table functions"),
        "{output}"
    );
    assert!(
        output.contains("<readonly>1</readonly>"),
        "the fix for 18.x: {output}"
    );
    assert!(
        !output.contains("`alpha` can run table functions"),
        "{output}"
    );
}

#[tokio::test]
async fn a_passwordless_default_user_is_a_finding() {
    let ch = clickhouse("readonly1", Some(&["team_b"]), None).await;
    let (ok, output) = doctor(&config(&ch));
    assert!(!ok, "{output}");
    assert!(
        output.contains("a passwordless `default` user answers"),
        "{output}"
    );
    assert!(output.contains("password_sha256_hex"), "the fix: {output}");
}
