//! The passthrough against a small local HTTP server that plays the platform.

use std::time::Duration;

use crate::common::{LIVE_SECRET, TEST_SECRET, TestServer};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use axum::routing::any;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The fake platform: echoes what it received; a few paths misbehave on purpose.
pub async fn platform() -> String {
    async fn echo(request: Request) -> axum::Json<Value> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(v.to_str().unwrap_or("").into()),
                )
            })
            .collect();
        axum::Json(json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body_len": body.len(),
        }))
    }
    async fn unauthorized() -> impl IntoResponse {
        (AxumStatus::UNAUTHORIZED, "bad key")
    }
    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(10)).await;
        "late"
    }
    async fn redirect() -> impl IntoResponse {
        (
            AxumStatus::FOUND,
            [("location", "http://203.0.113.9/elsewhere")],
            "",
        )
    }
    async fn big() -> impl IntoResponse {
        let chunk = Bytes::from(vec![b'z'; 1024 * 1024]);
        let stream = futures_util::stream::iter(
            (0..32).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        Body::from_stream(stream)
    }
    /// Redirects to the very URL it was called with (query included), plus a slash.
    async fn self_redirect(request: Request) -> impl IntoResponse {
        let host = request.headers()["host"].to_str().unwrap().to_owned();
        let uri = request.uri();
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let here = format!("http://{host}{}/{query}", uri.path());
        (
            AxumStatus::MOVED_PERMANENTLY,
            [("location", here.clone()), ("content-location", here)],
            "",
        )
    }
    let app = Router::new()
        .route("/self-redirect", any(self_redirect))
        .route("/unauthorized", any(unauthorized))
        .route("/slow", any(slow))
        .route("/redirect", any(redirect))
        .route("/big", any(big))
        .fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

pub fn config(base: &str) -> String {
    format!(
        r#"
[passthrough]
response_timeout_seconds = 2

[[platforms]]
platform = "resend"
base_url = "{base}/v1"
allow_private_network = true

[[platforms]]
platform = "acme"
base_url = "{base}"
auth = "header"
header_name = "x-acme-key"
allow_private_network = true

[[platforms]]
platform = "quux"
base_url = "{base}"
auth = "query"
query_param = "token"
allow_private_network = true

[[platforms]]
platform = "twilio"
base_url = "{base}"
allow_private_network = true

[[platforms]]
platform = "guarded"
base_url = "{base}"
auth = "bearer"
"#
    )
}

pub async fn connect(server: &TestServer, platform: &str, credentials: Value) -> Value {
    let resp = server
        .client
        .post(server.url("/v1/vault/connections"))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(json!({"platform": platform, "identity": "me", "identityType": "user", "credentials": credentials}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

pub fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, server.url(&format!("/v1/passthrough/{path}")))
        .header("x-pica-secret", TEST_SECRET)
        .header("x-pica-connection-key", key)
}

#[tokio::test]
async fn credentials_arrive_where_the_auth_method_puts_them() {
    let base = platform().await;
    let server = TestServer::start(&config(&base)).await;
    let bearer = connect(&server, "resend", json!({"api_key": "re_secret_1"})).await;
    let echoed: Value = call(
        &server,
        reqwest::Method::POST,
        "emails/send?x=1&y=two",
        bearer["key"].as_str().unwrap(),
    )
    .header("authorization", "Bearer client-own")
    .header("x-pica-extra", "ours")
    .header("x-custom", "kept")
    .body("hello")
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/v1/emails/send");
    assert_eq!(echoed["query"], "x=1&y=two");
    assert_eq!(echoed["body_len"], 5);
    let headers = echoed["headers"].as_object().unwrap();
    assert_eq!(headers["authorization"], "Bearer re_secret_1");
    assert_eq!(headers["x-custom"], "kept");
    assert!(
        headers.keys().all(|k| !k.starts_with("x-pica-")),
        "{headers:?}"
    );

    let header = connect(&server, "acme", json!({"api_key": "acme_secret"})).await;
    let echoed: Value = call(
        &server,
        reqwest::Method::GET,
        "contacts",
        header["key"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(echoed["headers"]["x-acme-key"], "acme_secret");
    assert!(echoed["headers"].get("authorization").is_none());

    let query = connect(&server, "quux", json!({"api_key": "q_secret"})).await;
    let echoed: Value = call(
        &server,
        reqwest::Method::GET,
        "items?page=2",
        query["key"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(echoed["query"], "page=2&token=q_secret");

    let basic = connect(
        &server,
        "twilio",
        json!({"username": "AC123", "password": "tw_secret"}),
    )
    .await;
    let echoed: Value = call(
        &server,
        reqwest::Method::GET,
        "Accounts",
        basic["key"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        echoed["headers"]["authorization"],
        "Basic QUMxMjM6dHdfc2VjcmV0"
    );

    // A successful call makes the state operational; no credential leaked to the logs.
    let got: Value = server
        .client
        .get(server.url(&format!(
            "/v1/vault/connections/{}",
            bearer["id"].as_str().unwrap()
        )))
        .header("x-pica-secret", TEST_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], "operational");
    for secret in ["re_secret_1", "acme_secret", "q_secret", "tw_secret"] {
        assert!(!server.logs().contains(secret));
    }
}

/// A GET written by hand, so its path reaches the server exactly as given.
async fn raw_get(server: &TestServer, path: &str, key: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nx-pica-secret: {TEST_SECRET}\r\nx-pica-connection-key: {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn refusals_timeouts_redirects_and_large_bodies() {
    let base = platform().await;
    let server = TestServer::start(&config(&base)).await;
    let conn = connect(&server, "resend", json!({"api_key": "k1"})).await;
    let key = conn["key"].as_str().unwrap().to_owned();
    let id = conn["id"].as_str().unwrap().to_owned();

    // Missing key header, unknown key, another environment's secret.
    let resp = server
        .client
        .get(server.url("/v1/passthrough/x"))
        .header("x-pica-secret", TEST_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        call(
            &server,
            reqwest::Method::GET,
            "x",
            "test::resend::default::nope"
        )
        .send()
        .await
        .unwrap()
        .status(),
        StatusCode::NOT_FOUND
    );
    let other = server
        .client
        .get(server.url("/v1/passthrough/x"))
        .header("x-pica-secret", LIVE_SECRET)
        .header("x-pica-connection-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // Paths cannot leave the platform (sent raw: an HTTP client would normalise the dots).
    for path in ["a/%2e%2e/%2e%2e/etc", "%2E%2E/secret"] {
        let head = raw_get(&server, &format!("/v1/passthrough/{path}"), &key).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
    }

    // Redirects come back as they are, never followed.
    let guarded = connect(&server, "guarded", json!({"api_key": "g"})).await;
    let blocked = call(
        &server,
        reqwest::Method::GET,
        "anything",
        guarded["key"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        blocked.status(),
        StatusCode::FORBIDDEN,
        "loopback is refused without allow_private_network"
    );

    let acme = connect(&server, "acme", json!({"api_key": "a"})).await;
    let acme_key = acme["key"].as_str().unwrap();
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_follow
        .get(server.url("/v1/passthrough/redirect"))
        .header("x-pica-secret", TEST_SECRET)
        .header("x-pica-connection-key", acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(
        redirect.headers()["location"],
        "http://203.0.113.9/elsewhere"
    );

    // A slow platform hits the timeout with a clear 504.
    let started = std::time::Instant::now();
    let slow = call(&server, reqwest::Method::GET, "slow", acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(6));

    // 32 MB down, 24 MB up, streamed.
    let mut down = call(&server, reqwest::Method::GET, "big", acme_key)
        .send()
        .await
        .unwrap();
    let mut total = 0;
    while let Some(chunk) = down.chunk().await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, 32 * 1024 * 1024);
    let up: Value = call(&server, reqwest::Method::PUT, "upload", acme_key)
        .body(vec![b'u'; 24 * 1024 * 1024])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["body_len"], 24 * 1024 * 1024);

    // An inactive connection is refused.
    let patch = |body: Value| {
        server
            .client
            .patch(server.url(&format!("/v1/vault/connections/{id}")))
            .header("x-pica-secret", TEST_SECRET)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    patch(json!({"active": false})).await.unwrap();
    assert_eq!(
        call(&server, reqwest::Method::GET, "x", &key)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    patch(json!({"active": true})).await.unwrap();

    // The platform's 401 fails the connection until its credential is replaced.
    let acme_id = acme["id"].as_str().unwrap();
    let rejected = call(&server, reqwest::Method::GET, "unauthorized", acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        rejected.status(),
        StatusCode::UNAUTHORIZED,
        "the platform's status comes back"
    );
    let state = |id: String| {
        let req = server
            .client
            .get(server.url(&format!("/v1/vault/connections/{id}")))
            .header("x-pica-secret", TEST_SECRET);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["state"].clone() }
    };
    assert_eq!(state(acme_id.to_owned()).await, "failed");
    let refused = call(&server, reqwest::Method::GET, "anything", acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let replaced = server
        .client
        .patch(server.url(&format!("/v1/vault/connections/{acme_id}")))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(json!({"credentials": {"api_key": "a2"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(state(acme_id.to_owned()).await, "unknown");
    let echoed: Value = call(&server, reqwest::Method::GET, "ok", acme_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-acme-key"], "a2");
    assert_eq!(state(acme_id.to_owned()).await, "operational");
}

#[tokio::test]
async fn master_key_rotation_keeps_every_secret_readable_without_downtime() {
    let base = platform().await;
    let platforms = format!(
        "[webhook_delivery]\nallow_private_network = true\npoll_interval_ms = 50\n{}",
        config(&base)
    );
    let mut server = TestServer::start(&platforms).await;
    let conn = connect(
        &server,
        "acme",
        json!({"api_key": "sealed-before-rotation"}),
    )
    .await;
    let key = conn["key"].as_str().unwrap().to_owned();
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    // A webhook endpoint made through the API: its signing secret is sealed too.
    let receiver = crate::webhooks::Receiver::start().await;
    let hook = server
        .post_json(
            "/api/v1/webhooks",
            &json!({"url": format!("{}/hook", receiver.base), "events": ["data_connection.deleted"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), StatusCode::CREATED);
    let hook: Value = hook.json().await.unwrap();
    let hook_secret = hook["data"]["attributes"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_key = server.master_key_path();
    let next_key = server.dir.join("next.key");
    std::fs::write(&next_key, "bmV4dC1tYXN0ZXIta2V5LWZvci10aGUtcm90YXRpb24=\n").unwrap();

    let injected = |server: &TestServer| {
        let req = call(server, reqwest::Method::GET, "check", &key);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()["headers"]["x-acme-key"].clone()
        }
    };
    assert_eq!(injected(&server).await, "sealed-before-rotation");

    // 1. The servers learn the next key as an additional key (still sealing with the old).
    server.set_config(&format!(
        "additional_master_key_files = [\"{}\"]\n{platforms}",
        next_key.display()
    ));
    server.restart().await;
    // 2. Rotate while that server keeps serving.
    let out = server.cli(&[
        "keys",
        "rotate",
        "--new-key-file",
        next_key.to_str().unwrap(),
    ]);
    assert!(out.contains("re-encrypted 3 secrets"), "{out}");
    assert_eq!(
        injected(&server).await,
        "sealed-before-rotation",
        "readers never stop"
    );

    // 3. The next key alone opens everything: credentials, tokens, issued passwords.
    server.set_config(&platforms);
    server.set_env("SWITCHBOARD_MASTER_KEY_FILE", next_key.to_str().unwrap());
    server.restart().await;
    assert_eq!(injected(&server).await, "sealed-before-rotation");
    let list = server.get("/api/v1/connections").send().await.unwrap();
    assert_eq!(
        list.status(),
        StatusCode::OK,
        "the API token still verifies"
    );
    let accepted = server
        .client
        .post(&server.gateway)
        .basic_auth(&user, Some(&password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_ne!(
        accepted.status(),
        StatusCode::FORBIDDEN,
        "the issued password still verifies"
    );
    let (id, _, _) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let deleted = server
        .delete(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    receiver
        .wait_for("a delivery signed after the rotation", |r| !r.is_empty())
        .await;
    assert!(receiver.received()[0].signed_with(&hook_secret));

    // 4. The old key alone is refused now.
    server.stop();
    server.set_env("SWITCHBOARD_MASTER_KEY_FILE", old_key.to_str().unwrap());
    let out = server.command().args(["token", "create"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("not the key this database was initialised with")
    );
}

#[tokio::test]
async fn a_secret_made_by_another_process_opens_the_passthrough_within_a_second() {
    let base = platform().await;
    let server = TestServer::start(&config(&base)).await;
    let live = server.cli(&["secret", "create", "--env", "live"]);
    let live = live.trim().to_owned();
    let created = server
        .client
        .post(server.url("/v1/vault/connections"))
        .header("x-pica-secret", &live)
        .header("content-type", "application/json")
        .body(json!({"platform": "acme", "identity": "me", "identityType": "user", "credentials": {"api_key": "l"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let key = created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The passthrough knows the secret from its snapshot, which the change feed brought up
    // to date (the CLI wrote to the store; on SQLite the feed polls for it).
    let start = std::time::Instant::now();
    loop {
        let status = server
            .client
            .get(server.url("/v1/passthrough/ping"))
            .header("x-pica-secret", &live)
            .header("x-pica-connection-key", &key)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the passthrough did not learn the secret within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_call_leaves_last_used_at_behind_and_a_restart_keeps_it() {
    let base = platform().await;
    let mut server = TestServer::start(&format!(
        "[gateway]\nusage_flush_interval_ms = 200\n{}",
        config(&base)
    ))
    .await;
    let used = connect(&server, "acme", json!({"api_key": "k1"})).await;
    let idle = connect(&server, "acme", json!({"api_key": "k2"})).await;
    let row = |id: &str| format!("/v1/vault/connections/{id}");
    let id = used["id"].as_str().unwrap();
    assert!(server.vault_json(&row(id)).await["lastUsedAt"].is_null());
    let before = chrono::Utc::now();
    for _ in 0..3 {
        let resp = call(
            &server,
            reqwest::Method::GET,
            "ping",
            used["key"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let start = std::time::Instant::now();
    let at = loop {
        if let Some(at) = server.vault_json(&row(id)).await["lastUsedAt"].as_str() {
            break at.to_owned();
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let at_time = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
    assert!(at_time >= before && at_time <= chrono::Utc::now(), "{at}");
    assert!(server.vault_json(&row(idle["id"].as_str().unwrap())).await["lastUsedAt"].is_null());
    server.restart().await;
    assert_eq!(server.vault_json(&row(id)).await["lastUsedAt"], at.as_str());
}

/// Sends `requests` one after another on a single keep-alive connection; their statuses
/// and bodies.
async fn on_one_connection(
    server: &TestServer,
    requests: Vec<axum::http::Request<String>>,
) -> Vec<(u16, Value)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut answers = Vec::new();
    for request in requests {
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, serde_json::from_slice(&body).unwrap()));
    }
    answers
}

/// The server places a connection by its first request (a passthrough call's on a worker
/// thread of its own); whichever comes first, every later request on it is still served.
#[tokio::test]
async fn one_connection_carries_passthrough_calls_and_control_plane_requests_in_any_order() {
    let base = platform().await;
    let server = TestServer::start(&config(&base)).await;
    let created = connect(&server, "resend", json!({"api_key": "re_secret_1"})).await;
    let key = created["key"].as_str().unwrap();
    let passthrough = || {
        axum::http::Request::get("/v1/passthrough/emails?n=1")
            .header("host", "x")
            .header("x-pica-secret", TEST_SECRET)
            .header("x-pica-connection-key", key)
            .body(String::new())
            .unwrap()
    };
    let list = || {
        axum::http::Request::get("/v1/vault/connections?platform=resend")
            .header("host", "x")
            .header("x-pica-secret", TEST_SECRET)
            .body(String::new())
            .unwrap()
    };
    let passthrough_first =
        on_one_connection(&server, vec![passthrough(), list(), passthrough(), list()]).await;
    let control_plane_first =
        on_one_connection(&server, vec![list(), passthrough(), list(), passthrough()]).await;
    for answers in [passthrough_first, control_plane_first] {
        for (status, body) in answers {
            assert_eq!(status, 200, "{body}");
            if let Some(rows) = body.get("rows") {
                assert_eq!(rows[0]["key"], key, "{body}");
            } else {
                assert_eq!(body["path"], "/v1/emails", "{body}");
                assert_eq!(body["headers"]["authorization"], "Bearer re_secret_1");
            }
        }
    }
    // A client that connects and leaves without a request costs nothing and breaks nothing.
    drop(
        tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
            .await
            .unwrap(),
    );
    let again = on_one_connection(&server, vec![passthrough()]).await;
    assert_eq!(again[0].0, 200);
}

/// A list's total is kept in memory per filter until an integration change is applied
/// here; every way the matching rows change moves it at once: a create, a patch of tags
/// or `active`, a delete, and a state a call observed.
#[tokio::test]
async fn list_totals_follow_every_change_at_once() {
    let platform = platform().await;
    let server = TestServer::start(&config(&platform)).await;
    let total = |query: &'static str| {
        let server = &server;
        async move {
            let page = crate::vault::list(server, TEST_SECRET, query).await;
            page["total"].as_u64().unwrap()
        }
    };
    let at = |method, id: &str| {
        let path = format!("/v1/vault/connections/{id}");
        crate::vault::vault(&server, method, &path, TEST_SECRET)
    };
    let patch = |id: String, body: Value| {
        let req = at(reqwest::Method::PATCH, &id)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move { assert_eq!(req.send().await.unwrap().status(), StatusCode::OK) }
    };
    let tagged = |credentials: Value| {
        let body = json!({"platform": "acme", "identity": "me", "identityType": "user",
                          "tags": ["counted"], "credentials": credentials});
        crate::vault::create(&server, TEST_SECRET, body)
    };

    let first = tagged(json!({"api_key": "a"})).await;
    tagged(json!({"api_key": "b"})).await;
    // Counted, then asked again: the same answer, now from memory.
    assert_eq!(total("tags=counted").await, 2);
    assert_eq!(total("tags=counted").await, 2);
    assert_eq!(total("tags=counted&state=failed").await, 0);

    let third = tagged(json!({"api_key": "c"})).await;
    assert_eq!(total("tags=counted").await, 3, "after a create");
    let third_id = third["id"].as_str().unwrap().to_owned();
    patch(third_id.clone(), json!({"tags": ["other"]})).await;
    assert_eq!(total("tags=counted").await, 2, "after a patch of tags");
    let first_id = first["id"].as_str().unwrap().to_owned();
    patch(first_id.clone(), json!({"active": false})).await;
    assert_eq!(total("tags=counted").await, 1, "after a deactivation");
    assert_eq!(total("tags=counted&active=false").await, 1);
    patch(first_id, json!({"active": true})).await;
    assert_eq!(total("tags=counted").await, 2);

    // A platform's 401 fails the connection; the next list counts it among the failed.
    let key = first["key"].as_str().unwrap();
    let refused = call(&server, reqwest::Method::GET, "unauthorized", key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(total("tags=counted&state=failed").await, 1, "after a call");

    let resp = at(reqwest::Method::DELETE, &third_id).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(total("tags=other").await, 0, "after a delete");
    assert_eq!(total("tags=counted").await, 2);
}

#[tokio::test]
async fn a_call_meets_what_every_route_meets() {
    let base = platform().await;
    let server = TestServer::start(&config(&base)).await;
    let conn = connect(&server, "resend", json!({"api_key": "k1"})).await;
    let key = conn["key"].as_str().unwrap().to_owned();

    // A request id, the client's or a new one, on the answer and as the platform saw it.
    let sent = call(&server, reqwest::Method::GET, "echo", &key)
        .header("x-request-id", "trace-77")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    assert_eq!(sent.headers()["x-request-id"], "trace-77");
    let seen: Value = sent.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"], "trace-77");
    let made = call(&server, reqwest::Method::GET, "echo", &key)
        .send()
        .await
        .unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::try_parse(&id).is_ok(), "{id}");
    let seen: Value = made.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"], id.as_str());

    // HEAD is a call as GET is, answered without the body; a method the route lacks, and
    // no platform path at all, answer in Pica's shape.
    let head = call(&server, reqwest::Method::HEAD, "echo", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.headers().contains_key("x-request-id"));
    assert!(head.bytes().await.unwrap().is_empty());
    for (method, path, status) in [
        (reqwest::Method::OPTIONS, "/v1/passthrough/echo", 405),
        (reqwest::Method::GET, "/v1/passthrough/", 404),
    ] {
        let resp = server
            .client
            .request(method.clone(), server.url(path))
            .header("x-pica-secret", TEST_SECRET)
            .header("x-pica-connection-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        assert!(resp.headers().contains_key("x-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], status, "{body}");
        assert!(body["message"].is_string(), "{body}");
    }

    // A refused secret is in the audit log, with the request's id and the path it tried.
    let refused = server
        .client
        .get(server.url("/v1/passthrough/echo?token=hidden"))
        .header("x-pica-secret", "sk_test_wrong")
        .header("x-pica-connection-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let request_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // The only refusal this server has seen.
    let refused = crate::audit::until_listed(&server, "outcome=refused", 1).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let event = &refused[0];
    assert_eq!(event["request_id"], request_id.as_str(), "{event}");
    assert_eq!(event["action"], "access.refused", "{event}");
    assert_eq!(event["actor_kind"], "anonymous", "{event}");
    assert_eq!(event["status"], 401, "{event}");
    assert_eq!(event["target"], "/v1/passthrough/echo", "{event}");
    assert_eq!(event["client_ip"], "127.0.0.1", "{event}");
}
