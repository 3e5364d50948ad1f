//! Integration connections in the Pica dialect, over HTTP against the real binary.

use crate::common::{LIVE_SECRET, TEST_SECRET, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PLATFORMS: &str = r#"
[[platforms]]
platform = "resend"
base_url = "http://127.0.0.1:9"
allow_private_network = true

[[platforms]]
platform = "acme"
name = "Acme"
description = "Acme CRM"
base_url = "http://127.0.0.1:9"
auth = "header"
header_name = "x-acme-key"
"#;

pub fn vault(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    secret: &str,
) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, server.url(path))
        .header("x-pica-secret", secret)
}

pub async fn create(server: &TestServer, secret: &str, body: Value) -> Value {
    let resp = vault(
        server,
        reqwest::Method::POST,
        "/v1/vault/connections",
        secret,
    )
    .header("content-type", "application/json")
    .body(body.to_string())
    .send()
    .await
    .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap()
    );
    resp.json().await.unwrap()
}

pub async fn list(server: &TestServer, secret: &str, query: &str) -> Value {
    let resp = vault(
        server,
        reqwest::Method::GET,
        &format!("/v1/vault/connections?{query}"),
        secret,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    resp.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn create_get_patch_delete_and_secrets_stay_sealed() {
    let server = TestServer::start(PLATFORMS).await;
    let api_key = "re_live_credential_value_0123456789";
    let row = create(
        &server,
        TEST_SECRET,
        json!({"platform": "resend", "identity": "user-42", "identityType": "user", "tags": ["a"], "credentials": {"api_key": api_key}}),
    )
    .await;
    let id = row["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID");
    let key = row["key"].as_str().unwrap();
    let parts: Vec<&str> = key.split("::").collect();
    assert_eq!(parts[..3], ["test", "resend", "default"]);
    assert!(parts[3].len() == 32 && parts[3].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(row["type"], "api");
    assert_eq!(row["environment"], "test");
    assert_eq!(row["platform"], "resend");
    assert_eq!(row["description"], "Email API for developers");
    assert_eq!(row["state"], "unknown");
    assert_eq!(row["version"], "1.0.0");
    assert_eq!(row["platformVersion"], "1.0.0");
    assert_eq!(row["active"], true);
    assert_eq!(row["name"], Value::Null);
    assert_eq!(row["identityType"], "user");
    let created_at = row["createdAt"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2025-07-19T16:19:29.702632Z".len(),
        "{created_at}"
    );

    let got: Value = vault(
        &server,
        reqwest::Method::GET,
        &format!("/v1/vault/connections/{id}"),
        TEST_SECRET,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(got, row);

    // Another environment does not see it.
    let other = vault(
        &server,
        reqwest::Method::GET,
        &format!("/v1/vault/connections/{id}"),
        LIVE_SECRET,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert_eq!(list(&server, LIVE_SECRET, "").await["total"], 0);

    let patched: Value = vault(
        &server,
        reqwest::Method::PATCH,
        &format!("/v1/vault/connections/{id}"),
        TEST_SECRET,
    )
    .header("content-type", "application/json")
    .body(json!({"tags": ["b", "c"], "name": "Mail"}).to_string())
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(patched["tags"], json!(["b", "c"]));
    assert_eq!(patched["name"], "Mail");
    assert_eq!(patched["version"], "1.0.1");
    let deactivated: Value = vault(
        &server,
        reqwest::Method::PATCH,
        &format!("/v1/vault/connections/{id}"),
        TEST_SECRET,
    )
    .header("content-type", "application/json")
    .body(json!({"active": false}).to_string())
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(deactivated["version"], "1.0.2");
    assert_eq!(
        list(&server, TEST_SECRET, "").await["total"],
        0,
        "inactive rows are hidden by default"
    );
    assert_eq!(list(&server, TEST_SECRET, "active=false").await["total"], 1);

    // The credential is in no response, no log line, no database byte.
    let everything = format!("{row}{got}{patched}{deactivated}");
    assert!(!everything.contains(api_key));
    assert!(!server.logs().contains(api_key));
    let db = server.database_bytes();
    assert!(!db.windows(api_key.len()).any(|w| w == api_key.as_bytes()));
    for secret in [TEST_SECRET, LIVE_SECRET] {
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    let deleted = vault(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/vault/connections/{id}"),
        TEST_SECRET,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK, "{}", server.logs());
    assert!(deleted.bytes().await.unwrap().is_empty());
    let again = vault(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/vault/connections/{id}"),
        TEST_SECRET,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn secrets_and_bad_input_are_4xx_naming_the_field() {
    let server = TestServer::start(PLATFORMS).await;
    for secret in [
        None,
        Some("sk_test_wrong"),
        Some("garbage"),
        Some(&LIVE_SECRET[..LIVE_SECRET.len() - 1]),
    ] {
        let mut req = server.client.get(server.url("/v1/vault/connections"));
        if let Some(s) = secret {
            req = req.header("x-pica-secret", s);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 401);
    }
    // A secret made by the CLI works for its environment only.
    let live = server.cli(&["secret", "create", "--env", "live"]);
    let live = live.trim();
    assert!(live.starts_with("sk_live_"));
    assert_eq!(list(&server, live, "").await["total"], 0);

    let cases = [
        (
            json!({"identity": "i", "identityType": "user", "credentials": {"api_key": "k"}}),
            vec!["platform"],
        ),
        (
            json!({"platform": "nope", "identity": "i", "identityType": "user", "credentials": {"api_key": "k"}}),
            vec!["platform"],
        ),
        (
            json!({"platform": "resend", "identity": "i", "identityType": "robot", "credentials": {"api_key": "k"}}),
            vec!["identityType"],
        ),
        (
            json!({"platform": "resend", "identityType": "user", "credentials": {"api_key": "k"}}),
            vec!["identity"],
        ),
        (
            json!({"platform": "resend", "identity": "i", "identityType": "user"}),
            vec!["credentials"],
        ),
        (
            json!({"platform": "resend", "identity": "i", "identityType": "user", "credentials": {}}),
            vec!["credentials.api_key"],
        ),
        (
            json!({"platform": "resend", "identity": "i", "identityType": "user", "credentials": {"api_key": "k", "password": "p"}}),
            vec!["credentials.password"],
        ),
        (
            json!({"platform": "twilio", "identity": "i", "identityType": "user", "credentials": {"api_key": "k"}}),
            vec![
                "credentials.username",
                "credentials.password",
                "credentials.api_key",
            ],
        ),
        (
            json!({"platform": "resend", "identity": "i", "identityType": "user", "tags": "x", "credentials": {"api_key": "k"}}),
            vec!["tags"],
        ),
    ];
    for (body, fields) in cases {
        let resp = vault(
            &server,
            reqwest::Method::POST,
            "/v1/vault/connections",
            TEST_SECRET,
        )
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["fields"], json!(fields), "{body} -> {err}");
    }
    let resp = vault(
        &server,
        reqwest::Method::POST,
        "/v1/vault/connections",
        TEST_SECRET,
    )
    .header("content-type", "text/plain")
    .body("{}")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for q in [
        "limit=0",
        "limit=5000",
        "page=0",
        "active=maybe",
        "identityType=robot",
    ] {
        let resp = vault(
            &server,
            reqwest::Method::GET,
            &format!("/v1/vault/connections?{q}"),
            TEST_SECRET,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
    }
    // A repeated tag is stored once and still filters.
    let twice = create(&server, TEST_SECRET, json!({"platform": "resend", "identity": "i", "identityType": "user", "tags": ["dup", "dup"], "credentials": {"api_key": "k"}})).await;
    assert_eq!(list(&server, TEST_SECRET, "tags=dup").await["total"], 1);
    assert_eq!(twice["tags"], json!(["dup", "dup"]));
    // Basic and header platforms take their own fields.
    create(&server, TEST_SECRET, json!({"platform": "twilio", "identity": "i", "identityType": "team", "credentials": {"username": "AC1", "password": "p"}})).await;
    create(&server, TEST_SECRET, json!({"platform": "acme", "identity": "i", "identityType": "team", "credentials": {"api_key": "k"}})).await;

    let connectors: Value = vault(
        &server,
        reqwest::Method::GET,
        "/v1/available-connectors",
        TEST_SECRET,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let rows = connectors["rows"].as_array().unwrap();
    assert!(rows.len() >= 10);
    assert_eq!(connectors["total"], rows.len());
    let acme = rows.iter().find(|r| r["platform"] == "acme").unwrap();
    assert_eq!(acme["authMethod"], "header");
    assert_eq!(acme["description"], "Acme CRM");
}

#[tokio::test]
async fn filters_and_both_paging_styles_are_exact_over_hundreds_of_rows() {
    let server = TestServer::start(PLATFORMS).await;
    let types = ["user", "team", "organization", "project"];
    let mut created = Vec::new();
    for i in 0..320 {
        let platform = if i % 2 == 0 { "resend" } else { "acme" };
        let mut tags = vec![format!("batch{}", i % 5)];
        if i % 3 == 0 {
            tags.push("vip".into());
        }
        let body = json!({
            "platform": platform,
            "identity": format!("id-{}", i % 7),
            "identityType": types[i % 4],
            "name": format!("conn-{}", i % 11),
            "tags": tags,
            "credentials": {"api_key": format!("k{i}")},
        });
        created.push(create(&server, TEST_SECRET, body).await);
    }
    // A live connection never shows up in test lists.
    create(&server, LIVE_SECRET, json!({"platform": "resend", "identity": "id-0", "identityType": "user", "credentials": {"api_key": "x"}})).await;

    let count = |pred: &dyn Fn(&Value) -> bool| created.iter().filter(|r| pred(r)).count() as u64;
    let has_tag = |r: &Value, t: &str| r["tags"].as_array().unwrap().iter().any(|x| x == t);
    let checks: Vec<(String, u64)> = vec![
        ("".into(), 320),
        (
            "platform=resend".into(),
            count(&|r| r["platform"] == "resend"),
        ),
        (
            "identityType=team".into(),
            count(&|r| r["identityType"] == "team"),
        ),
        ("identity=id-3".into(), count(&|r| r["identity"] == "id-3")),
        ("name=conn-4".into(), count(&|r| r["name"] == "conn-4")),
        ("platformVersion=1.0.0".into(), 320),
        ("tags=vip".into(), count(&|r| has_tag(r, "vip"))),
        (
            "tags=vip,batch2".into(),
            count(&|r| has_tag(r, "vip") && has_tag(r, "batch2")),
        ),
        (
            "platform=acme&tags=batch1&identityType=project".into(),
            count(&|r| {
                r["platform"] == "acme" && has_tag(r, "batch1") && r["identityType"] == "project"
            }),
        ),
        (
            "platform=resend&identity=id-0".into(),
            count(&|r| r["platform"] == "resend" && r["identity"] == "id-0"),
        ),
        (
            format!(
                "key={},{}",
                created[5]["key"].as_str().unwrap(),
                created[9]["key"].as_str().unwrap()
            ),
            2,
        ),
        (format!("keys={}", created[7]["key"].as_str().unwrap()), 1),
    ];
    // The order every filtered list must keep: the unfiltered list's.
    let mut newest_first = Vec::new();
    for page in 1..=2 {
        newest_first.extend(ids(&list(
            &server,
            TEST_SECRET,
            &format!("limit=300&page={page}"),
        )
        .await));
    }
    assert_eq!(newest_first.len(), 320);
    for (filter, expected) in &checks {
        assert!(*expected > 0, "{filter} selects something");
        for limit in [7u64, 20, 300] {
            let sep = if filter.is_empty() { "" } else { "&" };
            let first = list(&server, TEST_SECRET, &format!("{filter}{sep}limit={limit}")).await;
            assert_eq!(first["total"], *expected, "{filter}");
            assert_eq!(
                first["pages"],
                expected.div_ceil(limit),
                "{filter} limit {limit}"
            );
            // Style 1: page until page > pages. Style 2: skip until total rows collected.
            let mut by_page = Vec::new();
            let mut page = 1;
            loop {
                let p = list(
                    &server,
                    TEST_SECRET,
                    &format!("{filter}{sep}limit={limit}&page={page}"),
                )
                .await;
                assert_eq!(p["page"], page);
                by_page.extend(ids(&p));
                page += 1;
                if page > p["pages"].as_u64().unwrap() {
                    break;
                }
            }
            let mut by_skip = Vec::new();
            while (by_skip.len() as u64) < *expected {
                let p = list(
                    &server,
                    TEST_SECRET,
                    &format!("{filter}{sep}limit={limit}&skip={}", by_skip.len()),
                )
                .await;
                let got = ids(&p);
                assert!(!got.is_empty());
                by_skip.extend(got);
            }
            assert_eq!(by_page.len() as u64, *expected, "{filter} limit {limit}");
            assert_eq!(by_page, by_skip, "{filter} limit {limit}");
            let in_order: Vec<_> = newest_first
                .iter()
                .filter(|id| by_page.contains(id))
                .cloned()
                .collect();
            assert_eq!(
                by_page, in_order,
                "{filter} limit {limit}: same order as unfiltered"
            );
            let mut unique = by_page.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), by_page.len());
        }
    }
    // 300 in one page, newest first, ties by id descending.
    let big = list(&server, TEST_SECRET, "limit=300").await;
    let rows = big["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 300);
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (ta, tb) = (
            a["createdAt"].as_str().unwrap(),
            b["createdAt"].as_str().unwrap(),
        );
        assert!(
            ta > tb || (ta == tb && a["id"].as_str() > b["id"].as_str()),
            "{ta} {tb}"
        );
    }
}
