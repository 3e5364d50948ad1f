//! Helpers shared by the benchmarks.
//! Each benchmark uses part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `--name VALUE` from the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until the server started as `child` reports where it listens in
/// `<data_dir>/listening.json`; returns its (api, gateway) URLs.
pub fn wait_for_listening(data_dir: &Path, child: &std::process::Child) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Listening {
        pid: u32,
        api: String,
        gateway: String,
    }
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read(data_dir.join("listening.json"))
            && let Ok(l) = serde_json::from_slice::<Listening>(&text)
            && l.pid == child.id()
        {
            return (l.api, l.gateway);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "did not start (see {})",
            data_dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bootstrap API token of every benchmark server.
pub const TOKEN: &str = "bench-bootstrap-token-0123456789";

/// A child process with its temp dir, killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    /// Kept until the process is gone.
    pub dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed bench shows what the process logged: its temp dir goes with it.
        if std::thread::panicking() {
            for name in ["stderr.log", "error.log"] {
                let path = self.dir.path().join(name);
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- the last lines of {} ---", path.display());
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The release binary, serving from a temp dir.
pub struct Switchboard {
    pub process: Process,
    /// `http://addr` of the API and of the gateway.
    pub api: String,
    pub gateway: String,
}

/// Starts the release binary in a new temp dir holding `files` (name, text; relative paths
/// in the config resolve there) and `config` as its config file, with `env` added.
pub fn start_switchboard(
    config: &str,
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Switchboard {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("switchboard.toml"), config).unwrap();
    let stderr = dir.path().join("stderr.log");
    // SWITCHBOARD_BENCH_BINARY: another build to measure (an earlier commit's, say).
    let binary = std::env::var_os("SWITCHBOARD_BENCH_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_switchboard").into());
    let child = std::process::Command::new(binary)
        .current_dir(dir.path())
        .args(["--config", "switchboard.toml", "serve"])
        .env("SWITCHBOARD_API_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_BOOTSTRAP_TOKEN", TOKEN)
        .env("SWITCHBOARD_LOG_LEVEL", "warn,switchboard::app=info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start switchboard");
    let (api, gateway) = wait_for_listening(&dir.path().join("switchboard-data"), &child);
    Switchboard {
        process: Process { child, dir },
        api,
        gateway,
    }
}

/// What one measurement saw.
pub struct Figures {
    pub name: String,
    pub requests: u64,
    pub elapsed: Duration,
    /// Nanoseconds per request.
    latency: hdrhistogram::Histogram<u64>,
    /// CPU time the process under test spent on the requests, where counted
    /// ([`with_cpu_of`]).
    pub cpu: Option<Duration>,
}

impl Figures {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p50_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.50) as f64 / 1e6
    }

    pub fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1e6
    }

    /// Microseconds of the measured process's CPU per request.
    pub fn cpu_us(&self) -> Option<f64> {
        self.cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64)
    }

    pub fn print(&self) {
        let cpu = self
            .cpu_us()
            .map_or(String::new(), |us| format!("   cpu {us:>6.1} us/req"));
        println!(
            "{:<34} {:>8} req {:>10.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms{cpu}",
            self.name,
            self.requests,
            self.rps(),
            self.p50_ms(),
            self.p99_ms(),
        );
    }
}

/// CPU time process `pid` has used so far, all its threads (`/proc`, nanoseconds).
pub fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process runs");
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// `measure`'s figures with the CPU time process `pid` spent meanwhile: a proxy's cost per
/// request, which a busy neighbour on a shared machine disturbs far less than latency.
pub async fn with_cpu_of(pid: u32, measure: impl std::future::Future<Output = Figures>) -> Figures {
    let before = cpu_time(pid);
    let mut figures = measure.await;
    figures.cpu = Some(cpu_time(pid).saturating_sub(before));
    figures
}

/// A target's best over the rounds: its most requests per second, its lowest p50 and CPU
/// per request.
pub struct Best {
    pub rps: f64,
    pub p50_ms: f64,
    pub cpu_us: f64,
}

impl Default for Best {
    fn default() -> Self {
        Self {
            rps: 0.0,
            p50_ms: f64::INFINITY,
            cpu_us: f64::INFINITY,
        }
    }
}

impl Best {
    pub fn add(&mut self, figures: &Figures) {
        self.rps = self.rps.max(figures.rps());
        self.p50_ms = self.p50_ms.min(figures.p50_ms());
        if let Some(cpu_us) = figures.cpu_us() {
            self.cpu_us = self.cpu_us.min(cpu_us);
        }
    }
}

/// Runs `total` requests (or until `deadline`) from `concurrency` workers; `make(n)` sends
/// the n-th and returns its status, which must be a success.
pub async fn drive<F, Fut>(
    name: &str,
    concurrency: usize,
    total: Option<u64>,
    deadline: Option<Duration>,
    make: F,
) -> Figures
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = reqwest::StatusCode> + Send,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (make, counter) = (make.clone(), counter.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| n >= t) || deadline.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                let t0 = Instant::now();
                let status = make(n).await;
                assert!(status.is_success(), "request failed: {status}");
                hist.record(t0.elapsed().as_nanos() as u64).unwrap();
            }
            hist
        }));
    }
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for w in workers {
        latency.add(w.await.unwrap()).unwrap();
    }
    Figures {
        name: name.to_owned(),
        requests: latency.len(),
        elapsed: start.elapsed(),
        latency,
        cpu: None,
    }
}

/// nginx as the reference proxy: one worker, keep-alive to `upstream_port`, buffering off;
/// `extra` is added to its `location` (say, a header it sets). Returns it and its URL.
pub fn nginx_proxy(upstream_port: u16, extra: &str) -> (Process, String) {
    start_nginx(
        &format!("upstream origin {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}"),
        &format!(
            "proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
            {extra}"
        ),
    )
}

/// nginx answering every request `200 {"ok":true}` itself: a platform that costs next to
/// nothing, so a proxy's own cost shows.
pub fn nginx_platform() -> (Process, String) {
    start_nginx(
        "",
        "default_type application/json; return 200 '{\"ok\":true}';",
    )
}

fn start_nginx(http_extra: &str, location: &str) -> (Process, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = dir.path().display();
    let config = format!(
        r#"
worker_processes 1;
daemon off;
# One process: killing it leaves no worker behind to take CPU from the next run.
master_process off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 100000;
        location / {{
            {location}
        }}
    }}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
    let child = Command::new("nginx")
        .args(["-c", &format!("{root}/nginx.conf"), "-p", &root.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (scripts/bench.sh installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (Process { child, dir }, url)
}

/// Sends `request` and reads its answer as JSON (a benchmark's set-up: any failure ends it).
/// The benchmarks' HTTP client, keeping up to `max_idle` connections per host. It drops a
/// connection idle for 25 s, before the server would (30 s, see the README): one the
/// server closes just as a request goes out on it fails that request.
pub fn http_client(max_idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(Duration::from_secs(25))
        .build()
        .unwrap()
}

pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("a JSON answer")
}
