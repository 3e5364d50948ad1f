//! Several replicas on one PostgreSQL: what one issues or revokes, the others' gateways
//! know within a second, and concurrent writes never collide.

use std::time::{Duration, Instant};

use crate::common::TestServer;
use crate::common::clickhouse::{ClickHouse, TEAM_A_PASSWORD};
use crate::common::postgres::Postgres;
use reqwest::StatusCode;
use serde_json::json;

fn config(ch: &ClickHouse) -> String {
    std::fs::write(ch.path().join("team_a.secret"), TEAM_A_PASSWORD).unwrap();
    format!(
        r#"
[gateway]
max_requests_per_minute_per_connection = 0

[[regions]]
name = "local"
id = "local-1"
host = "127.0.0.1"
port = 8124
upstreams = ["{}"]

[[teams]]
id = 1
name = "Team A"
upstream_user = "team_a"
upstream_password_file = "{}/team_a.secret"
"#,
        ch.url,
        ch.path().display()
    )
}

async fn query_status(server: &TestServer, user: &str, password: &str) -> StatusCode {
    server
        .client
        .post(&server.gateway)
        .basic_auth(user, Some(password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap()
        .status()
}

/// Polls until `want` or a second passes; returns how long it took.
async fn until(server: &TestServer, user: &str, password: &str, want: StatusCode) -> Duration {
    within_a_second("the change", want, || query_status(server, user, password)).await
}

fn summary(mut delays: Vec<Duration>) -> (Duration, Duration) {
    delays.sort();
    (delays[delays.len() / 2], *delays.last().unwrap())
}

#[tokio::test]
async fn issuance_and_revocation_reach_the_other_replica_within_a_second() {
    let ch = ClickHouse::start().await;
    let config = config(&ch);
    let one = TestServer::start_postgres(&config, None, &[]).await;
    let two = TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await;

    let mut issued = Vec::new();
    let mut revoked = Vec::new();
    for _ in 0..100 {
        let (id, user, password) = one
            .create_connection(json!({"client_type": "clickhouse"}))
            .await;
        issued.push(until(&two, &user, &password, StatusCode::OK).await);
        one.delete_connection(id).await;
        revoked.push(until(&two, &user, &password, StatusCode::FORBIDDEN).await);
    }
    let (issued_median, issued_worst) = summary(issued);
    let (revoked_median, revoked_worst) = summary(revoked);
    println!(
        "100 trials: issued visible at replica 2 after median {issued_median:?}, worst {issued_worst:?}; \
         revoked after median {revoked_median:?}, worst {revoked_worst:?}"
    );
}

#[tokio::test]
async fn concurrent_creates_on_two_replicas_never_collide() {
    let ch = ClickHouse::start().await;
    let config = config(&ch);
    let one = TestServer::start_postgres(&config, None, &[]).await;
    let two = TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await;
    let creates = (0..50)
        .flat_map(|_| [&one, &two])
        .map(|server| server.create_connection(json!({"client_type": "clickhouse"})));
    let created = futures_util::future::join_all(creates).await;
    let mut ids: Vec<i64> = created.iter().map(|(id, _, _)| *id).collect();
    let mut users: Vec<&str> = created.iter().map(|(_, u, _)| u.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    users.sort_unstable();
    users.dedup();
    assert_eq!((ids.len(), users.len()), (100, 100));
    // Each replica lists all of them (the other's within its change feed's delay), and
    // every credential works at both gateways.
    for server in [&one, &two] {
        within_a_second("all 100 listed", 100, || async {
            let list = server.get_json("/api/v1/connections?per_page=250").await;
            list["data"].as_array().unwrap().len()
        })
        .await;
    }
    // Deletes on both replicas; the total every page reports stays exact.
    let deletes = created
        .iter()
        .take(10)
        .zip([&one, &two].into_iter().cycle())
        .map(|((id, _, _), server)| server.delete(&format!("/api/v1/connections/{id}")).send());
    for resp in futures_util::future::join_all(deletes).await {
        assert_eq!(resp.unwrap().status(), StatusCode::NO_CONTENT);
    }
    for server in [&one, &two] {
        let last = format!("{}/api/v1/connections?page=90&per_page=1", server.base);
        within_a_second("the total after the deletes", json!(last), || async {
            let page = server.get_json("/api/v1/connections?per_page=1").await;
            page["pagination"]["last"].clone()
        })
        .await;
    }
    for (_, user, password) in created.iter().skip(10).take(10) {
        until(&one, user, password, StatusCode::OK).await;
        until(&two, user, password, StatusCode::OK).await;
    }
}

#[tokio::test]
async fn migrations_run_explicitly_and_concurrently_without_harm() {
    let url = Postgres::shared().create_database();
    let migrate = || {
        std::process::Command::new(crate::common::binary())
            .args(["migrate"])
            .env("SWITCHBOARD_DATABASE_URL", &url)
            .env(
                "SWITCHBOARD_DATA_DIR",
                std::env::temp_dir().join("switchboard-migrate-test"),
            )
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(migrate);
        let b = s.spawn(migrate);
        (a.join().unwrap(), b.join().unwrap())
    });
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "migrations applied"
        );
    }
    // A server told not to migrate starts on the migrated schema.
    let server =
        TestServer::start_postgres("[database]\nauto_migrate = false\n", Some(&url), &[]).await;
    let resp = server.get("/api/v1/connections").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Without a master key, a shared store is refused with a clear message.
    let out = std::process::Command::new(crate::common::binary())
        .args(["token", "create"])
        .env("SWITCHBOARD_DATABASE_URL", &url)
        .env(
            "SWITCHBOARD_DATA_DIR",
            std::env::temp_dir().join("switchboard-migrate-test"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master_key_file"));
}

#[tokio::test]
async fn an_embedded_install_moves_to_postgres_with_its_secrets_sealed() {
    let mut embedded = TestServer::start_embedded("").await;
    let mut created = Vec::new();
    for note in ["one", "two", "three"] {
        created.push(
            embedded
                .create_connection(json!({"client_type": "clickhouse", "note": note}))
                .await,
        );
    }
    let vault_credential = "vault-credential-that-must-stay-sealed";
    let vault = embedded
        .client
        .post(embedded.url("/v1/vault/connections"))
        .header("x-pica-secret", crate::common::TEST_SECRET)
        .header("content-type", "application/json")
        .body(json!({"platform": "stripe", "identity": "u1", "identityType": "user", "credentials": {"api_key": vault_credential}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(vault.status(), StatusCode::CREATED);
    let vault: serde_json::Value = vault.json().await.unwrap();
    embedded.stop();
    let dump_path = embedded.dir.join("dump.json");
    let out = embedded
        .command()
        .args(["export", "--output"])
        .arg(&dump_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = std::fs::read_to_string(&dump_path).unwrap();
    for (_, _, password) in &created {
        assert!(
            !dump.contains(password.as_str()),
            "passwords are not in the export"
        );
    }
    assert!(!dump.contains(crate::common::TOKEN));
    assert!(
        !dump.contains(vault_credential),
        "vault credentials stay sealed in the export"
    );
    assert!(!dump.contains(crate::common::TEST_SECRET));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dump_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let url = Postgres::shared().create_database();
    let key = embedded.dir.join("data/master.key");
    let import = |url: &str| {
        std::process::Command::new(crate::common::binary())
            .args(["import", "--input"])
            .arg(&dump_path)
            .env("SWITCHBOARD_DATABASE_URL", url)
            .env("SWITCHBOARD_DATA_DIR", embedded.dir.join("unused"))
            .output()
            .unwrap()
    };
    let out = import(&url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "imported 3 data connections, 1 API tokens, 0 users"
    );
    let again = import(&url);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds data"));

    // The same master key opens the moved install; tokens, connections and passwords work.
    let key_env = key.display().to_string();
    // Its default region forwards to a port where no ClickHouse answers.
    let moved = TestServer::start_postgres(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n",
        Some(&url),
        &[("SWITCHBOARD_MASTER_KEY_FILE", &key_env)],
    )
    .await;
    let list: serde_json::Value = moved
        .get("/api/v1/connections")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let usernames: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attributes"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        usernames,
        created
            .iter()
            .map(|(_, u, _)| u.as_str())
            .collect::<Vec<_>>()
    );
    let (_, user, password) = &created[0];
    // Accepted credentials get past authentication (502: they are forwarded, as the
    // organisation-wide user, to a ClickHouse that is not there); a wrong password is the
    // 516 refusal.
    let accepted = moved
        .client
        .post(&moved.gateway)
        .basic_auth(user, Some(password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::BAD_GATEWAY);
    let refused = moved
        .client
        .post(&moved.gateway)
        .basic_auth(user, Some("nope"))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // The vault moved too, under the same secret.
    let moved_vault: serde_json::Value = moved
        .client
        .get(moved.url(&format!(
            "/v1/vault/connections/{}",
            vault["id"].as_str().unwrap()
        )))
        .header("x-pica-secret", crate::common::TEST_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(moved_vault, vault);
    // New ids continue after the imported ones.
    let (id, _, _) = moved
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    assert_eq!(id, created.last().unwrap().0 + 1);
    drop(embedded);
}

/// Polls `check` until it gives `want` or a second passes; returns how long it took.
async fn within_a_second<T, F, Fut>(what: &str, want: T, check: F) -> Duration
where
    T: PartialEq + std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let start = Instant::now();
    loop {
        let got = check().await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "replica 2 did not see {what} within 1 s (still {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn vault_config(ch: &ClickHouse, platform: &str) -> String {
    format!("{}\n{}", config(ch), crate::passthrough::config(platform))
}

#[tokio::test]
async fn vault_changes_reach_the_other_replicas_passthrough_within_a_second() {
    let ch = ClickHouse::start().await;
    let platform = crate::passthrough::platform().await;
    let config = vault_config(&ch, &platform);
    let one = TestServer::start_postgres(&config, None, &[]).await;
    let two = TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await;
    let call = |key: String| {
        let request = crate::passthrough::call(&two, reqwest::Method::GET, "ping", &key);
        async move { request.send().await.unwrap().status() }
    };
    let patch = |id: &str, body: serde_json::Value| {
        one.client
            .patch(one.url(&format!("/v1/vault/connections/{id}")))
            .header("x-pica-secret", crate::common::TEST_SECRET)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let (mut issued, mut deactivated, mut reactivated, mut deleted) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        let c = crate::passthrough::connect(&one, "acme", json!({"api_key": "k"})).await;
        let (id, key) = (c["id"].as_str().unwrap(), c["key"].as_str().unwrap());
        issued.push(within_a_second("a new connection", StatusCode::OK, || call(key.into())).await);
        assert_eq!(
            patch(id, json!({"active": false})).await.unwrap().status(),
            StatusCode::OK
        );
        deactivated.push(
            within_a_second("a deactivation", StatusCode::FORBIDDEN, || call(key.into())).await,
        );
        assert_eq!(
            patch(id, json!({"active": true})).await.unwrap().status(),
            StatusCode::OK
        );
        reactivated
            .push(within_a_second("a reactivation", StatusCode::OK, || call(key.into())).await);
        let resp = one
            .client
            .delete(one.url(&format!("/v1/vault/connections/{id}")))
            .header("x-pica-secret", crate::common::TEST_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        deleted
            .push(within_a_second("a deletion", StatusCode::NOT_FOUND, || call(key.into())).await);
    }
    for (what, delays) in [
        ("created", issued),
        ("deactivated", deactivated),
        ("reactivated", reactivated),
        ("deleted", deleted),
    ] {
        let (median, worst) = summary(delays);
        println!(
            "30 trials: {what} on replica 1, seen by replica 2's passthrough after median {median:?}, worst {worst:?}"
        );
    }
}

/// The value of a Prometheus counter with these labels (0 if it was never counted).
async fn counter(server: &TestServer, name_and_labels: &str) -> u64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_write_on_one_replica_is_applied_exactly_once_on_each() {
    let ch = ClickHouse::start().await;
    let platform = crate::passthrough::platform().await;
    let config = vault_config(&ch, &platform);
    let one = TestServer::start_postgres(&config, None, &[]).await;
    let two = TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await;
    const DATA: &str = "switchboard_feed_changes_applied_total{entity=\"data_connection\"}";
    const VAULT: &str = "switchboard_feed_changes_applied_total{entity=\"integration\"}";
    let before = [
        (counter(&one, DATA).await, counter(&one, VAULT).await),
        (counter(&two, DATA).await, counter(&two, VAULT).await),
    ];

    let (_, user, password) = one
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    until(&two, &user, &password, StatusCode::OK).await;
    // (No call through it: a call's observation would be a write of its own.)
    crate::passthrough::connect(&one, "acme", json!({"api_key": "k"})).await;
    let start = Instant::now();
    while counter(&two, VAULT).await == before[1].1 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "replica 2 applied nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Anything applied twice would show by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (server, (data, vault)) in [&one, &two].into_iter().zip(before) {
        assert_eq!(counter(server, DATA).await, data + 1, "one data connection");
        assert_eq!(counter(server, VAULT).await, vault + 1, "one integration");
    }
}

#[tokio::test]
async fn with_the_database_down_the_data_planes_keep_serving() {
    let ch = ClickHouse::start().await;
    let platform = crate::passthrough::platform().await;
    let database = Postgres::dedicated();
    let url = database.create_database();
    let config = format!(
        "[database]\nacquire_timeout_seconds = 1\n{}",
        vault_config(&ch, &platform)
    );
    let server = TestServer::start_postgres(&config, Some(&url), &[]).await;
    let (id, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let c = crate::passthrough::connect(&server, "acme", json!({"api_key": "kept"})).await;
    let key = c["key"].as_str().unwrap().to_owned();
    let passthrough = || {
        let request = crate::passthrough::call(&server, reqwest::Method::GET, "ping", &key);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status();
            let echoed: serde_json::Value = resp.json().await.unwrap();
            (status, echoed["headers"]["x-acme-key"].clone())
        }
    };
    assert_eq!(passthrough().await, (StatusCode::OK, json!("kept")));
    assert_eq!(
        query_status(&server, &user, &password).await,
        StatusCode::OK
    );

    database.stop();
    for _ in 0..3 {
        assert_eq!(passthrough().await, (StatusCode::OK, json!("kept")));
        assert_eq!(
            query_status(&server, &user, &password).await,
            StatusCode::OK
        );
    }
    // The list answers from memory: the state last seen, as the gateway enforces it.
    let list = server.get_json("/api/v1/connections").await;
    assert_eq!(list["data"][0]["attributes"]["id"], id, "{list}");
    // Everything else of the control plane says it cannot reach its database, each
    // dialect in its shape.
    let resp = server
        .get(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["errors"].as_str().unwrap().contains("database"),
        "{body}"
    );
    let resp = server
        .client
        .get(server.url("/v1/vault/connections"))
        .header("x-pica-secret", crate::common::TEST_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 503, "{body}");
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // And the data planes still serve after the control plane's failures.
    assert_eq!(passthrough().await, (StatusCode::OK, json!("kept")));
    assert_eq!(
        query_status(&server, &user, &password).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_revoked_on_one_replica_is_refused_by_the_others_cache_at_once() {
    let one = TestServer::start_postgres("", None, &[]).await;
    let two = TestServer::start_postgres("", one.database_url.as_deref(), &[]).await;
    let call = |token: String| {
        let request = two
            .client
            .get(two.url("/api/v1/connections"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    let console = crate::console::Console::sign_in(&one, crate::common::TOKEN).await;
    let mut delays = Vec::new();
    for _ in 0..10 {
        let token = one.cli(&["token", "create"]).trim().to_owned();
        // Verified on replica 2 (and so in its 30 s cache) before it is revoked.
        assert_eq!(call(token.clone()).await, StatusCode::OK);
        assert_eq!(call(token.clone()).await, StatusCode::OK);
        let page = console.get("/console/tokens").await.body;
        let at = page.rfind("/console/tokens/").unwrap() + 16;
        let id = page[at..at + page[at..].find('/').unwrap()].to_owned();
        let revoked = console
            .post(&format!("/console/tokens/{id}/revoke"), &[])
            .await;
        assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
        delays.push(
            within_a_second("a revocation", StatusCode::UNAUTHORIZED, || {
                call(token.clone())
            })
            .await,
        );
    }
    let (median, worst) = summary(delays);
    println!(
        "10 trials: a token revoked on replica 1 was refused by replica 2 after median {median:?}, worst {worst:?}"
    );
}

#[tokio::test]
async fn rotations_and_in_place_changes_reach_the_other_replica_within_a_second() {
    let ch = ClickHouse::start().await;
    let config = config(&ch);
    let one = TestServer::start_postgres(&config, None, &[]).await;
    let two = TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await;
    let (id, user, old) = one
        .create_connection(json!({"client_type": "clickhouse", "ip_allowlist": ["127.0.0.1"]}))
        .await;
    until(&two, &user, &old, StatusCode::OK).await;

    // A rotation with a 3 s overlap: on both replicas both passwords work, then only the new.
    let resp = one
        .post_json(
            &format!("/api/v1/connections/{id}/rotate-password"),
            &json!({"overlap_seconds": 3}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rotated_at = Instant::now();
    let body: serde_json::Value = resp.json().await.unwrap();
    let new = body["data"]["attributes"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = until(&two, &user, &new, StatusCode::OK).await;
    for server in [&one, &two] {
        assert_eq!(query_status(server, &user, &old).await, StatusCode::OK);
        assert_eq!(query_status(server, &user, &new).await, StatusCode::OK);
    }
    assert!(
        rotated_at.elapsed() < Duration::from_secs(2),
        "checked inside the overlap"
    );
    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(rotated_at.elapsed())).await;
    for server in [&one, &two] {
        assert_eq!(
            query_status(server, &user, &old).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(query_status(server, &user, &new).await, StatusCode::OK);
    }

    // An allowlist changed on replica 1 is enforced by replica 2 within a second.
    let patch = |body: serde_json::Value| {
        one.client
            .patch(one.url(&format!("/api/v1/connections/{id}")))
            .bearer_auth(crate::common::TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let resp = patch(json!({"ip_allowlist": ["203.0.113.9"]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let narrowed = until(&two, &user, &new, StatusCode::FORBIDDEN).await;
    let resp = patch(json!({"ip_allowlist": []})).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let widened = until(&two, &user, &new, StatusCode::OK).await;
    // And an expiry brought forward to the past... is refused; to a moment away, it ends.
    let resp = patch(json!({"valid_until": "2000-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let resp = patch(json!({"valid_until": soon.to_rfc3339()}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(query_status(&two, &user, &new).await, StatusCode::FORBIDDEN);
    println!(
        "replica 2 saw: the rotated password after {seen:?}, a narrowed allowlist after {narrowed:?}, a widened one after {widened:?}"
    );
}

#[tokio::test]
async fn two_replicas_deliver_each_webhook_event_once() {
    use crate::webhooks::{Receiver, secret_file, webhook_config};
    use std::collections::HashMap;

    let receiver = Receiver::start().await;
    let (_dir, secret_path, secret) = secret_file();
    let config = webhook_config(&format!("{}/hook", receiver.base), &secret_path, "");
    let one = TestServer::start_postgres(&config, None, &[]).await;
    let two = TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await;

    // Both replicas claim at once: events made on either, delivered while the receiver
    // answers, then while it is down (both retrying) and after it is back.
    let create_on_both = |n: usize| {
        let creates = (0..n)
            .flat_map(|_| [&one, &two])
            .map(|server| server.create_connection(json!({"client_type": "clickhouse"})));
        futures_util::future::join_all(creates)
    };
    create_on_both(20).await;
    receiver.set_failing(true);
    create_on_both(10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receiver.set_failing(false);
    receiver
        .wait_for("60 events", |r| {
            r.iter()
                .map(|x| &x.id)
                .collect::<std::collections::HashSet<_>>()
                .len()
                == 60
        })
        .await;
    // Time for any second delivery to show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = receiver.received();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for r in &received {
        assert!(r.signed_with(&secret));
        *copies.entry(r.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(received.len(), 60);
    crate::webhooks::deliveries_until(
        &two,
        "state=delivered&per_page=100",
        "all delivered",
        |rows| rows.len() == 60,
    )
    .await;
    // And both did their share.
    let mut shares = Vec::new();
    for server in [&one, &two] {
        let metrics = crate::webhooks::metrics(server).await;
        let delivered: u64 = metrics
            .lines()
            .find(|l| l.starts_with("switchboard_webhook_attempts_total{outcome=\"delivered\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        shares.push(delivered);
    }
    println!("deliveries per replica: {shares:?}");
    assert_eq!(shares.iter().sum::<u64>(), 60, "{shares:?}");
    assert!(
        shares.iter().all(|n| *n > 0),
        "one replica did it all: {shares:?}"
    );
}

/// The list is served from each replica's memory: what any replica writes, and the usage
/// its gateway counts, reaches the others' lists through the change feed.
#[tokio::test]
async fn each_replicas_list_follows_the_others_writes_and_usage() {
    let ch = ClickHouse::start().await;
    let config = config(&ch).replace("[gateway]\n", "[gateway]\nusage_flush_interval_ms = 200\n");
    let one = TestServer::start_postgres(&config, None, &[]).await;
    let two = TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await;
    // The connection as replica 2 lists it, once `done` holds (within two seconds: a
    // usage batch waits up to its 200 ms interval, then travels like any change).
    let listed_on_two = |id: i64, done: fn(&serde_json::Value) -> bool| {
        let two = &two;
        async move {
            let start = Instant::now();
            loop {
                let list = two.get_json("/api/v1/connections").await;
                let found = list["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["attributes"]["id"] == id)
                    .map(|c| c["attributes"].clone())
                    .unwrap_or(serde_json::Value::Null);
                if done(&found) {
                    return (found, list["pagination"].clone(), start.elapsed());
                }
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "replica 2 lists {found}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    let (id, user, password) = one
        .create_connection(json!({"client_type": "clickhouse", "note": "first"}))
        .await;
    let (_, _, created) = listed_on_two(id, |c| c["note"] == "first").await;

    let resp = one
        .client
        .patch(one.url(&format!("/api/v1/connections/{id}")))
        .bearer_auth(crate::common::TOKEN)
        .header("content-type", "application/json")
        .body(json!({"note": "renamed"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, _, patched) = listed_on_two(id, |c| c["note"] == "renamed").await;

    for _ in 0..5 {
        let resp = one.gateway_query(&user, &password, "SELECT 1").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap(), "1\n");
    }
    let (used, _, counted) = listed_on_two(id, |c| c["query_count"] == 5).await;
    assert_eq!(used["response_bytes"], 10, "\"1\\n\" five times");
    assert!(used["last_used_at"].as_str().is_some(), "{used}");
    assert_eq!(used["note"], "renamed", "usage changes nothing else");

    one.delete_connection(id).await;
    let (_, pages, deleted) = listed_on_two(id, |c| c.is_null()).await;
    assert!(pages["next"].is_null(), "{pages}");
    println!(
        "replica 2 listed: the create after {created:?}, the patch after {patched:?}, \
         replica 1's usage after {counted:?}, the delete after {deleted:?}"
    );
}
