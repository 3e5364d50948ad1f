//! Gateway benchmark: the same queries, in one run, against ClickHouse directly, through
//! Switchboard's gateway, and through nginx `proxy_pass` (the reference cost of a plain
//! proxy). Reports latency at 1 and 64 concurrent clients, requests per second, streaming
//! throughput of a ~1 GB result, the gateway's peak RSS, and the ratios.
//!
//! Run: `cargo bench --bench gateway` (options: `-- --seconds S --stream-mb M`).
//! Needs Debian's clickhouse-server and nginx (scripts/bench.sh installs them).

#[path = "../tests/integration/common/clickhouse.rs"]
mod clickhouse;
mod common;

use std::time::{Duration, Instant};

use clickhouse::{ClickHouse, TEAM_A_PASSWORD};
use common::{
    Figures, Switchboard, TOKEN, arg, drive, json_of, nginx_proxy, start_switchboard, with_cpu_of,
};

fn start_gateway(ch: &ClickHouse) -> Switchboard {
    let config = format!(
        r#"
[gateway]
max_concurrent_queries_per_connection = 0
max_requests_per_minute_per_connection = 0

[[regions]]
name = "local"
id = "local-1"
host = "127.0.0.1"
port = 8124
upstreams = ["{}"]

[[teams]]
id = 1
name = "Team A"
upstream_user = "team_a"
upstream_password_file = "team_a.secret"
"#,
        ch.url
    );
    start_switchboard(&config, &[("team_a.secret", TEAM_A_PASSWORD)], &[])
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    user: String,
    password: String,
}

/// `SELECT 1` against `target` from `concurrency` clients for `duration`.
async fn select_one(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> Figures {
    let (client, target) = (client.clone(), target.clone());
    drive(target.name, concurrency, None, Some(duration), move |_| {
        let request = client
            .post(&target.url)
            .basic_auth(&target.user, Some(&target.password))
            .body("SELECT 1");
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            assert!(!status.is_success() || &body[..] == b"1\n", "{body:?}");
            status
        }
    })
    .await
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// MB/s reading a RowBinary result of `megabytes`; samples `pid`'s RSS meanwhile.
async fn stream(
    client: &reqwest::Client,
    target: &Target,
    megabytes: u64,
    pid: Option<u32>,
) -> (f64, u64) {
    let rows = megabytes * 1024 * 1024 / 8;
    let start = Instant::now();
    let mut resp = client
        .post(&target.url)
        .basic_auth(&target.user, Some(&target.password))
        .body(format!(
            "SELECT number FROM system.numbers LIMIT {rows} FORMAT RowBinary"
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let mut total = 0u64;
    let mut peak = pid.map(rss_bytes).unwrap_or(0);
    let mut chunks = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len() as u64;
        chunks += 1;
        if chunks.is_multiple_of(512)
            && let Some(pid) = pid
        {
            peak = peak.max(rss_bytes(pid));
        }
    }
    assert_eq!(total, rows * 8);
    (total as f64 / 1e6 / start.elapsed().as_secs_f64(), peak)
}

fn main() {
    let seconds = Duration::from_secs(arg("--seconds", 5));
    let stream_mb = arg("--stream-mb", 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let ch = ClickHouse::start().await;
        let switchboard = start_gateway(&ch);
        let (api, gateway_url) = (switchboard.api.clone(), switchboard.gateway.clone());
        let (nginx, nginx_url) = nginx_proxy(ch.port, "");
        let client = common::http_client(128);
        let created = json_of(
            client
                .post(format!("{api}/api/v1/connections"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(r#"{"client_type":"clickhouse"}"#),
        )
        .await;
        let attrs = &created["data"]["attributes"];
        let team = |name, url: &str| Target {
            name,
            url: url.to_owned(),
            user: "team_a".into(),
            password: TEAM_A_PASSWORD.into(),
        };
        let targets = [
            team("direct", &ch.url),
            Target {
                name: "gateway",
                url: gateway_url,
                user: attrs["username"].as_str().unwrap().into(),
                password: attrs["password"].as_str().unwrap().into(),
            },
            team("nginx", &nginx_url),
        ];
        let gateway_pid = switchboard.process.child.id();
        // Each proxy's CPU time per request: its cost, which a busy neighbour on a shared
        // machine disturbs far less than its latency.
        let proxy_pid = |name: &str| match name {
            "gateway" => Some(gateway_pid),
            "nginx" => Some(nginx.child.id()),
            _ => None,
        };

        println!("gateway benchmark: {}s per measurement, {stream_mb} MB stream; client, proxies and ClickHouse share this machine\n", seconds.as_secs());
        println!("{:<8} {:>5} {:>10} {:>10} {:>10} {:>12}", "target", "conc", "req/s", "p50 ms", "p99 ms", "cpu us/req");
        let mut results = std::collections::HashMap::new();
        for concurrency in [1usize, 64] {
            for t in &targets {
                // Warm the connection pools first.
                select_one(&client, t, concurrency, Duration::from_millis(300)).await;
                let measured = select_one(&client, t, concurrency, seconds);
                let l = match proxy_pid(t.name) {
                    Some(pid) => with_cpu_of(pid, measured).await,
                    None => measured.await,
                };
                let cpu = l.cpu.map_or("-".to_owned(), |c| format!("{:.1}", c.as_secs_f64() * 1e6 / l.requests as f64));
                println!(
                    "{:<8} {:>5} {:>10.0} {:>10.3} {:>10.3} {:>12}   ({} requests)",
                    t.name, concurrency, l.rps(), l.p50_ms(), l.p99_ms(), cpu, l.requests
                );
                results.insert((t.name, concurrency), l);
            }
        }
        println!();
        // Two interleaved rounds, best of each, so no target benefits from going last.
        let mut throughput: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
        let mut gateway_peak = 0;
        for _round in 0..2 {
            for t in &targets {
                let pid = (t.name == "gateway").then_some(gateway_pid);
                let (mbps, peak) = stream(&client, t, stream_mb, pid).await;
                gateway_peak = gateway_peak.max(peak);
                let best = throughput.entry(t.name).or_default();
                *best = best.max(mbps);
            }
        }
        for t in &targets {
            println!("{:<8} stream {:>8.0} MB/s (best of 2)", t.name, throughput[t.name]);
        }

        let r = |name, c| &results[&(name, c)];
        println!("\nratios (gateway vs direct; nginx vs direct for reference)");
        let cpu_us = |name, c| {
            let f: &Figures = r(name, c);
            f.cpu.unwrap_or_default().as_secs_f64() * 1e6 / f.requests as f64
        };
        for c in [1usize, 64] {
            println!(
                "  conc {c:>2}: added p50 {:+.3} ms (nginx {:+.3} ms); req/s {:.2}x (nginx {:.2}x); CPU per request {:.1} us (nginx {:.1} us)",
                r("gateway", c).p50_ms() - r("direct", c).p50_ms(),
                r("nginx", c).p50_ms() - r("direct", c).p50_ms(),
                r("gateway", c).rps() / r("direct", c).rps(),
                r("nginx", c).rps() / r("direct", c).rps(),
                cpu_us("gateway", c),
                cpu_us("nginx", c),
            );
        }
        println!(
            "  streaming: {:.2}x (nginx {:.2}x)",
            throughput["gateway"] / throughput["direct"],
            throughput["nginx"] / throughput["direct"]
        );
        println!("  gateway peak RSS during the stream: {:.1} MB", gateway_peak as f64 / 1e6);
    });
}
