//! What a new user meets first: a server started with no configuration file that answers
//! real queries, `sample_query` run as printed, one 422 naming every bad field, commands
//! that refuse to invent a second install, and a port already in use.

use std::process::{Command, Stdio};

use crate::common::clickhouse::{ADMIN_PASSWORD, ClickHouse};
use crate::common::{TOKEN, TestServer, binary};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The create body of the README's quickstart.
fn readme_body() -> Value {
    json!({
        "client_type": "clickhouse",
        "ip_allowlist": ["127.0.0.1", "10.0.0.0/8"],
        "valid_until": "2030-12-02T00:00:00Z",
        "note": "Production connection for analytics"
    })
}

async fn create(server: &TestServer, body: Value) -> Value {
    let resp = server
        .post_json("/api/v1/connections", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    v["data"]["attributes"].clone()
}

/// Runs a printed `sample_query` through a shell, as a user pastes it; returns stdout.
fn run_printed(sample_query: &str) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("{sample_query} --silent --show-error --fail"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{sample_query}\nfailed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn with_no_configuration_file_the_sample_query_answers_as_printed() {
    let ch = ClickHouse::start().await;
    let password_file = ch.path().join("clickhouse.password");
    std::fs::write(&password_file, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let server = TestServer::start_unconfigured(&[
        ("SWITCHBOARD_UPSTREAM_URL", &ch.url),
        ("SWITCHBOARD_UPSTREAM_USER", "default"),
        (
            "SWITCHBOARD_UPSTREAM_PASSWORD_FILE",
            password_file.to_str().unwrap(),
        ),
    ])
    .await;
    let logs = server.logs();
    assert!(
        logs.contains(&ch.url),
        "start-up names the upstream: {logs}"
    );
    assert!(
        logs.contains("organisation-wide"),
        "start-up warns the user is organisation-wide: {logs}"
    );

    let attrs = create(&server, readme_body()).await;
    let sample = attrs["sample_query"].as_str().unwrap();
    assert!(!sample.contains("output_format"), "{sample}");
    let rows = run_printed(sample);
    let version = ch.admin("SELECT version()").await;
    assert!(
        rows.contains("version()"),
        "a Pretty table with its header: {rows}"
    );
    assert!(rows.contains(version.trim()), "{rows}");
}

/// A region without host and port, the two seeded teams, and a team without a user.
fn topology(ch: &ClickHouse) -> String {
    format!(
        r#"
[[regions]]
name = "local"
id = "local-1"
upstreams = ["{url}"]
{teams}
[[teams]]
id = 3
name = "Team without a user"
"#,
        url = ch.url,
        teams = ch.teams_toml()
    )
}

#[tokio::test]
async fn team_and_multi_team_sample_queries_answer_as_printed() {
    let ch = ClickHouse::start().await;
    let server = TestServer::start(&topology(&ch)).await;

    // A region without host and port hands out the gateway's bound address.
    let team_b = create(
        &server,
        json!({"client_type": "clickhouse", "team_names": ["Team B"]}),
    )
    .await;
    assert_eq!(
        format!("http://127.0.0.1:{}", team_b["port"]),
        server.gateway
    );
    let rows = run_printed(team_b["sample_query"].as_str().unwrap());
    assert!(rows.contains("secret-b-0"), "team B's rows: {rows}");

    // Every team: the sample names the database, so the gateway knows the team.
    let all = create(&server, json!({"client_type": "clickhouse"})).await;
    let sample = all["sample_query"].as_str().unwrap();
    assert!(sample.contains("?database=team_a'"), "{sample}");
    let rows = run_printed(sample);
    assert!(rows.contains("a-0"), "team A's rows: {rows}");
    assert!(!rows.contains("secret-b"), "{rows}");

    // A team without an upstream user is a configuration gap, named as one.
    let gap = create(
        &server,
        json!({"client_type": "clickhouse", "team_names": ["Team without a user"]}),
    )
    .await;
    let resp = server
        .client
        .post(&server.gateway)
        .basic_auth(gap["username"].as_str().unwrap(), gap["password"].as_str())
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "139");
    let body = resp.text().await.unwrap();
    assert!(body.contains("upstream_user"), "{body}");
    assert!(!body.contains("NETWORK_ERROR"), "{body}");
    let logs = server.logs();
    assert!(
        logs.contains("the configuration is incomplete"),
        "the refusal is logged"
    );
    assert!(!logs.contains(gap["password"].as_str().unwrap()));
}

#[tokio::test]
async fn the_original_create_example_names_every_bad_field_at_once() {
    let server = TestServer::start("").await;
    let resp = server
        .post_json(
            "/api/v1/connections",
            &json!({
                "client_type": "clickhouse",
                "team_names": ["My Team"],
                "data_region": "germany",
                "ip_allowlist": ["192.168.1.0/24", "10.0.0.1"],
                "valid_until": "2025-12-02T00:00:00Z",
                "note": "Production connection for analytics"
            }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["invalid_attributes"],
        json!(["data_region", "team_names", "valid_until"]),
        "{body}"
    );
    let message = body["errors"].as_str().unwrap();
    assert!(message.contains("[[regions]]"), "{message}");
    assert!(message.contains("[[teams]]"), "{message}");

    // A field that does not parse and one the configuration lacks, in one answer too.
    let resp = server
        .post_json(
            "/api/v1/connections",
            &json!({"client_type": "mysql", "data_region": "germany"}),
        )
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["invalid_attributes"],
        json!(["client_type", "data_region"])
    );
}

#[tokio::test]
async fn commands_refuse_to_start_a_second_install_and_help_is_complete() {
    let empty = tempfile::tempdir().unwrap();
    for args in [
        vec!["token", "create"],
        vec!["secret", "create", "--env", "live"],
        vec!["export"],
    ] {
        let out = Command::new(binary())
            .current_dir(empty.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no Switchboard install here"), "{stderr}");
        assert_eq!(
            stderr.matches("no Switchboard install here").count(),
            1,
            "said once: {stderr}"
        );
        assert!(
            std::fs::read_dir(empty.path()).unwrap().next().is_none(),
            "{args:?} created files"
        );
    }
    let help = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serve = help(&["serve", "--help"]);
    for var in [
        "SWITCHBOARD_UPSTREAM_URL",
        "SWITCHBOARD_BOOTSTRAP_TOKEN",
        "SWITCHBOARD_DATABASE_URL",
    ] {
        assert!(serve.contains(var), "serve --help names {var}");
    }
    assert!(help(&["import", "--help"]).contains("The file `switchboard export` wrote"));
    assert!(help(&["keys", "rotate", "--help"]).contains("The new master key"));
    let secret = help(&["secret", "create", "--help"]);
    assert!(
        secret.contains("test") && secret.contains("live"),
        "{secret}"
    );
}

#[tokio::test]
async fn a_port_in_use_stops_a_fresh_install_before_it_prints_a_token() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let run = |api: String| {
        Command::new(binary())
            .current_dir(dir.path())
            .env("SWITCHBOARD_API_LISTEN", api)
            .env("SWITCHBOARD_GATEWAY_LISTEN", "127.0.0.1:0")
            .args(["serve"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(format!("127.0.0.1:{port}"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another process holds it"), "{stderr}");
    assert!(stderr.contains("--api-listen"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("store it now"),
        "no token was printed"
    );

    // The next start, on a free port, installs the first token: the failed start made none
    // (had it, the bootstrap token below would not be installed and would get 401).
    let mut child = Command::new(binary())
        .current_dir(dir.path())
        .env("SWITCHBOARD_API_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_BOOTSTRAP_TOKEN", TOKEN)
        .args(["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listening = crate::common::wait_for_listening(
        &dir.path().join("switchboard-data"),
        &mut child,
        &dir.path().join("none"),
    );
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/connections", listening.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = child.kill();
    let _ = child.wait();
    drop(taken);
}

#[tokio::test]
async fn with_the_example_configuration_flags_move_everything_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/switchboard.toml");
    let elsewhere = dir.path().join("elsewhere");
    let mut child = Command::new(binary())
        .current_dir(dir.path())
        .env("SWITCHBOARD_BOOTSTRAP_TOKEN", TOKEN)
        .args(["--config", example, "--data-dir"])
        .arg(&elsewhere)
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "serve",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listening =
        crate::common::wait_for_listening(&elsewhere, &mut child, &dir.path().join("none"));
    // The database and the key moved with --data-dir; nothing was made where it ran.
    assert!(elsewhere.join("switchboard.db").exists());
    assert!(elsewhere.join("master.key").exists());
    assert!(!dir.path().join("switchboard-data").exists());
    // Links and the address handed out follow the addresses actually bound.
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/api/v1/connections", listening.api))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(json!({"client_type": "clickhouse"}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let attrs = &created["data"]["attributes"];
    assert_eq!(
        format!(
            "http://{}:{}",
            attrs["host"].as_str().unwrap(),
            attrs["port"]
        ),
        listening.gateway
    );
    let list: Value = client
        .get(format!("{}/api/v1/connections", listening.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["pagination"]["first"],
        format!("{}/api/v1/connections?page=1", listening.api)
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn addresses_on_this_machine_that_miss_the_listeners_are_warned_about() {
    let server = TestServer::start(
        "public_url = \"http://127.0.0.1:1\"\n\n[[regions]]\nname = \"local\"\nid = \"local-1\"\nhost = \"localhost\"\nport = 1\nupstreams = [\"http://127.0.0.1:9\"]\n",
    )
    .await;
    let logs = server.logs();
    assert!(
        logs.contains("public_url points at this machine but not at the API's port"),
        "{logs}"
    );
    assert!(
        logs.contains("this region hands out an address on this machine that is not the gateway's"),
        "{logs}"
    );
}
