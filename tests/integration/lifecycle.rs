//! A data connection's life after create: changed in place (note, expiry, allowlist) and
//! its password rotated with an overlap, each taking effect in the gateway at once. The
//! upstream here never answers: `TestServer::gateway_verdict` tells accepted credentials
//! (502/503) from refused ones (403) without a ClickHouse. (Two
//! replicas on a real ClickHouse are in `replicas`.)

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TOPOLOGY, TestServer};
use crate::console::{Console, PLATFORMS};

async fn patch(server: &TestServer, id: i64, body: Value) -> (StatusCode, Value) {
    let resp = server
        .client
        .patch(server.url(&format!("/api/v1/connections/{id}")))
        .bearer_auth(crate::common::TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn rotate(server: &TestServer, id: i64, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = server
        .client
        .post(server.url(&format!("/api/v1/connections/{id}/rotate-password")))
        .bearer_auth(crate::common::TOKEN);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

fn invalid_fields(body: &Value) -> Vec<String> {
    body["invalid_attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn start() -> TestServer {
    TestServer::start(&format!("{TOPOLOGY}{PLATFORMS}")).await
}

#[tokio::test]
async fn a_connection_changes_in_place_and_the_gateway_follows_at_once() {
    let server = start().await;
    let (id, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1234], "note": "first", "ip_allowlist": ["127.0.0.1"]}))
        .await;
    assert_eq!(server.gateway_verdict(&user, &password).await, "accepted");

    // The allowlist: changed, and the very next query meets it.
    let (status, body) = patch(&server, id, json!({"ip_allowlist": ["203.0.113.0/24"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a = &body["data"]["attributes"];
    assert_eq!(a["ip_allowlist"], json!(["203.0.113.0/24"]));
    assert_eq!(a["note"], "first", "what the PATCH does not name stays");
    assert!(a["password"].is_null(), "never the password");
    assert!(a["sample_query"].as_str().unwrap().contains(&user));
    assert_eq!(server.gateway_verdict(&user, &password).await, "refused");
    let (status, _) = patch(&server, id, json!({"ip_allowlist": ["127.0.0.0/8", "::1"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.gateway_verdict(&user, &password).await, "accepted");

    // The expiry: shortened to a moment from now, it ends then; extended, it works again.
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (status, body) = patch(
        &server,
        id,
        json!({"valid_until": soon.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "note": "  second  "}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["attributes"]["note"], "second");
    assert_eq!(server.gateway_verdict(&user, &password).await, "accepted");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        server.gateway_verdict(&user, &password).await,
        "refused",
        "expired"
    );
    let (status, body) = patch(&server, id, json!({"valid_until": null, "note": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data"]["attributes"]["valid_until"].is_null());
    assert!(body["data"]["attributes"]["note"].is_null());
    assert_eq!(server.gateway_verdict(&user, &password).await, "accepted");

    // What cannot change, or is wrong, is named; nothing changes then.
    for (body, fields) in [
        (
            json!({"valid_until": "2001-01-01T00:00:00Z"}),
            vec!["valid_until"],
        ),
        (json!({"valid_until": "soon"}), vec!["valid_until"]),
        (json!({"team_ids": [5678]}), vec!["team_ids"]),
        (
            json!({"data_region": "local", "note": "x"}),
            vec!["data_region"],
        ),
        (json!({"team_names": ["Other Team"]}), vec!["team_names"]),
        (
            json!({"ip_allowlist": ["10.0.0.1/8"]}),
            vec!["ip_allowlist"],
        ),
        (json!({"ip_allowlist": null}), vec!["ip_allowlist"]),
        (json!({"colour": "red"}), vec!["body"]),
        (json!({}), vec!["body"]),
    ] {
        let (status, answer) = patch(&server, id, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
        assert_eq!(invalid_fields(&answer), fields, "{body} -> {answer}");
    }
    let (_, now) = patch(&server, id, json!({"note": "third"})).await;
    let a = &now["data"]["attributes"];
    assert_eq!(a["team_ids"], json!([1234]));
    assert_eq!(a["ip_allowlist"], json!(["127.0.0.0/8", "::1"]));

    let (status, _) = patch(&server, 999_999, json!({"note": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Team tokens may not (as on every route of this API).
    let team = server.cli(&["token", "create", "--team", "1234"]);
    let resp = server
        .client
        .patch(server.url(&format!("/api/v1/connections/{id}")))
        .bearer_auth(team.trim())
        .header("content-type", "application/json")
        .body(r#"{"note": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_rotated_password_overlaps_the_old_one_then_replaces_it() {
    let server = start().await;
    let (id, user, old) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1234]}))
        .await;

    let (status, body) = rotate(&server, id, Some(json!({"overlap_seconds": 2}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a = &body["data"]["attributes"];
    let new = a["password"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 64);
    assert_ne!(new, old);
    assert_eq!(a["username"], user.as_str(), "the username stays");
    assert!(
        a["sample_query"].as_str().unwrap().contains(&new),
        "as create answers"
    );
    let rotated_at = Instant::now();
    assert_eq!(server.gateway_verdict(&user, &new).await, "accepted");
    assert_eq!(
        server.gateway_verdict(&user, &old).await,
        "accepted",
        "inside the overlap"
    );
    let get: Value = server.get_json(&format!("/api/v1/connections/{id}")).await;
    assert!(get["data"]["attributes"]["password"].is_null());
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(rotated_at.elapsed())).await;
    assert_eq!(
        server.gateway_verdict(&user, &old).await,
        "refused",
        "after the overlap"
    );
    assert_eq!(server.gateway_verdict(&user, &new).await, "accepted");

    // Without an overlap (no body at all), the old password stops at once.
    let (status, body) = rotate(&server, id, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest = body["data"]["attributes"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.gateway_verdict(&user, &new).await, "refused");
    assert_eq!(server.gateway_verdict(&user, &newest).await, "accepted");

    for (body, field) in [
        (json!({"overlap_seconds": 604_801}), "overlap_seconds"),
        (json!({"overlap_seconds": -1}), "overlap_seconds"),
        (json!({"overlap_seconds": "10"}), "overlap_seconds"),
        (json!({"overlap": 10}), "body"),
    ] {
        let (status, answer) = rotate(&server, id, Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
        assert_eq!(invalid_fields(&answer), vec![field]);
    }
    assert_eq!(
        server.gateway_verdict(&user, &newest).await,
        "accepted",
        "refusals change nothing"
    );
    let (status, _) = rotate(&server, 424_242, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // From the command line: printed once; the server follows through its change feed.
    let printed = server.cli(&[
        "connection",
        "rotate",
        &id.to_string(),
        "--overlap-seconds",
        "60",
    ]);
    let cli_password = printed.trim();
    assert_eq!(cli_password.len(), 64);
    let start = Instant::now();
    while server.gateway_verdict(&user, cli_password).await != "accepted" {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the server did not follow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.gateway_verdict(&user, &newest).await,
        "accepted",
        "overlap of 60 s"
    );
    assert!(!server.logs().contains(&new) && !server.logs().contains(cli_password));
    let missing = server
        .command()
        .args(["connection", "rotate", "424242"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no data connection with id 424242"));
}

#[tokio::test]
async fn the_console_shows_changes_and_rotates_a_password() {
    let server = start().await;
    let (id, user, old) = server
        .create_connection(
            json!({"client_type": "clickhouse", "team_ids": [1234], "note": "before"}),
        )
        .await;
    patch(
        &server,
        id,
        json!({"note": "after", "ip_allowlist": ["127.0.0.1", "198.51.100.7"]}),
    )
    .await;
    let console = Console::sign_in(&server, crate::common::TOKEN).await;
    let page = console
        .get(&format!("/console/data-connections/{id}"))
        .await;
    assert!(page.body.contains("after") && page.body.contains("198.51.100.7"));

    let rotated = console
        .post(
            &format!("/console/data-connections/{id}/rotate"),
            &[("overlap_seconds", "600")],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::SEE_OTHER, "{}", rotated.body);
    let shown = console.get(rotated.location()).await;
    let new = shown
        .input_value("password")
        .expect("the new password, once");
    assert_ne!(new, old);
    assert_eq!(server.gateway_verdict(&user, &new).await, "accepted");
    assert_eq!(
        server.gateway_verdict(&user, &old).await,
        "accepted",
        "10 minutes of overlap"
    );
    let again = console.get(rotated.location()).await;
    assert!(!again.body.contains(&new));

    // A team token rotates only its own team's.
    let (theirs, other_user, other_password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [5678]}))
        .await;
    let team = server.cli(&["token", "create", "--team", "1234"]);
    let team = Console::sign_in(&server, team.trim()).await;
    let refused = team
        .post(&format!("/console/data-connections/{theirs}/rotate"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.gateway_verdict(&other_user, &other_password).await,
        "accepted"
    );
}
