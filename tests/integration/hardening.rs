//! Hostile input, answered as it should be: NULs and ids that cannot exist, names that
//! resolve inside, IPv6 forms that carry private IPv4 addresses, credentials echoed back by
//! a platform, paths encoded once, errors that do not grow with the input, refusals that
//! keep the client's connection, and ClickHouse's quota key. Then a property run over both
//! dialects' routes: never a 5xx, every error in the dialect's shape.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::clickhouse::{ClickHouse, TEAM_A_PASSWORD};
use crate::common::{TEST_SECRET, TOKEN, TOPOLOGY, TestServer};
use crate::passthrough::{call, connect, platform};

fn vault(server: &TestServer, path: &str) -> reqwest::RequestBuilder {
    server
        .client
        .get(server.url(path))
        .header("x-pica-secret", TEST_SECRET)
}

#[tokio::test]
async fn nuls_in_filters_are_400_naming_the_parameter_and_impossible_ids_404() {
    let base = platform().await;
    let server = TestServer::start(&crate::passthrough::config(&base)).await;
    connect(&server, "resend", json!({"api_key": "k1"})).await;
    for param in [
        "identity",
        "name",
        "platform",
        "tags",
        "key",
        "platformVersion",
    ] {
        let resp = vault(&server, &format!("/v1/vault/connections?{param}=a%00b"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{param}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["fields"], json!([param]), "{body}");
    }
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let resp = server
            .client
            .request(method.clone(), server.url("/v1/vault/connections/a%00b"))
            .header("x-pica-secret", TEST_SECRET)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 404);
    }
}

fn guarded_platforms(port: u16, hostname: &str) -> String {
    [
        ("loop-name", format!("http://localhost:{port}")),
        ("loop-dot", format!("http://localhost.:{port}")),
        ("loop-host", format!("http://{hostname}:{port}")),
        (
            "loop-translated",
            format!("http://[::ffff:0:127.0.0.1]:{port}"),
        ),
        ("loop-nat64", format!("http://[64:ff9b::7f00:1]:{port}")),
        ("loop-compatible", format!("http://[::127.0.0.1]:{port}")),
    ]
    .iter()
    .map(|(key, url)| format!("[[platforms]]\nplatform = \"{key}\"\nbase_url = \"{url}\"\n"))
    .collect()
}

#[tokio::test]
async fn names_and_addresses_that_lead_inside_are_403() {
    let base = platform().await;
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let hostname = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    // The machine's own name counts only where it resolves inside, as it does here.
    let inside = tokio::net::lookup_host((hostname.as_str(), 0))
        .await
        .map(|addrs| {
            addrs.map(|a| a.ip()).all(|ip| {
                ip.is_loopback() || matches!(ip, std::net::IpAddr::V4(v4) if v4.is_private())
            })
        })
        .unwrap_or(false);
    let server = TestServer::start(&format!(
        "{}\n{}",
        crate::passthrough::config(&base),
        guarded_platforms(port, &hostname)
    ))
    .await;
    for platform in [
        "loop-name",
        "loop-dot",
        "loop-host",
        "loop-translated",
        "loop-nat64",
        "loop-compatible",
    ] {
        if platform == "loop-host" && !inside {
            continue;
        }
        let c = connect(&server, platform, json!({"api_key": "k"})).await;
        let resp = call(
            &server,
            reqwest::Method::GET,
            "x",
            c["key"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{platform}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("private address"),
            "{platform}: {body}"
        );
    }
}

#[tokio::test]
async fn an_injected_credential_never_comes_back_and_paths_are_decoded_once() {
    let base = platform().await;
    let server = TestServer::start(&crate::passthrough::config(&base)).await;
    // quux takes its key as the `token` query parameter.
    let quux = connect(&server, "quux", json!({"api_key": "stored-query-key-0123"})).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow
        .get(server.url("/v1/passthrough/self-redirect?page=2"))
        .header("x-pica-secret", TEST_SECRET)
        .header("x-pica-connection-key", quux["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
    for name in ["location", "content-location"] {
        let value = resp.headers()[name].to_str().unwrap();
        assert!(!value.contains("stored-query-key"), "{name}: {value}");
        assert!(value.contains("page=2"), "the rest stays: {value}");
    }

    // A segment holding %xx reaches the platform as the caller encoded it.
    let resend = connect(&server, "resend", json!({"api_key": "k"})).await;
    let echoed: Value = call(
        &server,
        reqwest::Method::GET,
        "a%2541/b%252F/c%2Fd",
        resend["key"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(echoed["path"], "/v1/a%2541/b%252F/c%2Fd");
}

#[tokio::test]
async fn errors_do_not_grow_with_the_input_and_lists_have_limits() {
    let base = platform().await;
    let server = TestServer::start(&format!(
        "[api]\nmax_body_bytes = 8388608\n{}\n{}",
        crate::passthrough::config(&base),
        TOPOLOGY
    ))
    .await;
    let create = |body: Value| server.post_json("/api/v1/connections", &body).send();
    let huge = "x".repeat(1_000_000);
    for body in [
        json!({"client_type": huge}),
        json!({"client_type": "clickhouse", "data_region": huge}),
        json!({"client_type": "clickhouse", "valid_until": huge}),
        json!({"client_type": "clickhouse", "ip_allowlist": [huge]}),
        json!({"client_type": "clickhouse", "team_names": [huge]}),
    ] {
        let resp = create(body).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let text = resp.text().await.unwrap();
        assert!(text.len() < 2_000, "{} bytes: {}", text.len(), &text[..200]);
    }
    // 100,000 allowlist entries: refused at once, naming the limit, in a short answer.
    let many: Vec<String> = (0..100_000)
        .map(|i| format!("10.{}.{}.0/24", i / 256 % 256, i % 256))
        .collect();
    let started = std::time::Instant::now();
    let resp = create(json!({"client_type": "clickhouse", "ip_allowlist": many}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["invalid_attributes"], json!(["ip_allowlist"]));
    assert!(
        body["errors"].as_str().unwrap().contains("at most 1000"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Exactly at the limit is accepted.
    let thousand: Vec<String> = (0..1000)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let resp = create(json!({"client_type": "clickhouse", "ip_allowlist": thousand}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let teams: Vec<String> = (0..101).map(|i| format!("team {i}")).collect();
    let resp = create(json!({"client_type": "clickhouse", "team_names": teams}))
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["errors"]
            .as_str()
            .unwrap()
            .contains("at most 100 teams"),
        "{body}"
    );
    // 500 bad entries: a few messages and a count, not 500.
    let bad: Vec<String> = (0..500).map(|i| format!("not-an-address-{i}")).collect();
    let resp = create(json!({"client_type": "clickhouse", "ip_allowlist": bad}))
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("495 more problems"), "{text}");
    assert!(text.len() < 2_000);

    // 50,000 credential fields nobody asked for: a short answer naming a few.
    let fields: serde_json::Map<String, Value> = (0..50_000)
        .map(|i| (format!("field_{i}"), json!("v")))
        .collect();
    let resp = server
        .client
        .post(server.url("/v1/vault/connections"))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(
            json!({"platform": "resend", "identity": "i", "identityType": "user", "credentials": fields})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await.unwrap();
    assert!(text.len() < 4_000, "{} bytes", text.len());
    assert!(text.contains("more"), "{text}");
}

/// Writes `requests` one after another on one connection, each answer read in full before
/// the next goes; returns the status lines.
async fn on_one_connection(addr: &str, requests: &[Vec<u8>]) -> Vec<String> {
    let mut stream = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for request in requests {
        // The head first, then the body a moment later, as some clients send it.
        let split = request
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(request.len(), |p| p + 4);
        stream.write_all(&request[..split]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(&request[split..]).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("an answer")
                .expect("the connection stays up");
            assert!(n > 0, "the connection was closed after {statuses:?}");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let done = match length {
                    Some(n) => body.len() >= n,
                    None => body.ends_with("0\r\n\r\n"),
                };
                if done {
                    statuses.push(head.lines().next().unwrap().to_owned());
                    break;
                }
            }
        }
    }
    statuses
}

#[tokio::test]
async fn a_refusal_keeps_the_clients_connection_and_quota_keys_pass() {
    let ch = ClickHouse::start().await;
    std::fs::write(ch.path().join("team_a.secret"), TEAM_A_PASSWORD).unwrap();
    let config = format!(
        "[gateway]\nmax_requests_per_minute_per_connection = 2\n\n[[regions]]\nname = \"local\"\nid = \"local-1\"\nupstreams = [\"{}\"]\n\n[[teams]]\nid = 1\nname = \"A\"\nupstream_user = \"team_a\"\nupstream_password_file = \"{}/team_a.secret\"\n",
        ch.url,
        ch.path().display()
    );
    let server = TestServer::start(&config).await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let insert = |auth: &str, body: &str| {
        format!(
            "POST /?query=SELECT%201 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    use base64::Engine;
    let good = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let bad = base64::engine::general_purpose::STANDARD.encode(format!("{user}:wrong"));
    let ping = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    // A wrong password, then a rate-limit refusal (2 per minute), each with a body the
    // client sends after the head; the connection serves the next request every time.
    let statuses = on_one_connection(
        &server.gateway,
        &[
            insert(&bad, &"x".repeat(10_000)),
            ping.clone(),
            insert(&good, "FORMAT TSV"),
            insert(&good, "FORMAT TSV"),
            insert(&good, &"y".repeat(5_000)),
            ping,
        ],
    )
    .await;
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 403 Forbidden",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 429 Too Many Requests",
            "HTTP/1.1 200 OK",
        ]
    );
    // A body too large to drain: the refusal says the connection closes.
    let mut stream = tokio::net::TcpStream::connect(server.gateway.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            format!("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {bad}\r\nContent-Length: 100000000\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = stream.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains("connection: close"), "{head}");

    // quota_key, as clickhouse-connect sends it, passes.
    let server = TestServer::start(&config.replace("= 2\n", "= 0\n")).await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let resp = server
        .client
        .post(format!("{}/?quota_key=client-7", server.gateway))
        .basic_auth(&user, Some(&password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(resp.text().await.unwrap(), "1\n", "{status}");
}

/// One request of the property run.
#[derive(Debug, Clone)]
struct Probe {
    method: &'static str,
    path: String,
    query: String,
    body: Vec<u8>,
    content_type: &'static str,
    auth: u8,
}

fn probe() -> impl Strategy<Value = Probe> {
    let prefixes = prop::sample::select(vec![
        "/api/v1/connections",
        "/api/v1/connections/",
        "/api/v1/",
        "/v1/vault/connections",
        "/v1/vault/connections/",
        "/v1/available-connectors",
        "/v1/passthrough/",
        "/v1/",
        "/",
        "/openapi.json",
        "/healthz",
    ]);
    let tail = prop::collection::vec(
        prop_oneof![
            any::<u8>().prop_map(|b| format!("%{b:02X}")),
            prop::sample::select(vec![
                "..",
                ".",
                "%2e%2e",
                "/",
                "//",
                "a",
                "1",
                "-1",
                "99999999999999999999",
                "%00",
                "%ff",
                "+",
                "@",
                "%2F"
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z0-9_~-]{1,8}",
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat());
    let query = prop::collection::vec(
        (
            prop::sample::select(vec![
                "page",
                "per_page",
                "limit",
                "skip",
                "tags",
                "identity",
                "active",
                "identityType",
                "key",
                "x",
            ]),
            prop_oneof![
                "[a-z0-9,]{0,6}",
                any::<u8>().prop_map(|b| format!("%{b:02X}")),
                Just("-1".to_owned()),
                Just("%00".to_owned()),
                Just("99999999999999999999".to_owned()),
            ],
        ),
        0..4,
    )
    .prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    });
    let body = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"{\"client_type\": \"clickhouse\"}".to_vec()),
        Just(b"{\"platform\": \"resend\", \"identity\": \"i\", \"identityType\": \"user\", \"credentials\": {\"api_key\": 1}}".to_vec()),
        Just(b"[1, 2, 3]".to_vec()),
        Just(b"{\"tags\": [1], \"name\": 5, \"active\": \"x\"}".to_vec()),
        Just(b"{\"ip_allowlist\": [\"::ffff:1.2.3.4/200\"], \"valid_until\": \"0000-00-00\", \"team_ids\": [-1]}".to_vec()),
    ];
    (
        prop::sample::select(vec![
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
        ]),
        prefixes,
        tail,
        query,
        body,
        prop::sample::select(vec![
            "application/json",
            "text/plain",
            "application/vnd.x+json",
            "",
        ]),
        0u8..4,
    )
        .prop_map(
            |(method, prefix, tail, query, body, content_type, auth)| Probe {
                method,
                path: format!("{prefix}{tail}"),
                query,
                body,
                content_type,
                auth,
            },
        )
}

#[tokio::test]
async fn no_request_to_either_dialect_is_a_5xx_and_every_error_has_its_shape() {
    let base = platform().await;
    let server = TestServer::start(&format!(
        "{}\n{}",
        crate::passthrough::config(&base),
        TOPOLOGY
    ))
    .await;
    connect(&server, "resend", json!({"api_key": "k"})).await;
    // A fixed seed: the same 400 requests every run.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = probe();
    for _ in 0..400 {
        let probe = strategy.new_tree(&mut runner).unwrap().current();
        let mut url = server.url(&probe.path);
        if !probe.query.is_empty() {
            url = format!("{url}?{}", probe.query);
        }
        let Ok(parsed) = reqwest::Url::parse(&url) else {
            continue;
        };
        let mut request = server
            .client
            .request(probe.method.parse().unwrap(), parsed)
            .body(probe.body.clone());
        if !probe.content_type.is_empty() {
            request = request.header("content-type", probe.content_type);
        }
        request = match probe.auth {
            0 => request,
            1 => request.bearer_auth(TOKEN),
            2 => request.header("x-pica-secret", TEST_SECRET),
            _ => request
                .bearer_auth(TOKEN)
                .header("x-pica-secret", TEST_SECRET)
                .header("x-pica-connection-key", "nope"),
        };
        let resp = request.send().await.unwrap();
        let status = resp.status();
        let path = resp.url().path().to_owned();
        let text = resp.text().await.unwrap();
        assert!(!status.is_server_error(), "{probe:?} -> {status}: {text}");
        if status.is_client_error() && probe.method != "HEAD" {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{probe:?} -> {status}: not JSON: {text}"));
            if path == "/v1" || path.starts_with("/v1/") {
                assert!(
                    body["message"].is_string() && body["code"] == status.as_u16(),
                    "{probe:?} -> {status}: not Pica's shape: {text}"
                );
            } else {
                assert!(
                    body["errors"].is_string(),
                    "{probe:?} -> {status}: not Better Stack's shape: {text}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_upstream_refusing_the_gateways_own_user_is_an_operator_error_in_the_log() {
    let ch = ClickHouse::start().await;
    std::fs::write(ch.path().join("wrong.secret"), "not-team-a's-password").unwrap();
    let server = TestServer::start(&format!(
        "[[regions]]\nname = \"local\"\nid = \"local-1\"\nupstreams = [\"{}\"]\n\n[[teams]]\nid = 1\nname = \"A\"\nupstream_user = \"team_a\"\nupstream_password_file = \"{}/wrong.secret\"\n",
        ch.url,
        ch.path().display()
    ))
    .await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let resp = server
        .client
        .post(&server.gateway)
        .basic_auth(&user, Some(&password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = resp.text().await.unwrap();
    assert!(
        body.starts_with("Code: 193"),
        "ClickHouse's answer comes through: {body}"
    );
    let logs = server.logs();
    assert!(
        logs.contains("upstream rejected the gateway's upstream user"),
        "{logs}"
    );
    assert!(!logs.contains("not-team-a's-password"));
}
