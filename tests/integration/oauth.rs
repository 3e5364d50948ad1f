//! OAuth2 connections against a local token endpoint and a local platform: refresh ahead
//! of expiry, refresh-and-retry on a 401, one token request however many callers (and
//! replicas) need it, and the walk operational -> degraded -> failed that survives a
//! restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{TEST_SECRET, TestServer};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq)]
enum TokenMode {
    Grant,
    Unavailable,
    InvalidGrant,
}

/// The identity provider and the platform in one small server.
struct Provider {
    mode: Mutex<TokenMode>,
    /// How long the token endpoint takes to answer.
    delay: Mutex<Duration>,
    token_requests: AtomicU64,
    /// Each token request's form fields.
    forms: Mutex<Vec<Vec<(String, String)>>>,
    /// Access tokens the platform accepts.
    valid: Mutex<HashSet<String>>,
    /// The bearer token of every platform request.
    platform_calls: Mutex<Vec<String>>,
    base: Mutex<String>,
}

impl Provider {
    async fn start() -> Arc<Self> {
        let provider = Arc::new(Self {
            mode: Mutex::new(TokenMode::Grant),
            delay: Mutex::new(Duration::ZERO),
            token_requests: AtomicU64::new(0),
            forms: Mutex::default(),
            valid: Mutex::new(HashSet::from(["at-0".to_owned()])),
            platform_calls: Mutex::default(),
            base: Mutex::default(),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/always-401", any(always_401))
            .fallback(platform)
            .with_state(provider.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *provider.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        provider
    }

    fn base(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    fn set_mode(&self, mode: TokenMode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }
}

async fn token(State(p): State<Arc<Provider>>, body: String) -> Response {
    let n = p.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    p.forms.lock().unwrap().push(
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect(),
    );
    let delay = *p.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let mode = *p.mode.lock().unwrap();
    match mode {
        TokenMode::Grant => {
            let access = format!("at-{n}");
            p.valid.lock().unwrap().insert(access.clone());
            axum::Json(json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 7200,
                "refresh_token": format!("rt-{n}"),
            }))
            .into_response()
        }
        TokenMode::Unavailable => {
            (AxumStatus::SERVICE_UNAVAILABLE, "down for maintenance").into_response()
        }
        TokenMode::InvalidGrant => (
            AxumStatus::BAD_REQUEST,
            axum::Json(
                json!({"error": "invalid_grant", "error_description": "refresh token revoked"}),
            ),
        )
            .into_response(),
    }
}

fn bearer(request: &Request) -> String {
    request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned()
}

async fn platform(State(p): State<Arc<Provider>>, request: Request) -> Response {
    let token = bearer(&request);
    p.platform_calls.lock().unwrap().push(token.clone());
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    if p.valid.lock().unwrap().contains(&token) {
        axum::Json(json!({"token": token, "body": String::from_utf8_lossy(&body)})).into_response()
    } else {
        (AxumStatus::UNAUTHORIZED, "token expired").into_response()
    }
}

async fn always_401(State(p): State<Arc<Provider>>, request: Request) -> Response {
    p.platform_calls.lock().unwrap().push(bearer(&request));
    (AxumStatus::UNAUTHORIZED, "no").into_response()
}

fn config(provider: &Provider, secret_file: &std::path::Path, oauth: &str) -> String {
    let base = provider.base();
    format!(
        r#"
[oauth]
{oauth}

[[platforms]]
platform = "acme"
name = "Acme"
description = "Acme CRM"
base_url = "{base}"
auth = "oauth2"
token_url = "{base}/oauth/token"
client_id = "switchboard-client"
client_secret_file = "{}"
scopes = ["read", "write"]
allow_private_network = true
"#,
        secret_file.display()
    )
}

fn secret_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme_client_secret");
    std::fs::write(&path, "client-secret-xyz\n").unwrap();
    (dir, path)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn create(server: &TestServer, access: &str, refresh: &str, expires_at: Value) -> Value {
    let resp = server
        .client
        .post(server.url("/v1/vault/connections"))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(
            json!({"platform": "acme", "identity": "me", "identityType": "user",
                   "credentials": {"access_token": access, "refresh_token": refresh, "expires_at": expires_at}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", server.logs());
    resp.json().await.unwrap()
}

async fn get(server: &TestServer, id: &str) -> Value {
    let resp = server
        .client
        .get(server.url(&format!("/v1/vault/connections/{id}")))
        .header("x-pica-secret", TEST_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn call(server: &TestServer, key: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = server
        .client
        .post(server.url(&format!("/v1/passthrough/{path}")))
        .header("x-pica-secret", TEST_SECRET)
        .header("x-pica-connection-key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls the connection until `done` holds (10 s at most).
async fn wait_until(
    server: &TestServer,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..200 {
        let row = get(server, id).await;
        if done(&row) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {}\n{}", get(server, id).await, server.logs());
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry_and_stay_sealed() {
    let provider = Provider::start().await;
    let (_dir, secret) = secret_file();
    let server = TestServer::start(&config(
        &provider,
        &secret,
        "refresh_margin_seconds = 1800\nscan_interval_ms = 100",
    ))
    .await;

    // expires_at is checked at the edge.
    let bad = server
        .client
        .post(server.url("/v1/vault/connections"))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(json!({"platform": "acme", "identity": "me", "identityType": "user",
                     "credentials": {"access_token": "a", "refresh_token": "r", "expires_at": "tomorrow"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["fields"], json!(["credentials.expires_at"]));

    // A token that is not due yet is left alone.
    let later = create(&server, "at-0", "rt-later", json!(now() + 86_400)).await;
    assert_eq!(later["health"]["refreshAttempts"], 0);
    assert!(later["health"]["nextRefreshAt"].is_string());

    // Expiring within the margin (10 minutes < 30): refreshed in the background.
    let soon = create(&server, "at-0", "rt-0", json!(now() + 600)).await;
    let id = soon["id"].as_str().unwrap();
    let old_ciphertexts = sealed_credentials(&server, id);
    let row = wait_until(&server, id, "refreshed", |r| {
        r["health"]["refreshAttempts"] == 1
    })
    .await;
    assert_eq!(row["state"], "operational");
    assert_eq!(row["health"]["consecutiveFailures"], 0);
    assert!(row["health"]["lastRefreshAt"].is_string());
    assert_eq!(provider.token_requests(), 1);
    let form: std::collections::HashMap<_, _> =
        provider.forms.lock().unwrap()[0].iter().cloned().collect();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "rt-0");
    assert_eq!(form["client_id"], "switchboard-client");
    assert_eq!(form["client_secret"], "client-secret-xyz");
    assert_eq!(form["scope"], "read write");
    // The new expiry is two hours out; the next refresh 30 minutes before it.
    let expires = row["health"]["accessTokenExpiresAt"].as_str().unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(expires)
        .unwrap()
        .timestamp();
    assert!((expires - (now() + 7200)).abs() < 30, "{row}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(provider.token_requests(), 1, "no second refresh");

    // Calls carry the refreshed token.
    let (status, body) = call(&server, soon["key"].as_str().unwrap(), "whoami", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token"], "at-1");

    // Tokens are sealed; the replaced ciphertext is gone from the database files.
    let db = server.database_bytes();
    for token in ["at-1", "rt-1", "rt-0", "client-secret-xyz"] {
        assert!(!contains(&db, token.as_bytes()), "{token} in the database");
        assert!(!server.logs().contains(token), "{token} in the logs");
    }
    for old in old_ciphertexts {
        assert!(
            !contains(&db, &old),
            "the replaced ciphertext is still stored"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The connection's sealed credential as `switchboard export` writes it.
fn sealed_credentials(server: &TestServer, id: &str) -> Vec<Vec<u8>> {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("dump.json");
    server.cli(&["export", "--output", path.to_str().unwrap()]);
    let dump: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    dump["integration_connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id)
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c["sealed_credentials"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries_once() {
    let provider = Provider::start().await;
    let (_dir, secret) = secret_file();
    let server = TestServer::start(&config(&provider, &secret, "scan_interval_ms = 3600000")).await;
    // The platform no longer takes this token although it has not expired.
    let conn = create(&server, "revoked", "rt-0", json!(now() + 86_400)).await;
    let key = conn["key"].as_str().unwrap();

    let (status, body) = call(&server, key, "contacts", r#"{"name":"Ada"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token"], "at-1");
    assert_eq!(body["body"], r#"{"name":"Ada"}"#, "the body was sent again");
    assert_eq!(provider.token_requests(), 1);
    assert_eq!(
        *provider.platform_calls.lock().unwrap(),
        ["revoked", "at-1"]
    );
    let row = get(&server, conn["id"].as_str().unwrap()).await;
    assert_eq!(row["state"], "operational");
    assert_eq!(row["health"]["refreshAttempts"], 1);

    // A platform that refuses even a fresh token: one refresh, one retry, then its 401.
    provider.platform_calls.lock().unwrap().clear();
    let (status, _) = call(&server, key, "always-401", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(provider.token_requests(), 2);
    assert_eq!(*provider.platform_calls.lock().unwrap(), ["at-1", "at-2"]);
    let row = get(&server, conn["id"].as_str().unwrap()).await;
    assert_eq!(row["state"], "failed");
    assert!(
        row["health"]["lastError"].as_str().unwrap().contains("401"),
        "{row}"
    );
}

#[tokio::test]
async fn fifty_concurrent_calls_on_an_expired_token_make_one_token_request() {
    let provider = Provider::start().await;
    *provider.delay.lock().unwrap() = Duration::from_millis(300);
    let (_dir, secret) = secret_file();
    let server = TestServer::start(&config(&provider, &secret, "scan_interval_ms = 3600000")).await;
    let conn = create(&server, "expired", "rt-0", json!(now() - 10)).await;
    let key = conn["key"].as_str().unwrap().to_owned();

    let server = Arc::new(server);
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let (server, key) = (server.clone(), key.clone());
            tokio::spawn(async move { call(&server, &key, &format!("item/{i}"), "").await })
        })
        .collect();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token"], "at-1");
    }
    eprintln!(
        "50 calls on an expired token (token endpoint takes 300 ms): all answered in {:?}",
        started.elapsed()
    );
    assert_eq!(provider.token_requests(), 1);
    let calls = provider.platform_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 50);
    assert!(calls.iter().all(|t| t == "at-1"), "{calls:?}");
}

#[tokio::test]
async fn replicas_sharing_a_database_make_one_token_request() {
    let provider = Provider::start().await;
    *provider.delay.lock().unwrap() = Duration::from_millis(300);
    let (_dir, secret) = secret_file();
    let config = config(&provider, &secret, "scan_interval_ms = 3600000");
    let one = Arc::new(TestServer::start_postgres(&config, None, &[]).await);
    let two = Arc::new(TestServer::start_postgres(&config, one.database_url.as_deref(), &[]).await);
    let conn = create(&one, "expired", "rt-0", json!(now() - 10)).await;
    let key = conn["key"].as_str().unwrap().to_owned();

    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let server = if i % 2 == 0 { one.clone() } else { two.clone() };
            let key = key.clone();
            tokio::spawn(async move { call(&server, &key, "whoami", "").await })
        })
        .collect();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token"], "at-1");
    }
    eprintln!(
        "50 calls over two replicas on an expired token: all answered in {:?}",
        started.elapsed()
    );
    assert_eq!(provider.token_requests(), 1);
}

#[tokio::test]
async fn a_failing_token_endpoint_walks_degraded_then_failed_across_a_restart() {
    let provider = Provider::start().await;
    provider.set_mode(TokenMode::Unavailable);
    let (_dir, secret) = secret_file();
    let mut server = TestServer::start(&config(
        &provider,
        &secret,
        "refresh_margin_seconds = 1800\nscan_interval_ms = 100\nmax_consecutive_failures = 3\n\
         retry_backoff_ms = 2000\nretry_backoff_max_ms = 2000",
    ))
    .await;
    let conn = create(&server, "at-0", "rt-0", json!(now() + 600)).await;
    let id = conn["id"].as_str().unwrap();
    let key = conn["key"].as_str().unwrap();

    let row = wait_until(&server, id, "first failure", |r| {
        r["health"]["consecutiveFailures"] == 1
    })
    .await;
    assert_eq!(row["state"], "degraded");
    assert_eq!(row["health"]["refreshAttempts"], 1);
    assert!(
        row["health"]["lastError"].as_str().unwrap().contains("503"),
        "{row}"
    );
    assert!(row["health"]["nextRefreshAt"].is_string());

    // Restart before the retry: the count is where it was.
    server.restart().await;
    let row = get(&server, id).await;
    assert_eq!(row["state"], "degraded");
    assert_eq!(row["health"]["consecutiveFailures"], 1, "{row}");

    let row = wait_until(&server, id, "failed", |r| r["state"] == "failed").await;
    assert_eq!(row["health"]["consecutiveFailures"], 3);
    assert_eq!(row["health"]["refreshAttempts"], 3);
    assert!(row["health"]["nextRefreshAt"].is_null());
    assert_eq!(provider.token_requests(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        provider.token_requests(),
        3,
        "a failed connection is not retried"
    );

    // Refused until the credential is replaced.
    let (status, body) = call(&server, key, "whoami", "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["message"].as_str().unwrap().contains("PATCH"),
        "{body}"
    );
    provider.set_mode(TokenMode::Grant);
    let patched = server
        .client
        .patch(server.url(&format!("/v1/vault/connections/{id}")))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(json!({"credentials": {"access_token": "at-0", "refresh_token": "rt-new", "expires_at": now() + 86_400}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["state"], "unknown");
    assert_eq!(patched["health"]["consecutiveFailures"], 0);
    let (status, body) = call(&server, key, "whoami", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(get(&server, id).await["state"], "operational");
}

#[tokio::test]
async fn invalid_grant_fails_at_once() {
    let provider = Provider::start().await;
    provider.set_mode(TokenMode::InvalidGrant);
    let (_dir, secret) = secret_file();
    let server = TestServer::start(&config(
        &provider,
        &secret,
        "scan_interval_ms = 3600000\nmax_consecutive_failures = 5",
    ))
    .await;
    let conn = create(&server, "expired", "rt-0", json!(now() - 10)).await;
    let key = conn["key"].as_str().unwrap();

    let (status, body) = call(&server, key, "whoami", "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let row = get(&server, conn["id"].as_str().unwrap()).await;
    assert_eq!(row["state"], "failed");
    assert_eq!(row["health"]["refreshAttempts"], 1);
    assert!(
        row["health"]["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{row}"
    );
    let (status, _) = call(&server, key, "whoami", "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(provider.token_requests(), 1);
    assert_eq!(provider.platform_calls.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn a_refresh_failure_while_expired_is_a_clear_502() {
    let provider = Provider::start().await;
    provider.set_mode(TokenMode::Unavailable);
    let (_dir, secret) = secret_file();
    let server = TestServer::start(&config(
        &provider,
        &secret,
        "scan_interval_ms = 3600000\nretry_backoff_ms = 60000\nretry_backoff_max_ms = 60000",
    ))
    .await;
    let conn = create(&server, "expired", "rt-0", json!(now() - 10)).await;
    let key = conn["key"].as_str().unwrap();
    let (status, body) = call(&server, key, "whoami", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("503"), "{body}");
    // Backing off: the next call fails fast without asking the token endpoint again.
    let (status, body) = call(&server, key, "whoami", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body["message"].as_str().unwrap().contains("next attempt"),
        "{body}"
    );
    assert_eq!(provider.token_requests(), 1);
    assert_eq!(
        get(&server, conn["id"].as_str().unwrap()).await["state"],
        "degraded"
    );
}
