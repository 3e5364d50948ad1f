//! Vault benchmark: lists with two filters over many stored integration connections, and
//! the passthrough's overhead against calling the (local) platform directly.
//!
//! Run: `cargo bench --bench vault` (options: `-- --connections N --seconds S`).
//! Client, server and the fake platform share this machine's cores.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{arg, wait_for};
use hdrhistogram::Histogram;

const SECRET: &str = "sk_test_bench0123456789abcdefghij";

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn fake_platform() -> String {
    let app = axum::Router::new().fallback(|| async { "{\"ok\":true}" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn start_server(platform: &str) -> (Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[platforms]]\nplatform = \"resend\"\nbase_url = \"{platform}\"\nallow_private_network = true\n"
    );
    std::fs::write(dir.path().join("switchboard.toml"), config).unwrap();
    let stderr = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .current_dir(dir.path())
        .args(["--config", "switchboard.toml", "serve"])
        .env("SWITCHBOARD_API_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_BOOTSTRAP_TEST_SECRET", SECRET)
        .env("SWITCHBOARD_LOG_LEVEL", "warn,switchboard::app=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let api = format!("http://{}", wait_for(&stderr, "api listening addr="));
    (Server { child, _dir: dir }, api)
}

/// Runs `make(i)` from `concurrency` workers for `duration`; returns (req/s, p50 ms, p99 ms).
async fn drive<F, Fut>(concurrency: usize, duration: Duration, make: F) -> (f64, f64, f64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (make, counter) = (make.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            while start.elapsed() < duration {
                let t0 = Instant::now();
                make(counter.fetch_add(1, Ordering::Relaxed)).await;
                hist.record(t0.elapsed().as_micros() as u64).unwrap();
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        hist.add(t.await.unwrap()).unwrap();
    }
    (
        hist.len() as f64 / start.elapsed().as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

fn main() {
    let connections = arg("--connections", 100_000);
    let seconds = Duration::from_secs(arg("--seconds", 10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let platform = fake_platform().await;
        let (_server, api) = start_server(&platform);
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        println!("vault benchmark: {connections} integration connections (embedded SQLite)\n");

        // Load: 16 workers take the next index until all are stored.
        let loaded = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..16 {
            let (c, a, next) = (client.clone(), api.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= connections {
                        return;
                    }
                    let body = format!(
                        r#"{{"platform":"resend","identity":"user-{}","identityType":"user","tags":["t{}","g{}"],"credentials":{{"api_key":"k{i}"}}}}"#,
                        i % 1000,
                        i % 10,
                        i % 3
                    );
                    let resp = c
                        .post(format!("{a}/v1/vault/connections"))
                        .header("x-pica-secret", SECRET)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 201);
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
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
                let (c, a) = (client.clone(), Arc::new(api.clone()));
                let (rps, p50, p99) = drive(concurrency, seconds, move |i| {
                    let (c, a) = (c.clone(), a.clone());
                    async move {
                        let resp = c
                            .get(format!("{a}/v1/vault/connections?{}", make_query(i)))
                            .header("x-pica-secret", SECRET)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(resp.status(), 200);
                        let _ = resp.bytes().await.unwrap();
                    }
                })
                .await;
                println!("list, {label}, {concurrency:>2} clients: {rps:>8.0} req/s   p50 {p50:>7.2} ms   p99 {p99:>7.2} ms");
            }
        }

        // Passthrough vs calling the platform directly.
        let key: serde_json::Value = client
            .get(format!("{api}/v1/vault/connections?limit=1"))
            .header("x-pica-secret", SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = Arc::new(key["rows"][0]["key"].as_str().unwrap().to_owned());
        println!();
        for concurrency in [1usize, 16] {
            let (c, p) = (client.clone(), Arc::new(platform.clone()));
            let direct = drive(concurrency, seconds, move |_| {
                let (c, p) = (c.clone(), p.clone());
                async move {
                    let resp = c.get(format!("{p}/v1/ping")).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let _ = resp.bytes().await.unwrap();
                }
            })
            .await;
            let (c, a, k) = (client.clone(), Arc::new(api.clone()), key.clone());
            let proxied = drive(concurrency, seconds, move |_| {
                let (c, a, k) = (c.clone(), a.clone(), k.clone());
                async move {
                    let resp = c
                        .get(format!("{a}/v1/passthrough/v1/ping"))
                        .header("x-pica-secret", SECRET)
                        .header("x-pica-connection-key", k.as_str())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let _ = resp.bytes().await.unwrap();
                }
            })
            .await;
            println!(
                "platform call, {concurrency:>2} clients: direct {:>7.0} req/s p50 {:.3} ms | passthrough {:>7.0} req/s p50 {:.3} ms | {:.2}x req/s, +{:.3} ms p50",
                direct.0, direct.1, proxied.0, proxied.1, proxied.0 / direct.0, proxied.1 - direct.1
            );
        }
    });
}
