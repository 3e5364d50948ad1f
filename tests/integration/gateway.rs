//! The ClickHouse gateway against a real ClickHouse server: issued credentials work with
//! ClickHouse HTTP clients, and every rule of the connection is enforced.

use std::time::{Duration, Instant};

use crate::common::TestServer;
use crate::common::clickhouse::{ClickHouse, TEAM_A_PASSWORD, TEAM_A_ROWS};
use reqwest::StatusCode;
use serde_json::json;

const AUTH_FAILED_SUFFIX: &str = ": Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)";

fn config(ch: &ClickHouse, trusted_proxies: &str) -> String {
    format!(
        r#"
[gateway]
trusted_proxies = [{trusted_proxies}]
upstream_connect_timeout_ms = 500
upstream_response_timeout_seconds = 20

[[regions]]
name = "local"
id = "local-1"
host = "127.0.0.1"
port = 8124
upstreams = ["{url}"]
{teams}"#,
        url = ch.url,
        teams = ch.teams_toml()
    )
}

async fn setup(trusted_proxies: &str) -> (ClickHouse, TestServer) {
    let ch = ClickHouse::start().await;
    let server = TestServer::start(&config(&ch, trusted_proxies)).await;
    (ch, server)
}

async fn assert_refused(resp: reqwest::Response, user: &str) {
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "516");
    let body = resp.text().await.unwrap();
    assert_eq!(
        body.trim_end(),
        format!("Code: 516. DB::Exception: {user}{AUTH_FAILED_SUFFIX}")
    );
}

#[tokio::test]
async fn each_auth_method_works_and_teams_are_isolated() {
    let (_ch, server) = setup("").await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let c = &server.client;
    let gw = &server.gateway;
    let count = "SELECT count() FROM team_a.events";
    let expected = format!("{TEAM_A_ROWS}\n");

    let by_headers = c
        .post(gw)
        .header("X-ClickHouse-User", &user)
        .header("X-ClickHouse-Key", &password)
        .body(count)
        .send()
        .await
        .unwrap();
    assert_eq!(by_headers.status(), StatusCode::OK);
    assert_eq!(by_headers.text().await.unwrap(), expected);

    let by_basic = c
        .post(gw)
        .basic_auth(&user, Some(&password))
        .body(count)
        .send()
        .await
        .unwrap();
    assert_eq!(by_basic.text().await.unwrap(), expected);

    let by_params = c
        .get(gw)
        .query(&[
            ("user", user.as_str()),
            ("password", password.as_str()),
            ("query", count),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(by_params.text().await.unwrap(), expected);

    // The query in the URL and the body together, and the database parameter.
    let split = c
        .post(format!(
            "{gw}/?database=team_a&query=SELECT%20count()%20FROM"
        ))
        .basic_auth(&user, Some(&password))
        .body(" events")
        .send()
        .await
        .unwrap();
    assert_eq!(split.text().await.unwrap(), expected);

    // Team A's connection cannot read team B's data, however it asks.
    for (url, sql) in [
        (gw.to_string(), "SELECT * FROM team_b.events"),
        (format!("{gw}/?database=team_b"), "SELECT * FROM events"),
    ] {
        let resp = c
            .post(url)
            .basic_auth(&user, Some(&password))
            .body(sql)
            .send()
            .await
            .unwrap();
        assert!(!resp.status().is_success());
        let body = resp.text().await.unwrap();
        assert!(body.contains("team_b"), "{body}");
        assert!(!body.contains("secret-b-"), "{body}");
    }

    // Two methods at once are an error, as in ClickHouse.
    let both = c
        .post(format!("{gw}/?user={user}"))
        .basic_auth(&user, Some(&password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), StatusCode::FORBIDDEN);
    assert_eq!(both.headers()["x-clickhouse-exception-code"], "516");
}

#[tokio::test]
async fn every_refusal_is_the_same_516() {
    let (_ch, server) = setup("").await;
    let c = &server.client;
    let gw = &server.gateway;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;

    let wrong = c
        .post(gw)
        .basic_auth(&user, Some("wrong"))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(wrong, &user).await;
    let unknown = c
        .post(gw)
        .basic_auth("nobody", Some(&password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(unknown, "nobody").await;
    let anonymous = c.post(gw).body("SELECT 1").send().await.unwrap();
    assert_refused(anonymous, "default").await;

    let (_, far_user, far_password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1], "ip_allowlist": ["10.0.0.0/8", "2001:db8::/32"]}))
        .await;
    let outside = c
        .post(gw)
        .basic_auth(&far_user, Some(&far_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(outside, &far_user).await;

    let (_, near_user, near_password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1], "ip_allowlist": ["10.0.0.0/8", "127.0.0.1"]}))
        .await;
    let inside = c
        .post(gw)
        .basic_auth(&near_user, Some(&near_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(inside.status(), StatusCode::OK);

    let soon = chrono_in(Duration::from_millis(1500));
    let (_, exp_user, exp_password) = server
        .create_connection(
            json!({"client_type": "clickhouse", "team_ids": [1], "valid_until": soon}),
        )
        .await;
    let before = c
        .post(gw)
        .basic_auth(&exp_user, Some(&exp_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let after = c
        .post(gw)
        .basic_auth(&exp_user, Some(&exp_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(after, &exp_user).await;

    // Deleted: refused by the very next request after DELETE returned.
    let (id, del_user, del_password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let ok = c
        .post(gw)
        .basic_auth(&del_user, Some(&del_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    server.delete_connection(id).await;
    let gone = c
        .post(gw)
        .basic_auth(&del_user, Some(&del_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(gone, &del_user).await;

    // Nothing about the refusals leaks the password into the logs.
    assert!(!server.logs().contains(&password));
}

/// An RFC 3339 timestamp `after` from now.
fn chrono_in(after: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + after;
    let secs = now.as_secs() as i64;
    let millis = now.subsec_millis();
    // Days since epoch to a civil date (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let (ch, trusting) = setup("\"127.0.0.1/32\"").await;
    let body =
        json!({"client_type": "clickhouse", "team_ids": [1], "ip_allowlist": ["203.0.113.7"]});
    let (_, user, password) = trusting.create_connection(body.clone()).await;
    let c = &trusting.client;
    let via_proxy = c
        .post(&trusting.gateway)
        .basic_auth(&user, Some(&password))
        .header("X-Forwarded-For", "198.51.100.1, 203.0.113.7")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(via_proxy.status(), StatusCode::OK);
    // The left-most entry is the client's own claim and is not believed.
    let spoofed = c
        .post(&trusting.gateway)
        .basic_auth(&user, Some(&password))
        .header("X-Forwarded-For", "203.0.113.7, 198.51.100.1")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(spoofed, &user).await;

    // A server that trusts no proxy ignores the header.
    let untrusting = TestServer::start(&config(&ch, "")).await;
    let (_, user, password) = untrusting.create_connection(body).await;
    let ignored = untrusting
        .client
        .post(&untrusting.gateway)
        .basic_auth(&user, Some(&password))
        .header("X-Forwarded-For", "203.0.113.7")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(ignored, &user).await;
}

#[tokio::test]
async fn results_are_byte_identical_to_direct_clickhouse() {
    let (ch, server) = setup("").await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let c = &server.client;
    let select = "SELECT id, name, value FROM team_a.events ORDER BY id";
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("{select} FORMAT TabSeparated"), vec![]),
        (format!("{select} FORMAT JSONEachRow"), vec![]),
        (format!("{select} FORMAT Native"), vec![]),
        (format!("{select} FORMAT Native"), vec![("compress", "1")]),
        (
            format!("{select} FORMAT JSONEachRow"),
            vec![("enable_http_compression", "1")],
        ),
    ];
    for (sql, params) in cases {
        let gzip = params.iter().any(|(k, _)| *k == "enable_http_compression");
        let direct = c
            .post(&ch.url)
            .query(&params)
            .basic_auth("team_a", Some(TEAM_A_PASSWORD))
            .header("Accept-Encoding", if gzip { "gzip" } else { "identity" })
            .body(sql.clone())
            .send()
            .await
            .unwrap();
        let via = c
            .post(&server.gateway)
            .query(&params)
            .basic_auth(&user, Some(&password))
            .header("Accept-Encoding", if gzip { "gzip" } else { "identity" })
            .body(sql.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), StatusCode::OK, "{sql}");
        assert_eq!(via.status(), StatusCode::OK, "{sql}");
        let headers: Vec<String> = via
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-clickhouse-"))
            .map(|k| k.to_string())
            .collect();
        assert!(!headers.is_empty(), "X-ClickHouse-* headers come back");
        if gzip {
            assert_eq!(via.headers()["content-encoding"], "gzip", "not re-encoded");
        }
        let direct_bytes = direct.bytes().await.unwrap();
        let via_bytes = via.bytes().await.unwrap();
        assert!(
            direct_bytes.len() > 10_000,
            "{sql} {params:?}: only {} bytes",
            direct_bytes.len()
        );
        assert!(
            direct_bytes == via_bytes,
            "{sql} {params:?}: {} vs {} bytes",
            direct_bytes.len(),
            via_bytes.len()
        );
    }
}

#[tokio::test]
async fn several_teams_choose_by_database_and_ping_needs_no_auth() {
    let (_ch, server) = setup("").await;
    let c = &server.client;
    let gw = &server.gateway;
    for path in ["/ping", "/"] {
        let resp = c.get(format!("{gw}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), "Ok.\n");
    }

    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let ask = |db: Option<&str>, sql: &'static str| {
        let url = match db {
            Some(db) => format!("{gw}/?database={db}"),
            None => gw.to_string(),
        };
        c.post(url)
            .basic_auth(&user, Some(&password))
            .body(sql)
            .send()
    };
    let a = ask(Some("team_a"), "SELECT count() FROM events")
        .await
        .unwrap();
    assert_eq!(a.text().await.unwrap(), format!("{TEAM_A_ROWS}\n"));
    let b = ask(Some("team_b"), "SELECT count() FROM events")
        .await
        .unwrap();
    assert_eq!(b.text().await.unwrap(), "7\n");
    let none = ask(None, "SELECT 1").await.unwrap();
    assert_eq!(none.status(), StatusCode::BAD_REQUEST);
    assert!(none.text().await.unwrap().contains("database"));
    let other = ask(Some("system"), "SELECT 1").await.unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    // Even scoped to both, a request runs as one team and cannot join across them.
    let cross = ask(Some("team_a"), "SELECT count() FROM team_b.events")
        .await
        .unwrap();
    assert!(!cross.status().is_success());
}

#[tokio::test]
async fn upstream_down_is_a_clickhouse_style_5xx_and_recovers() {
    let (mut ch, server) = setup("").await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let c = &server.client;
    let query = || {
        c.post(&server.gateway)
            .basic_auth(&user, Some(&password))
            .body("SELECT 1")
            .send()
    };
    assert_eq!(query().await.unwrap().status(), StatusCode::OK);

    ch.kill();
    let started = std::time::Instant::now();
    let down = query().await.unwrap();
    assert!(down.status().is_server_error(), "{}", down.status());
    assert!(down.headers().contains_key("x-clickhouse-exception-code"));
    assert!(down.text().await.unwrap().starts_with("Code: "));
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");

    ch.restart().await;
    let back = query().await.unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(back.text().await.unwrap(), "1\n");
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Event {
    id: u64,
    name: String,
    value: f64,
}

#[tokio::test]
async fn the_official_rust_client_runs_a_typed_select() {
    let (_ch, server) = setup("").await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let client = clickhouse::Client::default()
        .with_url(&server.gateway)
        .with_user(&user)
        .with_password(&password)
        .with_database("team_a")
        // Validation needs RowBinaryWithNamesAndTypes, which the old server lacks.
        .with_validation(false);
    let rows = client
        .query("SELECT ?fields FROM events WHERE id < 5 ORDER BY id")
        .fetch_all::<Event>()
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[3].id, 3);
    assert_eq!(rows[3].name, "a-3");
    assert!((rows[3].value - 1.0).abs() < 1e-9);

    let wrong = clickhouse::Client::default()
        .with_url(&server.gateway)
        .with_user(&user)
        .with_password("wrong")
        .with_validation(false);
    let err = wrong.query("SELECT 1").fetch_all::<u8>().await.unwrap_err();
    assert!(err.to_string().contains("516"), "{err}");
}

fn two_node_config(a: &ClickHouse, b: &ClickHouse, limits: &str) -> String {
    config(a, "")
        .replace(
            &format!("upstreams = [\"{}\"]", a.url),
            &format!("upstreams = [\"{}\", \"{}\"]", a.url, b.url),
        )
        .replace(
            "[gateway]\n",
            &format!("[gateway]\nhealth_check_interval_ms = 200\n{limits}\n"),
        )
}

#[tokio::test]
async fn fails_over_between_nodes_and_keeps_a_session_on_one() {
    let mut a = ClickHouse::start().await;
    let b = ClickHouse::start().await;
    let server = TestServer::start(&two_node_config(&a, &b, "")).await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let c = &server.client;
    let gw = &server.gateway;

    // A setting changed in a session is seen by that session's later queries: they all
    // reached the same node.
    let set = c
        .post(format!("{gw}/?session_id=s1"))
        .basic_auth(&user, Some(&password))
        .body("SET max_threads = 3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        set.status(),
        StatusCode::OK,
        "{}",
        set.text().await.unwrap()
    );
    for _ in 0..10 {
        let got = c
            .post(format!("{gw}/?session_id=s1"))
            .basic_auth(&user, Some(&password))
            .body("SELECT value FROM system.settings WHERE name = 'max_threads'")
            .send()
            .await
            .unwrap();
        assert_eq!(got.text().await.unwrap(), "3\n");
    }

    // One node down: every query still succeeds, at once, on the other.
    a.kill();
    for _ in 0..10 {
        let resp = c
            .post(gw)
            .basic_auth(&user, Some(&password))
            .body("SELECT count() FROM team_a.events")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), format!("{TEAM_A_ROWS}\n"));
    }
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "switchboard_gateway_upstream_healthy{{upstream=\"{}\"}} 0",
            a.url
        )),
        "{metrics}"
    );
    // Totals only: a series per connection would grow without bound.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_gateway_queries_total ")
                && l.split(' ').nth(1).and_then(|n| n.parse::<f64>().ok()) >= Some(10.0)),
        "{metrics}"
    );
    assert!(!metrics.contains("connection_id="), "{metrics}");
    assert!(
        metrics.contains("switchboard_gateway_query_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_gateway_response_bytes_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn per_connection_limits_refuse_in_clickhouse_form() {
    let ch = ClickHouse::start().await;
    let limited = config(&ch, "").replace(
        "[gateway]\n",
        "[gateway]\nmax_concurrent_queries_per_connection = 1\nmax_requests_per_minute_per_connection = 5\n",
    );
    let server = TestServer::start(&limited).await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let (_, other_user, other_password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let c = &server.client;
    let gw = &server.gateway;

    // A slow query holds the connection's only slot while it runs.
    let slow = c
        .post(gw)
        .basic_auth(&user, Some(&password))
        .body("SELECT sleep(2)")
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = c
        .post(gw)
        .basic_auth(&user, Some(&password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["x-clickhouse-exception-code"], "202");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("TOO_MANY_SIMULTANEOUS_QUERIES")
    );
    // Another connection is not affected.
    let other = c
        .post(gw)
        .basic_auth(&other_user, Some(&other_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    slow.bytes().await.unwrap();

    // 5 requests a minute, counted when they pass the rate check: the slow query and the
    // one refused for concurrency used 2, so 3 more pass and the rest are refused.
    let mut codes = Vec::new();
    for _ in 0..5 {
        let resp = c
            .post(gw)
            .basic_auth(&user, Some(&password))
            .body("SELECT 1")
            .send()
            .await
            .unwrap();
        let code = resp
            .headers()
            .get("x-clickhouse-exception-code")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        // A query holds its slot until its result is read to the end.
        resp.bytes().await.unwrap();
        codes.push((status, code));
    }
    let ok = (200, None);
    let limited = (429, Some("201".to_owned()));
    assert_eq!(
        codes,
        vec![ok.clone(), ok.clone(), ok, limited.clone(), limited]
    );
}

#[tokio::test]
async fn a_large_result_streams_with_bounded_memory() {
    let (_ch, server) = setup("").await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let baseline = server.rss_bytes();
    // About 1 GB: 128 Mi rows of one UInt64 in RowBinary.
    let rows: u64 = 128 * 1024 * 1024;
    let mut resp = server
        .client
        .post(&server.gateway)
        .basic_auth(&user, Some(&password))
        .body(format!(
            "SELECT number FROM system.numbers LIMIT {rows} FORMAT RowBinary"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut total = 0u64;
    let mut peak = baseline;
    let mut chunks = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len() as u64;
        chunks += 1;
        if chunks.is_multiple_of(256) {
            peak = peak.max(server.rss_bytes());
        }
    }
    assert_eq!(total, rows * 8);
    let growth = peak.saturating_sub(baseline);
    println!("streamed {total} bytes; gateway RSS {baseline} -> peak {peak} (+{growth})");
    assert!(
        growth < 64 * 1024 * 1024,
        "gateway RSS grew by {growth} bytes while streaming"
    );
}

#[tokio::test]
async fn an_ipv6_loopback_client_matches_an_ipv6_allowlist() {
    let ch = ClickHouse::start().await;
    let server = TestServer::start_with(
        &config(&ch, ""),
        &[("SWITCHBOARD_GATEWAY_LISTEN", "[::1]:0")],
        &[],
    )
    .await;
    assert!(
        server.gateway.starts_with("http://[::1]:"),
        "{}",
        server.gateway
    );
    let (_, v6_user, v6_password) = server
        .create_connection(
            json!({"client_type": "clickhouse", "team_ids": [1], "ip_allowlist": ["::1"]}),
        )
        .await;
    let (_, v4_user, v4_password) = server
        .create_connection(
            json!({"client_type": "clickhouse", "team_ids": [1], "ip_allowlist": ["127.0.0.1"]}),
        )
        .await;
    let c = &server.client;
    let ok = c
        .post(&server.gateway)
        .basic_auth(&v6_user, Some(&v6_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = c
        .post(&server.gateway)
        .basic_auth(&v4_user, Some(&v4_password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_refused(refused, &v4_user).await;
}

#[tokio::test]
async fn usage_is_counted_exactly_and_survives_a_restart() {
    let ch = ClickHouse::start().await;
    let config = format!("{}\n", config(&ch, ""))
        .replace("[gateway]\n", "[gateway]\nusage_flush_interval_ms = 200\n");
    let mut server = TestServer::start(&config).await;
    let (id, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let (other, _, _) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1]}))
        .await;
    let fresh = server.connection(id).await;
    assert_eq!(
        (
            fresh["query_count"].as_u64(),
            fresh["response_bytes"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(fresh["last_used_at"].is_null());

    // 25 queries whose answers are known to the byte.
    let mut bytes = 0;
    for i in 0..25 {
        let sql = format!("SELECT number FROM system.numbers LIMIT {i} FORMAT TabSeparated");
        let body = server
            .gateway_query(&user, &password, &sql)
            .await
            .bytes()
            .await
            .unwrap();
        bytes += body.len() as u64;
    }
    // A refused query is no use.
    let refused = server.gateway_query(&user, "wrong", "SELECT 1").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Exact once a batch has gone (every 200 ms here).
    let start = Instant::now();
    let counted = loop {
        let a = server.connection(id).await;
        if a["query_count"] == 25 && a["response_bytes"] == bytes {
            break a;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(counted["last_used_at"].as_str().is_some());
    // On the list too, which is served from memory: within the change feed's delay.
    let listed = loop {
        let list: serde_json::Value = server.get_json("/api/v1/connections").await;
        let listed = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["attributes"]["id"] == id)
            .unwrap()["attributes"]
            .clone();
        if listed["query_count"] == 25 {
            break listed;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed["response_bytes"], bytes);
    assert_eq!(listed["last_used_at"], counted["last_used_at"]);
    let untouched = server.connection(other).await;
    assert_eq!(untouched["query_count"], 0, "only the connection used");

    // Stopped gracefully right after more queries: the last batch is written on the way out.
    for _ in 0..3 {
        server
            .gateway_query(&user, &password, "SELECT 1")
            .await
            .bytes()
            .await
            .unwrap();
    }
    server.restart().await;
    let after = server.connection(id).await;
    assert_eq!(after["query_count"], 28, "{after} {}", server.logs());
    assert_eq!(
        after["response_bytes"],
        bytes + 3 * 2,
        "\"1\\n\" three times"
    );
    assert!(after["last_used_at"].as_str() >= counted["last_used_at"].as_str());
    drop(ch);
}
