//! Start-up, configuration, keys and the OpenAPI document.

use crate::common::{TOKEN, TOPOLOGY, TestServer, run_once};
use serde_json::Value;

/// Every route the server serves, with the statuses its document must declare.
const ROUTES: &[(&str, &str, &[u16])] = &[
    ("get", "/api/v1/connections", &[200, 401, 403, 422, 500]),
    (
        "post",
        "/api/v1/connections",
        &[201, 400, 401, 403, 413, 415, 422, 500],
    ),
    (
        "get",
        "/api/v1/connections/{id}",
        &[200, 401, 403, 404, 500],
    ),
    (
        "delete",
        "/api/v1/connections/{id}",
        &[204, 401, 403, 404, 500],
    ),
    ("get", "/v1/vault/connections", &[200, 400, 401, 500]),
    (
        "post",
        "/v1/vault/connections",
        &[201, 400, 401, 413, 415, 500],
    ),
    ("get", "/v1/vault/connections/{id}", &[200, 401, 404, 500]),
    (
        "patch",
        "/v1/vault/connections/{id}",
        &[200, 400, 401, 404, 409, 415, 500],
    ),
    (
        "delete",
        "/v1/vault/connections/{id}",
        &[200, 401, 404, 500],
    ),
    ("get", "/v1/available-connectors", &[200, 401, 500]),
    (
        "get",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 504],
    ),
    (
        "post",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 504],
    ),
    (
        "put",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 504],
    ),
    (
        "patch",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 504],
    ),
    (
        "delete",
        "/v1/passthrough/{path}",
        &[200, 400, 401, 403, 404, 502, 504],
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
