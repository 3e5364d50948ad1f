//! Webhooks, received by a local endpoint that checks every signature with the documented
//! algorithm (Standard Webhooks: base64 HMAC-SHA256 of `id.timestamp.body` under the bytes
//! behind `whsec_`): every event type, a receiver that is down for a while, a server
//! `kill -9`ed with events undelivered, a delivery given up at its horizon, endpoints made
//! through the API. (Two replicas sharing the work are in `replicas`.)

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TOKEN, TestServer};
use crate::connect::{self, Consent, Setup};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    /// The documented check, written out here rather than borrowed from the server.
    pub fn signed_with(&self, secret: &str) -> bool {
        let key = BASE64
            .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
            .unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.body).as_bytes());
        let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        self.signature.split(' ').any(|s| s == expected)
    }
}

/// A webhook endpoint: records every request, answers 200, or 503 while failing.
pub struct Receiver {
    pub base: String,
    received: Mutex<Vec<Received>>,
    /// Every request's path, answered or not.
    hits: Mutex<Vec<String>>,
    failing: AtomicBool,
}

impl Receiver {
    pub async fn start() -> Arc<Self> {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub async fn start_on(listener: tokio::net::TcpListener) -> Arc<Self> {
        let receiver = Arc::new(Self {
            base: format!("http://{}", listener.local_addr().unwrap()),
            received: Mutex::default(),
            hits: Mutex::default(),
            failing: AtomicBool::new(false),
        });
        let app = Router::new().fallback(receive).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (20 s at most) until `done` holds for what arrived.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if done(&self.received()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let types: Vec<String> = self.received().iter().map(Received::event_type).collect();
        panic!("{what}: received {types:?}");
    }
}

async fn receive(State(r): State<Arc<Receiver>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let received = Received {
        path: parts.uri.path().to_owned(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::new(),
    };
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    r.hits.lock().unwrap().push(received.path.clone());
    if received.path == "/redirect" {
        return axum::response::Redirect::temporary("/followed").into_response();
    }
    if r.failing.load(Ordering::SeqCst) {
        return (AxumStatus::SERVICE_UNAVAILABLE, "down").into_response();
    }
    r.received.lock().unwrap().push(Received {
        body: String::from_utf8(body.to_vec()).unwrap(),
        ..received
    });
    AxumStatus::OK.into_response()
}

/// A secret file in the documented format.
pub fn secret_file() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("whsec_{}", BASE64.encode(rand_bytes()));
    let path = dir.path().join("webhook.secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    (dir, path, secret)
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (uuid::Uuid::new_v4().as_bytes()[i % 16]) ^ (i as u8);
    }
    bytes
}

/// `[webhook_delivery]` fast enough for a test, and one `[[webhooks]]` endpoint.
pub fn webhook_config(url: &str, secret_file: &std::path::Path, delivery: &str) -> String {
    format!(
        r#"
[webhook_delivery]
allow_private_network = true
poll_interval_ms = 50
expiry_scan_interval_ms = 100
first_retry_ms = 100
max_retry_ms = 400
timeout_ms = 2000
{delivery}

[[webhooks]]
url = "{url}"
secret_file = "{}"
"#,
        secret_file.display()
    )
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn api(server: &TestServer, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, server.url(path))
        .bearer_auth(TOKEN)
}

fn json_body(req: reqwest::RequestBuilder, body: Value) -> reqwest::RequestBuilder {
    req.header("content-type", "application/json")
        .body(body.to_string())
}

/// Polls the deliveries at `query` until `done` holds for them (20 s at most).
pub async fn deliveries_until(
    server: &TestServer,
    query: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = send(api(
            server,
            reqwest::Method::GET,
            &format!("/api/v1/webhook-deliveries?{query}"),
        ))
        .await;
        let rows = page["data"].as_array().cloned().unwrap_or_default();
        if done(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn metrics(server: &TestServer) -> String {
    server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn iso_in(d: chrono::Duration) -> String {
    (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn of_type<'a>(received: &'a [Received], t: &str) -> Vec<&'a Received> {
    received.iter().filter(|r| r.event_type() == t).collect()
}

#[tokio::test]
async fn every_event_type_arrives_signed() {
    let receiver = Receiver::start().await;
    let (_dir, secret_path, secret) = secret_file();
    let extra = format!(
        "[oauth]\nrefresh_margin_seconds = 1800\nscan_interval_ms = 100\nretry_backoff_ms = 60000\nretry_backoff_max_ms = 60000\n{}",
        webhook_config(&format!("{}/hooks", receiver.base), &secret_path, "")
    );
    let Setup {
        server, provider, ..
    } = connect::setup(false, &extra).await;
    let mut secrets_seen: Vec<String> = Vec::new();

    // A data connection's life: created (expiring within a day), changed, rotated, deleted.
    let (status, created) = send(json_body(
        api(&server, reqwest::Method::POST, "/api/v1/connections"),
        json!({"client_type": "clickhouse", "note": "hooked", "valid_until": iso_in(chrono::Duration::hours(12))}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["attributes"]["id"].as_i64().unwrap();
    let username = created["data"]["attributes"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets_seen.push(
        created["data"]["attributes"]["password"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    receiver
        .wait_for("the coming expiry", |r| {
            !of_type(r, "data_connection.expiring").is_empty()
        })
        .await;
    let (status, _) = send(json_body(
        api(
            &server,
            reqwest::Method::PATCH,
            &format!("/api/v1/connections/{id}"),
        ),
        json!({"note": "changed"}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, rotated) = send(json_body(
        api(
            &server,
            reqwest::Method::POST,
            &format!("/api/v1/connections/{id}/rotate-password"),
        ),
        json!({"overlap_seconds": 60}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    secrets_seen.push(
        rotated["data"]["attributes"]["password"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let (status, _) = send(api(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/v1/connections/{id}"),
    ))
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // One that expires a moment from now: announced as expiring, then as expired.
    let (status, short) = send(json_body(
        api(&server, reqwest::Method::POST, "/api/v1/connections"),
        json!({"client_type": "clickhouse", "valid_until": iso_in(chrono::Duration::milliseconds(1500))}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let short_id = short["data"]["attributes"]["id"].as_i64().unwrap();

    // An integration's life through the vault API.
    let (status, keyed) = send(json_body(
        server.vault(reqwest::Method::POST, "/v1/vault/connections"),
        json!({"platform": "keyed", "identity": "team-7", "identityType": "team", "credentials": {"api_key": "key-never-in-a-hook"}}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{keyed}");
    secrets_seen.push("key-never-in-a-hook".into());
    let keyed_id = keyed["id"].as_str().unwrap().to_owned();
    let (status, _) = send(json_body(
        server.vault(
            reqwest::Method::PATCH,
            &format!("/v1/vault/connections/{keyed_id}"),
        ),
        json!({"name": "Keyed for team 7"}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(server.vault(
        reqwest::Method::DELETE,
        &format!("/v1/vault/connections/{keyed_id}"),
    ))
    .await;
    assert!(status.is_success(), "{status}");

    // An OAuth2 connection whose refresh the provider refuses: refresh_failed, and its
    // state changes to failed.
    provider
        .revoked_refresh
        .lock()
        .unwrap()
        .push("rt-revoked".into());
    let expires = chrono::Utc::now().timestamp() + 600;
    let (status, acme) = send(json_body(
        server.vault(reqwest::Method::POST, "/v1/vault/connections"),
        json!({"platform": "acme", "identity": "user-9", "identityType": "user",
               "credentials": {"access_token": "at-stale", "refresh_token": "rt-revoked", "expires_at": expires}}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    secrets_seen.extend(["at-stale".into(), "rt-revoked".into()]);

    // Connect sessions: one completed, one the user declined.
    let session = connect::create_session(
        &server,
        json!({"identity": "user-1", "identityType": "user", "platforms": ["acme"]}),
    )
    .await;
    let completed_authorize = connect::sign_in(session["url"].as_str().unwrap()).await;
    let done = connect::consent_and_return(&completed_authorize).await;
    assert_eq!(done.status(), StatusCode::OK, "{}", server.logs());
    *provider.consent.lock().unwrap() = Consent::Deny;
    let declined = connect::create_session(
        &server,
        json!({"identity": "user-2", "identityType": "user", "platforms": ["acme"]}),
    )
    .await;
    let declined_authorize = connect::sign_in(declined["url"].as_str().unwrap()).await;
    connect::consent_and_return(&declined_authorize).await;
    secrets_seen.push(session["token"].as_str().unwrap().to_owned());

    let every_type = [
        "data_connection.created",
        "data_connection.updated",
        "data_connection.deleted",
        "data_connection.password_rotated",
        "data_connection.expiring",
        "data_connection.expired",
        "integration.created",
        "integration.updated",
        "integration.deleted",
        "integration.state_changed",
        "integration.refresh_failed",
        "connect_session.completed",
        "connect_session.failed",
    ];
    receiver
        .wait_for("every event type", |r| {
            every_type.iter().all(|t| !of_type(r, t).is_empty())
        })
        .await;
    let received = receiver.received();
    let now = chrono::Utc::now().timestamp();
    let (_other_dir, _, other_secret) = secret_file();
    for r in &received {
        assert!(r.signed_with(&secret), "bad signature on {r:?}");
        assert!(!r.signed_with(&other_secret), "a signature any key passes");
        assert!(r.id.starts_with("msg_"), "{r:?}");
        let ts: i64 = r.timestamp.parse().unwrap();
        assert!((now - ts).abs() < 60, "{r:?}");
        assert_eq!(r.path, "/hooks");
        let body = r.json();
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(body["data"].is_object());
        for secret in &secrets_seen {
            assert!(!r.body.contains(secret.as_str()), "a secret in {}", r.body);
        }
    }
    // Each announcement once.
    let ids: HashSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), received.len());

    // What the data says.
    let data = |t: &str| of_type(&received, t)[0].json()["data"].clone();
    let made = data("data_connection.created");
    assert_eq!(
        (made["id"].as_i64(), made["username"].as_str()),
        (Some(id), Some(username.as_str()))
    );
    assert_eq!(made["note"], "hooked");
    assert_eq!(data("data_connection.updated")["note"], "changed");
    assert!(data("data_connection.password_rotated")["previous_password_valid_until"].is_string());
    assert_eq!(data("data_connection.deleted")["id"], id);
    let expiring = of_type(&received, "data_connection.expiring");
    assert_eq!(
        expiring.len(),
        2,
        "once per connection, at the nearest lead time: {:?}",
        // What arrived, to tell a repeat from an announcement of another connection.
        expiring
            .iter()
            .map(|r| (&r.id, &r.body))
            .collect::<Vec<_>>()
    );
    assert!(
        expiring
            .iter()
            .all(|r| r.json()["data"]["lead_seconds"] == 86_400)
    );
    let expired = of_type(&received, "data_connection.expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].json()["data"]["id"], short_id);
    assert_eq!(data("integration.updated")["name"], "Keyed for team 7");
    assert_eq!(data("integration.deleted")["id"], keyed_id.as_str());
    let changed = data("integration.state_changed");
    assert_eq!(
        (
            changed["previous_state"].as_str(),
            changed["state"].as_str()
        ),
        (Some("unknown"), Some("failed")),
        "{changed}"
    );
    let failed_refresh = data("integration.refresh_failed");
    assert!(
        failed_refresh["error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{failed_refresh}"
    );
    let completed = data("connect_session.completed");
    assert_eq!(completed["platform"], "acme");
    assert!(completed["connection_key"].is_string());
    assert!(data("connect_session.failed")["error"].is_string());

    // The API shows the endpoint and every delivery as delivered, with its attempt.
    let (status, endpoints) = send(api(&server, reqwest::Method::GET, "/api/v1/webhooks")).await;
    assert_eq!(status, StatusCode::OK);
    let endpoint = &endpoints["data"][0];
    assert_eq!(endpoint["attributes"]["source"], "config");
    assert_eq!(endpoint["attributes"]["events"], json!(["*"]));
    assert!(endpoint["attributes"]["secret"].is_null());
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let (status, refused) = send(api(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/v1/webhooks/{endpoint_id}"),
    ))
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let (_, delivered) = send(api(
        &server,
        reqwest::Method::GET,
        "/api/v1/webhook-deliveries?state=delivered&per_page=250",
    ))
    .await;
    let rows = delivered["data"].as_array().unwrap();
    assert_eq!(rows.len(), received.len(), "{delivered}");
    let one = rows[0]["id"].as_str().unwrap();
    let (_, detail) = send(api(
        &server,
        reqwest::Method::GET,
        &format!("/api/v1/webhook-deliveries/{one}"),
    ))
    .await;
    let a = &detail["data"]["attributes"];
    assert_eq!(a["attempts"], 1);
    assert_eq!(a["attempt_log"][0]["status"], 200);
    assert!(a["attempt_log"][0]["latency_ms"].as_i64().unwrap() >= 0);
    // The end user's steps on the connect pages are in the audit log, named by session
    // (the state's id part), never by the link's token.
    let session_of = |authorize: &url::Url| {
        let state = authorize
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        state.split('.').next().unwrap().to_owned()
    };
    let (completed_id, declined_id) = (
        session_of(&completed_authorize),
        session_of(&declined_authorize),
    );
    assert_eq!(completed["id"], completed_id.as_str());
    assert_eq!(data("connect_session.failed")["id"], declined_id.as_str());
    let (_, audit) = send(api(
        &server,
        reqwest::Method::GET,
        "/api/v1/audit-events?actor=connect_link",
    ))
    .await;
    let steps: Vec<(String, String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let a = &e["attributes"];
            (
                a["action"].as_str().unwrap().to_owned(),
                a["target"].as_str().unwrap_or("-").to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let step = |action: &str, target: &str| {
        steps
            .iter()
            .find(|(a, t, _)| a == action && t == target)
            .map(|(_, _, outcome)| outcome.as_str())
            .unwrap_or_else(|| panic!("no {action} on {target}: {steps:?}"))
    };
    assert_eq!(
        step("connect_session.begin_consent", &completed_id),
        "success"
    );
    assert_eq!(step("connect_session.callback", &completed_id), "success");
    assert_eq!(
        step("connect_session.begin_consent", &declined_id),
        "success"
    );
    assert_ne!(step("connect_session.callback", &declined_id), "success");
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(
        !audit
            .to_string()
            .contains(session["token"].as_str().unwrap())
    );

    // The log keeps the secret out too.
    let logs = server.logs();
    assert!(
        !logs.contains(&secret[6..]),
        "the webhook secret in the log"
    );
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_event_once_by_id() {
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let (_dir, secret_path, secret) = secret_file();
    let server = TestServer::start(&webhook_config(
        &format!("{}/config-hook", receiver.base),
        &secret_path,
        "",
    ))
    .await;
    // A second endpoint made through the API, for connections' creation only.
    let (status, made) = send(json_body(
        api(&server, reqwest::Method::POST, "/api/v1/webhooks"),
        json!({"url": format!("{}/api-hook", receiver.base), "events": ["data_connection.created"]}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let api_secret = made["data"]["attributes"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(api_secret.starts_with("whsec_"));
    let api_endpoint = made["data"]["id"].as_str().unwrap().to_owned();
    for (body, field) in [
        (json!({"url": "ftp://x.example"}), "url"),
        (
            json!({"url": "https://x.example", "events": ["data_connection.made"]}),
            "events",
        ),
        (json!({"events": []}), "url"),
        (json!({"url": "https://x.example", "color": "red"}), "body"),
    ] {
        let (status, refused) = send(json_body(
            api(&server, reqwest::Method::POST, "/api/v1/webhooks"),
            body.clone(),
        ))
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(refused["invalid_attributes"], json!([field]), "{refused}");
    }

    let mut ids = Vec::new();
    for n in 0..5 {
        let (id, _, _) = server
            .create_connection(json!({"client_type": "clickhouse", "note": format!("n{n}")}))
            .await;
        ids.push(id);
    }
    server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let (status, _) = send(json_body(
        api(
            &server,
            reqwest::Method::PATCH,
            &format!("/api/v1/connections/{}", ids[0]),
        ),
        json!({"note": "updated while down"}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);

    // While the receiver is down: retried, and shown as such.
    let rows = deliveries_until(
        &server,
        "state=pending&per_page=250",
        "not retried",
        |rows| {
            rows.len() == 13
                && rows
                    .iter()
                    .all(|r| r["attributes"]["attempts"].as_i64() >= Some(2))
        },
    )
    .await;
    assert!(rows.iter().all(|r| r["attributes"]["last_status"] == 503));
    let metrics = metrics(&server).await;
    assert!(
        metrics.contains("switchboard_webhook_attempts_total{outcome=\"retry\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_webhook_deliveries_pending"),
        "{metrics}"
    );
    assert!(receiver.received().is_empty());

    receiver.set_failing(false);
    receiver
        .wait_for("every event once back up", |r| {
            let distinct: HashSet<(&str, &str)> =
                r.iter().map(|x| (x.path.as_str(), x.id.as_str())).collect();
            distinct.len() == 13
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    let mut by_id: HashMap<(&str, &str), Vec<&Received>> = HashMap::new();
    for r in &received {
        by_id
            .entry((r.path.as_str(), r.id.as_str()))
            .or_default()
            .push(r);
    }
    assert_eq!(
        by_id.len(),
        13,
        "7 events to the config endpoint, 6 to the API one"
    );
    for ((path, _), copies) in &by_id {
        // At least once; a repeat carries the same id and body.
        assert!(copies.iter().all(|c| c.body == copies[0].body));
        let secret = if *path == "/api-hook" {
            &api_secret
        } else {
            &secret
        };
        assert!(copies.iter().all(|c| c.signed_with(secret)), "{path}");
    }
    let api_types: Vec<String> = received
        .iter()
        .filter(|r| r.path == "/api-hook")
        .map(Received::event_type)
        .collect();
    assert!(
        api_types.iter().all(|t| t == "data_connection.created"),
        "{api_types:?}"
    );

    let (_, delivered) = send(api(
        &server,
        reqwest::Method::GET,
        &format!("/api/v1/webhook-deliveries?state=delivered&endpoint_id={api_endpoint}"),
    ))
    .await;
    let rows = delivered["data"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{delivered}");
    let id = rows[0]["id"].as_str().unwrap();
    let (_, detail) = send(api(
        &server,
        reqwest::Method::GET,
        &format!("/api/v1/webhook-deliveries/{id}"),
    ))
    .await;
    let log = detail["data"]["attributes"]["attempt_log"]
        .as_array()
        .unwrap()
        .clone();
    assert!(log.len() >= 3, "{detail}");
    assert!(log[..log.len() - 1].iter().all(|a| a["status"] == 503));
    assert_eq!(log.last().unwrap()["status"], 200);

    // An API endpoint can be removed; it gets nothing more.
    let (status, _) = send(api(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/v1/webhooks/{api_endpoint}"),
    ))
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    receiver
        .wait_for("the last event", |r| {
            r.iter()
                .filter(|x| x.path == "/config-hook")
                .map(|x| &x.id)
                .collect::<HashSet<_>>()
                .len()
                == 8
        })
        .await;
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|x| x.path == "/api-hook")
            .map(|x| &x.id)
            .collect::<HashSet<_>>()
            .len(),
        6
    );
}

#[tokio::test]
async fn undelivered_events_survive_kill_9() {
    // A port nobody listens on yet: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, secret_path, secret) = secret_file();
    let mut server = TestServer::start(&webhook_config(
        &format!("http://127.0.0.1:{port}/hook"),
        &secret_path,
        "",
    ))
    .await;
    for _ in 0..4 {
        server
            .create_connection(json!({"client_type": "clickhouse"}))
            .await;
    }
    let rows = deliveries_until(&server, "state=pending", "never tried", |rows| {
        rows.len() == 4
            && rows
                .iter()
                .all(|r| r["attributes"]["attempts"].as_i64() >= Some(1))
    })
    .await;
    assert!(rows[0]["attributes"]["last_status"].is_null(), "no answer");
    assert!(rows[0]["attributes"]["last_error"].is_string());
    server.kill9();

    let receiver = Receiver::start_on(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    )
    .await;
    server.restart().await;
    receiver
        .wait_for("the four events after the restart", |r| {
            r.iter().map(|x| &x.id).collect::<HashSet<_>>().len() == 4
        })
        .await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.signed_with(&secret)));
    assert!(
        received
            .iter()
            .all(|r| r.event_type() == "data_connection.created")
    );
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_is_given_up_and_shown() {
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let (_dir, secret_path, _) = secret_file();
    let server = TestServer::start(&webhook_config(
        &format!("{}/hook", receiver.base),
        &secret_path,
        "horizon_seconds = 1",
    ))
    .await;
    // And an endpoint that answers with a redirect: not followed, not delivered.
    let (status, _) = send(json_body(
        api(&server, reqwest::Method::POST, "/api/v1/webhooks"),
        json!({"url": format!("{}/redirect", receiver.base)}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED);
    server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let failed = deliveries_until(&server, "state=failed", "never given up", |rows| {
        rows.len() == 2
    })
    .await;
    let redirected = failed
        .iter()
        .find(|d| d["attributes"]["last_status"] == 307)
        .expect("the redirected delivery");
    assert!(
        redirected["attributes"]["last_error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{redirected}"
    );
    let hits = receiver.hits.lock().unwrap().clone();
    assert!(hits.iter().any(|p| p == "/redirect"));
    assert!(
        !hits.iter().any(|p| p == "/followed"),
        "a redirect was followed"
    );
    let failed: Vec<&Value> = failed
        .iter()
        .filter(|d| d["attributes"]["last_status"] != 307)
        .collect();
    let a = &failed[0]["attributes"];
    assert_eq!(a["last_status"], 503);
    assert!(a["next_attempt_at"].is_null());
    assert!(a["attempts"].as_i64().unwrap() >= 2, "{a}");
    let metrics = metrics(&server).await;
    assert!(
        metrics.contains("switchboard_webhook_attempts_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );
    // Given up means no more attempts.
    let attempts = a["attempts"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, again) = send(api(
        &server,
        reqwest::Method::GET,
        "/api/v1/webhook-deliveries?state=failed",
    ))
    .await;
    let still: Vec<&Value> = again["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["attributes"]["last_status"] == 503)
        .collect();
    assert_eq!(still[0]["attributes"]["attempts"], attempts);
    // Filters are checked.
    let (status, refused) = send(api(
        &server,
        reqwest::Method::GET,
        "/api/v1/webhook-deliveries?state=lost",
    ))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["invalid_attributes"], json!(["state"]));
}

#[tokio::test]
async fn a_bad_webhook_configuration_is_refused_with_its_key() {
    let (_dir, secret_path, _) = secret_file();
    let plain = secret_path.with_file_name("plain.secret");
    std::fs::write(&plain, "not-a-whsec-secret\n").unwrap();
    for (config, hint) in [
        (
            webhook_config("https://hooks.example.com/a", &plain, ""),
            "webhooks[0].secret_file",
        ),
        (
            webhook_config(
                "http://10.0.0.5/a",
                &secret_path,
                "allow_private_network = false",
            )
            .replacen("allow_private_network = true\n", "", 1),
            "webhooks[0].url",
        ),
        (
            format!(
                "{}events = [\"data_connection.made\"]\n",
                webhook_config("https://hooks.example.com/a", &secret_path, "")
            ),
            "webhooks[0].events",
        ),
    ] {
        let (ok, output) = crate::common::run_once(&config, &["serve"], &[]);
        assert!(!ok, "{config}");
        assert!(output.contains(hint), "{hint}: {output}");
    }
}
