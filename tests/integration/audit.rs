//! The audit log over HTTP and the command line: each change appears once with the right
//! actor, refused authentications appear (batched), filters and pages work, only a global
//! token reads it, and no row holds a secret.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TEST_SECRET, TOKEN, TestServer};
use crate::console::{Console, start};

async fn events(server: &TestServer, query: &str) -> Value {
    let resp = server
        .get(&format!("/api/v1/audit-events?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

fn attributes(list: &Value) -> Vec<Value> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attributes"].clone())
        .collect()
}

/// Waits until `query` lists `n` events (refusals are written in batches).
pub async fn until_listed(server: &TestServer, query: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let found = attributes(&events(server, query).await);
        if found.len() >= n {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{query}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_change_is_recorded_once_with_its_actor() {
    let server = start().await;
    let ops_token = server.cli(&["token", "create", "--email", "ops@example.com"]);
    let ops_token = ops_token.trim().to_owned();
    let ops = |method: reqwest::Method, path: &str| {
        server
            .client
            .request(method, server.url(path))
            .bearer_auth(&ops_token)
    };

    // Data connections through the API, as ops.
    let resp = ops(reqwest::Method::POST, "/api/v1/connections")
        .header("content-type", "application/json")
        .body(json!({"client_type": "clickhouse", "team_ids": [1234]}).to_string())
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let created: Value = resp.json().await.unwrap();
    let id = created["data"]["attributes"]["id"].as_i64().unwrap();
    let password = created["data"]["attributes"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = ops(reqwest::Method::PATCH, &format!("/api/v1/connections/{id}"))
        .header("content-type", "application/json")
        .body(r#"{"note": "audited"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = ops(
        reqwest::Method::POST,
        &format!("/api/v1/connections/{id}/rotate-password"),
    )
    .send()
    .await
    .unwrap();
    let rotated: Value = resp.json().await.unwrap();
    let new_password = rotated["data"]["attributes"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = ops(reqwest::Method::PATCH, &format!("/api/v1/connections/{id}"))
        .header("content-type", "application/json")
        .body(r#"{"team_ids": [5678]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = ops(
        reqwest::Method::DELETE,
        &format!("/api/v1/connections/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // Reads are not changes.
    ops(reqwest::Method::GET, "/api/v1/connections")
        .send()
        .await
        .unwrap();

    // The rejected attempt comes with the next batch; the changes are there at once.
    let mine = until_listed(&server, "actor=ops@example.com", 5).await;
    let actions: Vec<(&str, &str)> = mine
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("data_connection.delete", "success"),
            ("data_connection.update", "rejected"),
            ("data_connection.rotate_password", "success"),
            ("data_connection.update", "success"),
            ("data_connection.create", "success"),
        ],
        "each once, newest first"
    );
    let create = mine.last().unwrap();
    assert_eq!(create["actor_kind"], "api_token");
    assert_eq!(create["actor_user"], "ops@example.com");
    assert_eq!(create["target"], id.to_string());
    assert_eq!(create["request_id"], request_id.as_str());
    assert_eq!(create["client_ip"], "127.0.0.1");
    assert_eq!(create["status"], 201);
    let token_id = create["actor_id"].as_i64().unwrap();
    let id_text = id.to_string();
    assert!(
        mine.iter()
            .all(|e| e["actor_id"] == token_id && e["target"] == id_text.as_str())
    );
    let by_id = attributes(&events(&server, &format!("actor=api_token:{token_id}")).await);
    assert_eq!(by_id.len(), 5);

    // The vault, as its secret.
    let resp = server
        .client
        .post(server.url("/v1/vault/connections"))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(
            json!({"platform": "resend", "identity": "u", "identityType": "user",
                   "credentials": {"api_key": "re_secret_key_value"}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let integration: Value = resp.json().await.unwrap();
    let integration_id = integration["id"].as_str().unwrap();
    let vault = attributes(&events(&server, "action=integration.create").await);
    assert_eq!(vault.len(), 1);
    assert_eq!(vault[0]["actor_kind"], "vault_secret");
    assert_eq!(vault[0]["target"], integration_id);

    // The console, as the bootstrap token: sign-in, a token made, revoked.
    let console = Console::sign_in(&server, TOKEN).await;
    let made = console
        .post("/console/tokens", &[("scope", "global")])
        .await;
    assert_eq!(made.location(), "/console/revealed");
    let console_token = console
        .get("/console/revealed")
        .await
        .input_value("secret")
        .unwrap();
    let made_events = attributes(&events(&server, "action=api_token.create").await);
    let by_console = made_events
        .iter()
        .find(|e| e["actor_kind"] == "api_token")
        .expect("the console's create");
    let new_id = by_console["target"].as_str().unwrap().to_owned();
    let revoked = console
        .post(&format!("/console/tokens/{new_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let revokes = attributes(&events(&server, "action=api_token.revoke").await);
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0]["target"], new_id.as_str());
    assert_eq!(
        attributes(&events(&server, "action=console.sign_in").await).len(),
        1
    );
    // The command line's own changes are the command line's.
    let cli = attributes(&events(&server, "actor=cli").await);
    assert_eq!(cli.len(), 1);
    assert_eq!(cli[0]["action"], "api_token.create");

    // Refused authentications, batched: an unknown token, a team token, a bad secret.
    server
        .client
        .get(server.url("/api/v1/connections"))
        .bearer_auth("not-a-token-at-all-0000")
        .send()
        .await
        .unwrap();
    let team = server.cli(&["token", "create", "--team", "1234"]);
    let resp = server
        .client
        .delete(server.url("/api/v1/connections/1"))
        .bearer_auth(team.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    server
        .client
        .get(server.url("/v1/vault/connections"))
        .header("x-pica-secret", "sk_test_wrong")
        .send()
        .await
        .unwrap();
    // A connect session's status read with a bad secret: the link's token stays out.
    server
        .client
        .get(server.url("/v1/connect/sessions/cs_secret_link_token_value"))
        .header("x-pica-secret", "sk_test_wrong")
        .send()
        .await
        .unwrap();
    let refused = until_listed(&server, "outcome=refused", 4).await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|e| e["target"] == "/v1/connect/sessions/{token}")
    );
    assert!(
        !serde_json::to_string(&refused)
            .unwrap()
            .contains("cs_secret_link_token_value")
    );
    assert!(
        refused
            .iter()
            .any(|e| e["action"] == "data_connection.delete"
                && e["actor_kind"] == "api_token"
                && e["status"] == 403)
    );
    // The three refused reads: an unknown token, a bad secret twice; nobody we know.
    let reads: Vec<&Value> = refused
        .iter()
        .filter(|e| e["action"] == "access.refused")
        .collect();
    assert_eq!(reads.len(), 3, "{refused:?}");
    assert!(
        reads
            .iter()
            .all(|e| e["actor_kind"] == "anonymous" && e["status"] == 401)
    );

    // Filters, pages, and who may read it.
    let page = events(&server, "per_page=2&page=2&outcome=success").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(
        page["pagination"]["first"]
            .as_str()
            .unwrap()
            .contains("outcome=success")
    );
    let future = events(&server, "since=2100-01-01T00:00:00Z").await;
    assert!(future["data"].as_array().unwrap().is_empty());
    for bad in ["actor=root", "outcome=meh", "since=yesterday", "page=0"] {
        let resp = server
            .get(&format!("/api/v1/audit-events?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let resp = server
        .client
        .get(server.url("/api/v1/audit-events"))
        .bearer_auth(team.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // The command line reads the same log, as JSON lines.
    let lines = server.cli(&["audit", "--action", "data_connection.create"]);
    let parsed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0]["attributes"]["target"], id.to_string());

    // No secret in any row: the database holds none of them.
    let db = server.database_bytes();
    let holds = |s: &str| db.windows(s.len()).any(|w| w == s.as_bytes());
    for secret in [
        password.as_str(),
        new_password.as_str(),
        ops_token.as_str(),
        console_token.as_str(),
        TOKEN,
        "re_secret_key_value",
        "not-a-token-at-all-0000",
        "cs_secret_link_token_value",
    ] {
        assert!(!holds(secret), "the database holds a secret");
    }
}
