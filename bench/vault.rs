//! Vault benchmark: lists with two filters over many stored integration connections, and
//! the passthrough's overhead against calling the (local) platform directly, beside nginx
//! proxying to the same platform. The platform is nginx answering `{"ok":true}` itself.
//!
//! Run: `cargo bench --bench vault` (options: `-- --connections N --seconds S --rounds R`).
//! Client, server and the fake platform share this machine's cores. Needs nginx
//! (scripts/bench.sh installs it).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Best, Switchboard, arg, drive, json_of, nginx_platform, nginx_proxy, start_switchboard,
    with_cpu_of,
};
use reqwest::StatusCode;

const SECRET: &str = "sk_test_bench0123456789abcdefghij";

fn start_server(platform: &str) -> Switchboard {
    let config = format!(
        "[[platforms]]\nplatform = \"resend\"\nbase_url = \"{platform}\"\nallow_private_network = true\n"
    );
    start_switchboard(
        &config,
        &[],
        &[("SWITCHBOARD_BOOTSTRAP_TEST_SECRET", SECRET)],
    )
}

/// Sends a request and reads the whole answer; the status must be `expected`.
async fn fetch(request: reqwest::RequestBuilder, expected: StatusCode) -> StatusCode {
    let resp = request.send().await.unwrap();
    let status = resp.status();
    assert_eq!(status, expected);
    let _ = resp.bytes().await.unwrap();
    status
}

fn main() {
    let connections = arg("--connections", 100_000);
    let seconds = Some(Duration::from_secs(arg("--seconds", 10)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (_platform, platform) = nginx_platform();
        let platform_port: u16 = platform.rsplit(':').next().unwrap().parse().unwrap();
        // The reference: nginx doing what the passthrough does (forward, set a credential).
        let (nginx_process, nginx) = nginx_proxy(
            platform_port,
            "proxy_set_header Authorization \"Bearer re_bench\";",
        );
        let server = start_server(&platform);
        let api = Arc::new(server.api.clone());
        let client = common::http_client(64);
        println!("vault benchmark: {connections} integration connections (embedded SQLite)\n");

        let (c, a) = (client.clone(), api.clone());
        let loaded = Instant::now();
        drive("load", 16, Some(connections), None, move |i| {
            let body = format!(
                r#"{{"platform":"resend","identity":"user-{}","identityType":"user","tags":["t{}","g{}"],"credentials":{{"api_key":"k{i}"}}}}"#,
                i % 1000,
                i % 10,
                i % 3
            );
            let request = c
                .post(format!("{a}/v1/vault/connections"))
                .header("x-pica-secret", SECRET)
                .header("content-type", "application/json")
                .body(body);
            fetch(request, StatusCode::CREATED)
        })
        .await;
        let took = loaded.elapsed().as_secs_f64();
        println!("stored {connections} connections in {took:.1} s ({:.0} creates/s)\n", connections as f64 / took);

        // Two filters, random pages of 20: platform and a tag matching a tenth of the rows
        // (random page <= 50), and platform and an identity matching a thousandth.
        type Query = fn(u64) -> String;
        let queries: [(&str, Query); 2] = [
            ("platform + tags    ", |i| format!("platform=resend&tags=t{}&limit=20&page={}", i % 10, i % 50 + 1)),
            ("platform + identity", |i| format!("platform=resend&identity=user-{}&limit=20&page={}", i % 1000, i % 5 + 1)),
        ];
        for (label, make_query) in queries {
            for concurrency in [1usize, 8] {
                let (c, a) = (client.clone(), api.clone());
                let list = drive(label, concurrency, None, seconds, move |i| {
                    let request = c
                        .get(format!("{a}/v1/vault/connections?{}", make_query(i)))
                        .header("x-pica-secret", SECRET);
                    fetch(request, StatusCode::OK)
                })
                .await;
                println!(
                    "list, {label}, {concurrency:>2} clients: {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
                    list.rps(),
                    list.p50_ms(),
                    list.p99_ms()
                );
            }
        }

        // Passthrough vs calling the platform directly.
        let key = json_of(
            client
                .get(format!("{api}/v1/vault/connections?limit=1"))
                .header("x-pica-secret", SECRET),
        )
        .await;
        let key = Arc::new(key["rows"][0]["key"].as_str().unwrap().to_owned());
        println!();
        // Interleaved rounds, the best of each target's (most req/s, lowest p50), so that
        // no target gains from going last or loses to a burst of noise.
        let rounds = arg("--rounds", 2);
        let (nginx_pid, server_pid) = (nginx_process.child.id(), server.process.child.id());
        // The passthrough's own connections, as a client making passthrough calls opens
        // them: the server places a connection by its first request (the control-plane
        // calls above came on connections of their own).
        let calls = common::http_client(64);
        let mut ratios = Vec::new();
        for concurrency in [1usize, 64] {
            let mut best = [Best::default(), Best::default(), Best::default()];
            for _ in 0..rounds {
                let (c, p) = (client.clone(), Arc::new(platform.clone()));
                let direct = drive("direct", concurrency, None, seconds, move |_| {
                    fetch(c.get(format!("{p}/v1/ping")), StatusCode::OK)
                })
                .await;
                let (c, n) = (client.clone(), Arc::new(nginx.clone()));
                let reference = with_cpu_of(
                    nginx_pid,
                    drive("nginx", concurrency, None, seconds, move |_| {
                        fetch(c.get(format!("{n}/v1/ping")), StatusCode::OK)
                    }),
                )
                .await;
                let (c, a, k) = (calls.clone(), api.clone(), key.clone());
                let proxied = with_cpu_of(
                    server_pid,
                    drive("passthrough", concurrency, None, seconds, move |_| {
                        let request = c
                            .get(format!("{a}/v1/passthrough/v1/ping"))
                            .header("x-pica-secret", SECRET)
                            .header("x-pica-connection-key", k.as_str());
                        fetch(request, StatusCode::OK)
                    }),
                )
                .await;
                for (best, figures) in best.iter_mut().zip([&direct, &reference, &proxied]) {
                    figures.print();
                    best.add(figures);
                }
            }
            ratios.push((concurrency, best));
        }
        println!("\nratios (passthrough vs calling the platform directly; nginx proxying the same for reference; best of {rounds} rounds)");
        for (concurrency, [direct, reference, proxied]) in ratios {
            println!(
                "  conc {concurrency:>2}: added p50 {:+.3} ms (nginx {:+.3} ms); req/s {:.2}x (nginx {:.2}x); passthrough/nginx req/s {:.2}x; CPU per call {:.1} us (nginx {:.1} us, {:.2}x)",
                proxied.p50_ms - direct.p50_ms,
                reference.p50_ms - direct.p50_ms,
                proxied.rps / direct.rps,
                reference.rps / direct.rps,
                proxied.rps / reference.rps,
                proxied.cpu_us,
                reference.cpu_us,
                proxied.cpu_us / reference.cpu_us,
            );
        }
    });
}
