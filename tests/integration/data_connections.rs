//! The Better Stack connections API, over HTTP against the real server binary.

use crate::common::{TOKEN, TOPOLOGY, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn is_alnum(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric())
}

async fn create(server: &TestServer, body: Value) -> Value {
    let resp = server
        .post_json("/api/v1/connections", &body)
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

async fn error_of(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.expect("error bodies are JSON");
    assert!(body["errors"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn create_get_list_delete_follow_the_wire_contract() {
    let server = TestServer::start(TOPOLOGY).await;
    let created = create(
        &server,
        json!({
            "client_type": "clickhouse",
            "team_names": ["My Team"],
            "data_region": "germany",
            "ip_allowlist": ["192.168.1.0/24", "10.0.0.1"],
            "valid_until": "2099-12-02T00:00:00Z",
            "note": "Production connection for analytics"
        }),
    )
    .await;
    let data = &created["data"];
    let attrs = &data["attributes"];
    let id = attrs["id"].as_i64().expect("attributes.id is an integer");
    assert_eq!(
        data["id"],
        json!(id.to_string()),
        "data.id is the id as a string"
    );
    assert_eq!(data["type"], "connection");
    assert_eq!(attrs["client_type"], "clickhouse");
    assert_eq!(attrs["note"], "Production connection for analytics");
    assert_eq!(attrs["valid_until"], "2099-12-02T00:00:00.000Z");
    let created_at = attrs["created_at"].as_str().unwrap();
    assert_eq!(created_at.len(), "2025-11-07T13:20:55.652Z".len());
    assert!(created_at.ends_with('Z') && created_at.as_bytes()[19] == b'.');
    assert_eq!(attrs["host"], "eu-nbg-2-connect.example.com");
    assert_eq!(attrs["port"], 443);
    assert_eq!(
        attrs["data_region"], "eu-nbg-2",
        "the request name resolves to the region id"
    );
    assert_eq!(attrs["ip_allowlist"], json!(["192.168.1.0/24", "10.0.0.1"]));
    assert_eq!(attrs["team_ids"], json!([1234]));
    assert_eq!(attrs["team_names"], json!(["My Team"]));
    assert_eq!(
        attrs["created_by"],
        Value::Null,
        "the bootstrap token has no user"
    );
    let username = attrs["username"].as_str().unwrap();
    assert!(username.len() == 33 && username.starts_with('u') && is_alnum(username));
    let password = attrs["password"].as_str().unwrap();
    assert!(password.len() == 64 && is_alnum(password));
    assert_eq!(
        attrs["data_sources"],
        json!([{
            "source_name": "Application example",
            "source_id": 1325114,
            "team_name": "My Team",
            "data_sources": ["team_1234.app_logs", "team_1234.app_metrics"]
        }])
    );
    let sample = attrs["sample_query"].as_str().unwrap();
    assert!(
        sample.contains(&format!("-u {username}:{password}")),
        "{sample}"
    );
    assert!(
        sample.contains("https://eu-nbg-2-connect.example.com/?"),
        "{sample}"
    );
    assert!(sample.contains("FROM team_1234.app_logs"), "{sample}");

    // GET: same attributes, the password replaced in sample_query and absent otherwise.
    let got: Value = server
        .get(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got_attrs = &got["data"]["attributes"];
    assert!(got_attrs.get("password").is_none());
    let sample = got_attrs["sample_query"].as_str().unwrap();
    assert!(
        sample.contains(&format!("-u {username}:INSERT_PASSWORD")),
        "{sample}"
    );
    assert_eq!(got_attrs["data_sources"], attrs["data_sources"]);
    for key in [
        "id",
        "created_at",
        "username",
        "ip_allowlist",
        "team_ids",
        "note",
        "valid_until",
    ] {
        assert_eq!(got_attrs[key], attrs[key], "{key}");
    }

    // LIST: no password, sample_query or data_sources.
    let list: Value = server
        .get("/api/v1/connections")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["data"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0]["attributes"];
    for absent in ["password", "sample_query", "data_sources"] {
        assert!(item.get(absent).is_none(), "{absent} must not be listed");
    }
    assert_eq!(item["username"], username);
    assert_eq!(
        list["pagination"],
        json!({
            "first": format!("{}/api/v1/connections?page=1", server.base),
            "last": format!("{}/api/v1/connections?page=1", server.base),
            "prev": null,
            "next": null
        })
    );

    // DELETE: 204 with no body, then 404 with the documented message.
    let resp = server
        .delete(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty());
    for resp in [
        server
            .get(&format!("/api/v1/connections/{id}"))
            .send()
            .await
            .unwrap(),
        server
            .delete(&format!("/api/v1/connections/{id}"))
            .send()
            .await
            .unwrap(),
        server.get("/api/v1/connections/abc").send().await.unwrap(),
    ] {
        let body = error_of(resp, StatusCode::NOT_FOUND).await;
        assert_eq!(
            body,
            json!({"errors": "Resource with the provided ID was not found"})
        );
    }
}

#[tokio::test]
async fn defaults_teams_by_id_and_region_by_id() {
    let server = TestServer::start(TOPOLOGY).await;
    let all = create(&server, json!({"client_type": "clickhouse"})).await;
    let attrs = &all["data"]["attributes"];
    assert_eq!(attrs["data_region"], "eu-nbg-2", "the default region");
    assert_eq!(
        attrs["team_ids"],
        json!([1234, 5678]),
        "no team given: every team"
    );
    assert_eq!(attrs["team_names"], json!(["My Team", "Other Team"]));
    assert_eq!(attrs["ip_allowlist"], json!([]));
    assert_eq!(attrs["valid_until"], Value::Null);
    assert_eq!(attrs["note"], Value::Null);
    assert_eq!(attrs["data_sources"].as_array().unwrap().len(), 2);

    let by_id = create(
        &server,
        json!({"client_type": "clickhouse", "team_ids": [5678, 5678], "data_region": "local-1"}),
    )
    .await;
    let attrs = &by_id["data"]["attributes"];
    assert_eq!(attrs["team_ids"], json!([5678]));
    assert_eq!(attrs["team_names"], json!(["Other Team"]));
    assert_eq!(attrs["data_region"], "local-1");
    assert_eq!(attrs["host"], "127.0.0.1");
    assert_eq!(attrs["port"], 8124);
    assert!(
        attrs["sample_query"]
            .as_str()
            .unwrap()
            .contains("'http://127.0.0.1:8124/?")
    );
}

#[tokio::test]
async fn tokens_401_403_and_created_by() {
    let server = TestServer::start(TOPOLOGY).await;
    let url = server.url("/api/v1/connections");
    let client = &server.client;
    for req in [
        client.get(&url),
        client.get(&url).bearer_auth("not-a-real-token"),
        client
            .get(&url)
            .header("authorization", "Basic Zm9vOmJhcg=="),
        client
            .post(&url)
            .header("content-type", "application/json")
            .body("{}"),
        client.delete(format!("{url}/1")),
    ] {
        error_of(req.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    }

    let team_token = server.cli(&["token", "create", "--team", "1234"]);
    let team_token = team_token.trim();
    assert_eq!(team_token.len(), 32);
    for req in [
        client.get(&url).bearer_auth(team_token),
        client
            .post(&url)
            .bearer_auth(team_token)
            .header("content-type", "application/json")
            .body(r#"{"client_type":"clickhouse"}"#),
        client.get(format!("{url}/1")).bearer_auth(team_token),
        client.delete(format!("{url}/1")).bearer_auth(team_token),
    ] {
        error_of(req.send().await.unwrap(), StatusCode::FORBIDDEN).await;
    }

    let user_token = server.cli(&["token", "create", "--email", "my@email.com"]);
    let resp = client
        .post(&url)
        .bearer_auth(user_token.trim())
        .header("content-type", "application/json")
        .body(r#"{"client_type":"clickhouse"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    let by = &body["data"]["attributes"]["created_by"];
    assert_eq!(by["email"], "my@email.com");
    assert!(by["id"].is_i64());

    // An unknown team is refused by the CLI with a clear message.
    let out = server
        .command()
        .args(["token", "create", "--team", "999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--team 999"));
}

#[tokio::test]
async fn every_invalid_field_is_a_422_naming_it() {
    let server = TestServer::start(TOPOLOGY).await;
    let cases: Vec<(Value, Vec<&str>, &str)> = vec![
        (json!({}), vec!["client_type"], "client_type is required"),
        (
            json!({"client_type": "postgres"}),
            vec!["client_type"],
            "not supported",
        ),
        (
            json!({"client_type": 7}),
            vec!["client_type"],
            "must be a string",
        ),
        (
            json!({"client_type": "clickhouse", "team_names": ["My Team"], "team_ids": [1234]}),
            vec!["team_names", "team_ids"],
            "Cannot specify both team_names and team_ids",
        ),
        (
            json!({"client_type": "clickhouse", "team_names": ["Nope"]}),
            vec!["team_names"],
            "'Nope'",
        ),
        (
            json!({"client_type": "clickhouse", "team_ids": [42]}),
            vec!["team_ids"],
            "42",
        ),
        (
            json!({"client_type": "clickhouse", "team_ids": "1234"}),
            vec!["team_ids"],
            "array of integers",
        ),
        (
            json!({"client_type": "clickhouse", "team_names": [1]}),
            vec!["team_names"],
            "array of strings",
        ),
        (
            json!({"client_type": "clickhouse", "data_region": "mars"}),
            vec!["data_region"],
            "'mars'",
        ),
        (
            json!({"client_type": "clickhouse", "data_region": 5}),
            vec!["data_region"],
            "must be a string",
        ),
        (
            json!({"client_type": "clickhouse", "ip_allowlist": ["10.0.0.1/33"]}),
            vec!["ip_allowlist"],
            "10.0.0.1/33",
        ),
        (
            json!({"client_type": "clickhouse", "ip_allowlist": ["192.168.1.5/24"]}),
            vec!["ip_allowlist"],
            "192.168.1.0/24",
        ),
        (
            json!({"client_type": "clickhouse", "ip_allowlist": ["example.com"]}),
            vec!["ip_allowlist"],
            "example.com",
        ),
        (
            json!({"client_type": "clickhouse", "ip_allowlist": "10.0.0.1"}),
            vec!["ip_allowlist"],
            "array",
        ),
        (
            json!({"client_type": "clickhouse", "valid_until": "2025-13-45T00:00:00Z"}),
            vec!["valid_until"],
            "2025-13-45",
        ),
        (
            json!({"client_type": "clickhouse", "valid_until": 1735689600}),
            vec!["valid_until"],
            "must be a string",
        ),
        (
            json!({"client_type": "clickhouse", "valid_until": "2001-01-01T00:00:00Z"}),
            vec!["valid_until"],
            "future",
        ),
        (
            json!({"client_type": "clickhouse", "note": ["x"]}),
            vec!["note"],
            "must be a string",
        ),
        (
            json!({"client_type": "clickhouse", "note": "a\u{0}b"}),
            vec!["note"],
            "NUL",
        ),
        (
            json!({"client_type": "clickhouse", "note": "x".repeat(1001)}),
            vec!["note"],
            "1000",
        ),
    ];
    for (body, fields, needle) in cases {
        let resp = server
            .post_json("/api/v1/connections", &body)
            .send()
            .await
            .unwrap();
        let err = error_of(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(err["invalid_attributes"], json!(fields), "{body} -> {err}");
        assert!(
            err["errors"].as_str().unwrap().contains(needle),
            "{body} -> {err}"
        );
    }
    let list: Value = server
        .get("/api/v1/connections")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["data"],
        json!([]),
        "nothing was created by invalid requests"
    );
}

#[tokio::test]
async fn bad_input_is_never_a_5xx() {
    let server = TestServer::start(TOPOLOGY).await;
    let url = server.url("/api/v1/connections");
    let post = |content_type: &str, body: Vec<u8>| {
        server
            .client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
    };
    error_of(
        post("application/json", b"{\"client_type\": ".to_vec())
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    error_of(
        post("application/json", b"[1,2]".to_vec())
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    error_of(
        post("application/json", b"".to_vec()).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    error_of(
        post("application/json", vec![0xff, 0xfe, 0x00])
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    error_of(
        post("text/plain", br#"{"client_type":"clickhouse"}"#.to_vec())
            .send()
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    error_of(
        server
            .client
            .post(&url)
            .bearer_auth(TOKEN)
            .body(r#"{"client_type":"clickhouse"}"#)
            .send()
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    // A 10 MB body, announced with `Expect: 100-continue` as curl does: refused before
    // the body is sent.
    let head = raw_request(
        &server,
        &format!(
            "POST /api/v1/connections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            10 * 1024 * 1024
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        head.contains(r#"{"errors":"Request body is too large"}"#),
        "{head}"
    );
    // The same body streamed without a declared length is cut off as it is read.
    let chunks = futures_chunks(10 * 1024 * 1024);
    let resp = server
        .client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    match resp {
        Ok(resp) => {
            error_of(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        // The server may answer and close while the client is still sending; it must
        // still be serving afterwards.
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let resp = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Unicode and control characters are data, stored and returned exactly.
    let note = "Zürich 日本 🚀 \"quoted\" \\ back\tslash\r\n\u{1b}[31m\u{7f}<script>";
    let created = create(&server, json!({"client_type": "clickhouse", "note": note})).await;
    let id = created["data"]["attributes"]["id"].as_i64().unwrap();
    let got: Value = server
        .get(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"]["attributes"]["note"], note);

    // Unknown routes and wrong methods are 4xx too.
    let resp = server
        .client
        .get(server.url("/api/v1/nope"))
        .send()
        .await
        .unwrap();
    error_of(resp, StatusCode::NOT_FOUND).await;
    let resp = server
        .client
        .put(server.url("/api/v1/connections"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let resp = server
        .get("/api/v1/connections/99999999999999999999999")
        .send()
        .await
        .unwrap();
    error_of(resp, StatusCode::NOT_FOUND).await;
}

/// Writes `request` on a fresh connection and returns what the server answers first.
async fn raw_request(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("}") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the server answers without waiting for the body")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A JSON body of about `len` bytes as a stream of chunks (no Content-Length).
fn futures_chunks(len: usize) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let head = br#"{"client_type":"clickhouse","note":""#.to_vec();
    let chunk = vec![b'a'; 64 * 1024];
    let parts = std::iter::once(head)
        .chain(std::iter::repeat_n(chunk, len / (64 * 1024)))
        .chain(std::iter::once(br#""}"#.to_vec()))
        .map(Ok);
    futures_util::stream::iter(parts)
}

#[tokio::test]
async fn pagination_arithmetic() {
    let server = TestServer::start(TOPOLOGY).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        let c = create(&server, json!({"client_type": "clickhouse"})).await;
        ids.push(c["data"]["attributes"]["id"].as_i64().unwrap());
    }
    let page = |q: &str| {
        let req = server.get(&format!("/api/v1/connections?{q}"));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let link = |q: &str| json!(format!("{}/api/v1/connections?{q}", server.base));
    let listed_ids = |v: &Value| -> Vec<i64> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["attributes"]["id"].as_i64().unwrap())
            .collect()
    };

    // Walking next with per_page=3 visits every connection once, in id order.
    let (_, p1) = page("per_page=3").await;
    assert_eq!(listed_ids(&p1), ids[0..3]);
    assert_eq!(p1["pagination"]["first"], link("page=1&per_page=3"));
    assert_eq!(p1["pagination"]["last"], link("page=3&per_page=3"));
    assert_eq!(p1["pagination"]["prev"], Value::Null);
    assert_eq!(p1["pagination"]["next"], link("page=2&per_page=3"));
    let (_, p3) = page("page=3&per_page=3").await;
    assert_eq!(listed_ids(&p3), ids[6..7]);
    assert_eq!(p3["pagination"]["prev"], link("page=2&per_page=3"));
    assert_eq!(p3["pagination"]["next"], Value::Null);

    // per_page=1: one per page, 7 pages.
    let (_, one) = page("per_page=1&page=7").await;
    assert_eq!(listed_ids(&one), ids[6..7]);
    assert_eq!(one["pagination"]["last"], link("page=7&per_page=1"));

    // Past the end: empty, no next, prev points at the last page with data.
    let (status, past) = page("page=9&per_page=3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(past["data"], json!([]));
    assert_eq!(past["pagination"]["next"], Value::Null);
    assert_eq!(past["pagination"]["prev"], link("page=3&per_page=3"));
    let (status, far) = page("page=18446744073709551615").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(far["data"], json!([]));

    // 250 is the maximum; larger values are capped to it.
    for q in ["per_page=250", "per_page=251", "per_page=100000"] {
        let (status, body) = page(q).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed_ids(&body), ids);
        assert_eq!(
            body["pagination"]["first"],
            link("page=1&per_page=250"),
            "{q}"
        );
    }
    // Default is 50 and is left out of links.
    let (_, default) = page("").await;
    assert_eq!(default["pagination"]["last"], link("page=1"));

    for q in [
        "per_page=0",
        "per_page=abc",
        "per_page=-1",
        "page=0",
        "page=abc",
        "page=1.5",
    ] {
        let (status, body) = page(q).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        let field = q.split('=').next().unwrap();
        assert_eq!(body["invalid_attributes"], json!([field]), "{q}");
    }

    // After deletes (the first, two in the middle, the last) and new connections, every
    // page is still exactly its slice of the ids in order.
    for id in [ids[0], ids[2], ids[3], ids[6]] {
        let resp = server
            .delete(&format!("/api/v1/connections/{id}"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let mut left: Vec<i64> = [ids[1], ids[4], ids[5]].into();
    for _ in 0..4 {
        let c = create(&server, json!({"client_type": "clickhouse"})).await;
        left.push(c["data"]["attributes"]["id"].as_i64().unwrap());
    }
    for per_page in 1..=4 {
        for number in 1..=8 {
            let (_, body) = page(&format!("page={number}&per_page={per_page}")).await;
            let from = ((number - 1) * per_page).min(left.len());
            let to = (from + per_page).min(left.len());
            assert_eq!(
                listed_ids(&body),
                left[from..to],
                "page {number} of {per_page}"
            );
        }
    }
}

#[tokio::test]
async fn password_appears_only_in_the_create_response() {
    let server = TestServer::start(TOPOLOGY).await;
    let created = create(
        &server,
        json!({"client_type": "clickhouse", "note": "secret check"}),
    )
    .await;
    let password = created["data"]["attributes"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = created["data"]["attributes"]["id"].as_i64().unwrap();

    let get = server
        .get(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let list = server
        .get("/api/v1/connections")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!get.contains(&password) && !list.contains(&password));

    // Neither the password nor any token is in a log line or a database byte.
    let team_token = server
        .cli(&["token", "create", "--team", "1234"])
        .trim()
        .to_owned();
    let db = server.database_bytes();
    assert!(!db.is_empty());
    if server.database_url.is_some() {
        let dump = String::from_utf8_lossy(&db);
        assert!(
            dump.contains("COPY public.data_connections"),
            "the dump holds the rows"
        );
        assert!(dump.contains("secret check"), "the dump holds the rows");
    }
    let logs = server.logs();
    assert!(
        logs.contains("data connection created"),
        "logs are captured"
    );
    for secret in [password.as_str(), TOKEN, team_token.as_str()] {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(
            !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret is in the database file"
        );
    }
}

#[tokio::test]
async fn state_survives_restart_and_kill_9() {
    let mut server = TestServer::start(TOPOLOGY).await;
    let first = create(
        &server,
        json!({"client_type": "clickhouse", "note": "before restart"}),
    )
    .await;
    server.restart().await;
    let list: Value = server
        .get("/api/v1/connections")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["data"][0]["attributes"]["username"],
        first["data"]["attributes"]["username"]
    );

    // Acknowledged just before SIGKILL: still there after restart.
    let acked = create(
        &server,
        json!({"client_type": "clickhouse", "note": "acked"}),
    )
    .await;
    server.kill9();
    server.restart().await;
    let id = acked["data"]["attributes"]["id"].as_i64().unwrap();
    let resp = server
        .get(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["data"]["attributes"]["note"], "acked");
    // The bootstrap token is installed once; restarts with the variable set do not add more.
    assert_eq!(
        server
            .logs()
            .matches("installed SWITCHBOARD_BOOTSTRAP_TOKEN")
            .count(),
        1
    );
}

#[tokio::test]
async fn request_ids_and_health() {
    let server = TestServer::start(TOPOLOGY).await;
    let resp = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-request-id"));
    let resp = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-request-id"],
        "abc-123",
        "a client's id is kept"
    );
}
