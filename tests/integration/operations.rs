//! Start-up, configuration, keys and the OpenAPI document.

use crate::common::{TOKEN, TOPOLOGY, TestServer, run_once};
use serde_json::Value;

/// Every route the server serves, with the statuses its document must declare.
const ROUTES: &[(&str, &str, &[u16])] = &[
    (
        "get",
        "/api/v1/connections",
        &[200, 401, 403, 422, 500, 503],
    ),
    (
        "post",
        "/api/v1/connections",
        &[201, 400, 401, 403, 413, 415, 422, 500, 503],
    ),
    (
        "get",
        "/api/v1/connections/{id}",
        &[200, 401, 403, 404, 500, 503],
    ),
    (
        "delete",
        "/api/v1/connections/{id}",
        &[204, 401, 403, 404, 500, 503],
    ),
    (
        "get",
        "/api/v1/audit-events",
        &[200, 401, 403, 422, 500, 503],
    ),
    ("get", "/api/v1/webhooks", &[200, 401, 403, 500, 503]),
    (
        "post",
        "/api/v1/webhooks",
        &[201, 400, 401, 403, 413, 415, 422, 500, 503],
    ),
    (
        "delete",
        "/api/v1/webhooks/{id}",
        &[204, 401, 403, 404, 409, 500, 503],
    ),
    (
        "get",
        "/api/v1/webhook-deliveries",
        &[200, 401, 403, 422, 500, 503],
    ),
    (
        "get",
        "/api/v1/webhook-deliveries/{id}",
        &[200, 401, 403, 404, 500, 503],
    ),
    (
        "patch",
        "/api/v1/connections/{id}",
        &[200, 400, 401, 403, 404, 413, 415, 422, 500, 503],
    ),
    (
        "post",
        "/api/v1/connections/{id}/rotate-password",
        &[200, 400, 401, 403, 404, 413, 415, 422, 500, 503],
    ),
    ("get", "/v1/vault/connections", &[200, 400, 401, 500, 503]),
    (
        "post",
        "/v1/vault/connections",
        &[201, 400, 401, 413, 415, 500, 503],
    ),
    (
        "get",
        "/v1/vault/connections/{id}",
        &[200, 401, 404, 500, 503],
    ),
    (
        "patch",
        "/v1/vault/connections/{id}",
        &[200, 400, 401, 404, 409, 415, 500, 503],
    ),
    (
        "delete",
        "/v1/vault/connections/{id}",
        &[200, 401, 404, 500, 503],
    ),
    (
        "get",
        "/v1/available-connectors",
        &[200, 400, 401, 500, 503],
    ),
    (
        "post",
        "/v1/connect/sessions",
        &[201, 400, 401, 413, 415, 500, 503],
    ),
    (
        "get",
        "/v1/connect/sessions/{token}",
        &[200, 401, 404, 500, 503],
    ),
    (
        "get",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 503, 504],
    ),
    (
        "post",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 503, 504],
    ),
    (
        "put",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 503, 504],
    ),
    (
        "patch",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 503, 504],
    ),
    (
        "delete",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 503, 504],
    ),
    ("get", "/healthz", &[200]),
    ("get", "/readyz", &[200, 503]),
    ("get", "/openapi.json", &[200]),
    ("get", "/metrics", &[200]),
];

#[tokio::test]
async fn openapi_documents_every_route_and_every_documented_route_exists() {
    let server = TestServer::start(TOPOLOGY).await;
    let doc: Value = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();

    for (method, path, statuses) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is missing from the OpenAPI document"))[*method];
        assert!(
            op.is_object(),
            "{method} {path} is missing from the OpenAPI document"
        );
        for status in *statuses {
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {path} does not document {status}"
            );
        }
        if path.starts_with("/api/") || path.starts_with("/v1/") {
            assert!(
                op["security"].is_array(),
                "{method} {path} must declare its auth"
            );
        }
    }
    assert!(
        doc["paths"]["/api/v1/connections"]["get"]["parameters"]
            .to_string()
            .contains("per_page")
    );

    // The other way round: every documented operation is served (not the 404 fallback).
    let mut documented = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented += 1;
            assert!(
                ROUTES.iter().any(|(m, p, _)| m == method && p == path),
                "{method} {path} is documented but not listed in this test"
            );
            let url = server.url(&path.replace("{id}", "1").replace("{path}", "some/path"));
            let req = server
                .client
                .request(method.to_uppercase().parse().unwrap(), url)
                .bearer_auth(TOKEN);
            let resp = req.send().await.unwrap();
            let body = resp.text().await.unwrap();
            assert!(
                !body.contains("\"Not found\""),
                "{method} {path} is documented but not routed"
            );
        }
    }
    assert_eq!(documented, ROUTES.len());
}

#[test]
fn bad_configuration_is_refused_with_a_hint() {
    let cases = [
        ("[gateway]\nlisten = \"localhost\"\n", "gateway.listen"),
        ("typo_key = 1\n", "typo_key"),
        ("[database]\nurl = \"mysql://db\"\n", "sqlite://"),
        (
            "[[teams]]\nid = 1\nname = \"a\"\nupstream_user = \"u\"\nupstream_password_file = \"/nonexistent/secret\"\n",
            "/nonexistent/secret",
        ),
        (
            "[[regions]]\nname = \"a\"\nid = \"a\"\nhost = \"h\"\nport = 1\nupstreams = [\"not a url\"]\n",
            "upstream",
        ),
        (
            "[connect]\nallowed_return_origins = [\"app.example.com\"]\n",
            "connect.allowed_return_origins",
        ),
        (
            "[connect]\nsession_ttl_seconds = 0\n",
            "connect.session_ttl_seconds",
        ),
        (
            "[[platforms]]\nplatform = \"resend\"\nauthorize_url = \"https://x.example/auth\"\n",
            "authorize_url applies to",
        ),
        (
            "[[platforms]]\nplatform = \"p\"\nbase_url = \"https://p.example\"\nauth = \"oauth2\"\ntoken_url = \"https://p.example/t\"\nclient_id = \"c\"\nextra_authorize_params = { state = \"x\" }\n",
            "may not set state",
        ),
        (
            "[[platforms]]\nplatform = \"p\"\nbase_url = \"https://p.example\"\nauth = \"oauth2\"\ntoken_url = \"https://p.example/t\"\nclient_id = \"c\"\ntoken_auth = \"jwt\"\n",
            "client_secret_basic",
        ),
        (
            "[[platforms]]\nplatform = \"p\"\nbase_url = \"https://p.example\"\nauth = \"header\"\nheader_name = \"x api key\"\n",
            "is not an HTTP header name",
        ),
    ];
    for (config, hint) in cases {
        let (ok, stderr) = run_once(config, &["serve"], &[]);
        assert!(!ok, "{config} was accepted");
        assert!(stderr.contains(hint), "{config}: {stderr}");
    }
    let (ok, stderr) = run_once("", &["serve"], &[("SWITCHBOARD_BOOTSTRAP_TOKEN", "short")]);
    assert!(!ok);
    assert!(stderr.contains("at least 16"), "{stderr}");
    let (ok, stderr) = run_once("", &["serve"], &[("SWITCHBOARD_DATABASE_URL", "redis://x")]);
    assert!(!ok, "the environment is validated like the file");
    assert!(stderr.contains("database.url"), "{stderr}");
    let out = std::process::Command::new(crate::common::binary())
        .args(["--config", "/nonexistent/switchboard.toml", "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[tokio::test]
async fn environment_and_flags_override_the_file() {
    let first_link = |server: &TestServer| {
        let req = server.get("/api/v1/connections");
        async move {
            req.send().await.unwrap().json::<Value>().await.unwrap()["pagination"]["first"].clone()
        }
    };
    let config = format!("public_url = \"http://file.example\"\n{TOPOLOGY}");
    let server = TestServer::start(&config).await;
    assert_eq!(
        first_link(&server).await,
        "http://file.example/api/v1/connections?page=1"
    );

    let server = TestServer::start_with(
        &config,
        &[("SWITCHBOARD_PUBLIC_URL", "http://env.example")],
        &[],
    )
    .await;
    assert_eq!(
        first_link(&server).await,
        "http://env.example/api/v1/connections?page=1"
    );

    let server = TestServer::start_with(
        &config,
        &[("SWITCHBOARD_PUBLIC_URL", "http://env.example")],
        &["--public-url", "https://flag.example/base/"],
    )
    .await;
    assert_eq!(
        first_link(&server).await,
        "https://flag.example/base/api/v1/connections?page=1"
    );
}

#[tokio::test]
async fn a_different_master_key_is_refused() {
    // The embedded store generates its key; a shared one is always given one.
    let mut server = TestServer::start_embedded(TOPOLOGY).await;
    server.stop();
    let key_path = server.dir.join("data/master.key");
    assert!(
        key_path.exists(),
        "a fresh embedded install generates its key"
    );
    let original = std::fs::read(&key_path).unwrap();
    let other = server.dir.join("other.key");
    std::fs::write(&other, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=\n").unwrap();
    let out = server
        .command()
        .env("SWITCHBOARD_MASTER_KEY_FILE", &other)
        .args(["token", "create"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not the key this database was initialised with"),
        "{stderr}"
    );

    // Without the generated key file the server refuses rather than making a new one.
    std::fs::remove_file(&key_path).unwrap();
    let out = server.command().args(["token", "create"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master_key_file"));
    assert!(!key_path.exists());

    // With the original key configured explicitly it starts again.
    std::fs::write(&other, &original).unwrap();
    let out = server
        .command()
        .env("SWITCHBOARD_MASTER_KEY_FILE", &other)
        .args(["token", "create"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `head` (and no body, or not all of it) on a fresh connection; returns the status
/// line and the body of the answer.
async fn raw_exchange(server: &TestServer, head: &str) -> (String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if n == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with('}')) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = body.trim();
    // A chunked answer: the JSON is the one line that is JSON.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON body in {text:?}"));
    (
        head.lines().next().unwrap().to_owned(),
        serde_json::from_str(json).unwrap(),
    )
}

fn is_better_stack(body: &Value, status: u16) -> bool {
    body["errors"].is_string() && body.get("code").is_none() && status >= 400
}

fn is_pica(body: &Value, status: u16) -> bool {
    body["message"].is_string() && body["code"] == status
}

#[tokio::test]
async fn every_answer_under_a_dialect_is_in_its_shape() {
    let server = TestServer::start(&format!(
        "[api]\nrequest_timeout_seconds = 1\nmax_body_bytes = 2048\n{TOPOLOGY}"
    ))
    .await;
    let c = &server.client;
    let cases: Vec<(reqwest::RequestBuilder, u16, bool)> = vec![
        // Unknown routes.
        (c.get(server.url("/api/v1/nothing-here")), 404, false),
        (c.get(server.url("/v1/nothing-here")), 404, true),
        (c.get(server.url("/v1")), 404, true),
        // Methods a route does not have.
        (
            c.put(server.url("/api/v1/connections")).bearer_auth(TOKEN),
            405,
            false,
        ),
        (
            c.put(server.url("/v1/vault/connections"))
                .header("x-pica-secret", crate::common::TEST_SECRET),
            405,
            true,
        ),
        (c.delete(server.url("/v1/available-connectors")), 405, true),
        // Ids that cannot name anything, however they are spelled.
        (
            c.get(server.url("/api/v1/connections/%ff"))
                .bearer_auth(TOKEN),
            404,
            false,
        ),
        (
            c.get(server.url("/v1/vault/connections/%ff"))
                .header("x-pica-secret", crate::common::TEST_SECRET),
            404,
            true,
        ),
        (
            c.delete(server.url("/v1/vault/connections/not-a-uuid"))
                .header("x-pica-secret", crate::common::TEST_SECRET),
            404,
            true,
        ),
        // A passthrough path is the platform's, undecoded: this one names no connection.
        (
            c.get(server.url("/v1/passthrough/%ff"))
                .header("x-pica-secret", crate::common::TEST_SECRET)
                .header("x-pica-connection-key", "k"),
            404,
            true,
        ),
        // Bodies over the limit, declared.
        (
            c.post(server.url("/api/v1/connections"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(vec![b' '; 4096]),
            413,
            false,
        ),
        (
            c.post(server.url("/v1/vault/connections"))
                .header("x-pica-secret", crate::common::TEST_SECRET)
                .header("content-type", "application/json")
                .body(vec![b' '; 4096]),
            413,
            true,
        ),
    ];
    for (request, status, pica) in cases {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url());
        let resp = c.execute(request).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        if pica {
            assert!(is_pica(&body, status), "{what}: {body}");
        } else {
            assert!(is_better_stack(&body, status), "{what}: {body}");
        }
    }

    // A request that takes too long (its body never arrives) is a 503, in each shape.
    for (path, auth, pica) in [
        (
            "/api/v1/connections",
            format!("Authorization: Bearer {TOKEN}"),
            false,
        ),
        (
            "/v1/vault/connections",
            format!("x-pica-secret: {}", crate::common::TEST_SECRET),
            true,
        ),
    ] {
        let (status, body) = raw_exchange(
            &server,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            ),
        )
        .await;
        assert!(status.starts_with("HTTP/1.1 503"), "{path}: {status}");
        assert!(
            if pica {
                is_pica(&body, 503)
            } else {
                is_better_stack(&body, 503)
            },
            "{path}: {body}"
        );
    }
}
