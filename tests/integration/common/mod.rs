//! Test harness: runs the real `switchboard` binary in a temp dir on free ports and talks
//! HTTP to it, the way a client would.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-bootstrap-token-0123456789";
pub const TEST_SECRET: &str = "sk_test_bootstrap0123456789abcdef";
pub const LIVE_SECRET: &str = "sk_live_bootstrap0123456789abcdef";

/// A topology with two teams and two regions, used by most tests.
pub const TOPOLOGY: &str = r#"
[[regions]]
name = "germany"
id = "eu-nbg-2"
host = "eu-nbg-2-connect.example.com"
port = 443
tls = true
upstreams = ["http://127.0.0.1:9"]
default = true

[[regions]]
name = "local"
id = "local-1"
host = "127.0.0.1"
port = 8124
upstreams = ["http://127.0.0.1:9"]

[[teams]]
id = 1234
name = "My Team"

[[teams.sources]]
id = 1325114
name = "Application example"
tables = ["team_1234.app_logs", "team_1234.app_metrics"]

[[teams]]
id = 5678
name = "Other Team"

[[teams.sources]]
id = 2000001
name = "Billing"
tables = ["team_5678.billing"]
"#;

pub mod browser;
pub mod clickhouse;
pub mod postgres;

pub struct TestServer {
    child: Option<Child>,
    pub dir: PathBuf,
    pub base: String,
    /// `http://` address of the ClickHouse gateway listener.
    pub gateway: String,
    pub client: reqwest::Client,
    /// The configuration file's text; `None`: started without `--config`.
    config: Option<String>,
    extra_env: Vec<(String, String)>,
    extra_args: Vec<String>,
    /// The PostgreSQL database this server uses, when the suite runs on PostgreSQL.
    pub database_url: Option<String>,
    _tmp: Option<tempfile::TempDir>,
    run: u32,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

impl TestServer {
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, &[], &[]).await
    }

    /// With no configuration file at all (as a new user first runs it), the embedded store
    /// and `env` added; only the listen addresses (port 0) and the bootstrap secrets are
    /// set besides.
    pub async fn start_unconfigured(env: &[(&str, &str)]) -> Self {
        let mut server = Self::prepare("", env, &[], None);
        server.config = None;
        server.spawn().await;
        server
    }

    /// Always on the embedded SQLite store, for what only it does (generating its key).
    pub async fn start_embedded(config: &str) -> Self {
        Self::start_on(config, &[], &[], false).await
    }

    /// Starts with extra environment variables and global flags (before `serve`).
    pub async fn start_with(config: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_on(config, env, args, postgres::selected()).await
    }

    /// On a new database of the shared PostgreSQL server, whatever the suite's store.
    pub async fn start_postgres(
        config: &str,
        database_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let url = database_url.map_or_else(
            || postgres::Postgres::shared().create_database(),
            str::to_owned,
        );
        Self::start_on_url(config, env, &[], Some(url)).await
    }

    async fn start_on(
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        on_postgres: bool,
    ) -> Self {
        let url = on_postgres.then(|| postgres::Postgres::shared().create_database());
        Self::start_on_url(config, env, args, url).await
    }

    async fn start_on_url(
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        database_url: Option<String>,
    ) -> Self {
        let mut server = Self::prepare(config, env, args, database_url);
        server.spawn().await;
        server
    }

    fn prepare(
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        database_url: Option<String>,
    ) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        Self {
            child: None,
            dir,
            base: String::new(),
            gateway: String::new(),
            client: reqwest::Client::new(),
            config: Some(config.to_owned()),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            database_url,
            _tmp: Some(tmp),
            run: 0,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("switchboard.toml")
    }

    /// A command for the binary with this server's config and environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .env("SWITCHBOARD_API_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_GATEWAY_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_BOOTSTRAP_TOKEN", TOKEN)
            .env("SWITCHBOARD_BOOTSTRAP_TEST_SECRET", TEST_SECRET)
            .env("SWITCHBOARD_BOOTSTRAP_LIVE_SECRET", LIVE_SECRET)
            .env("SWITCHBOARD_LOG_LEVEL", "debug");
        if self.config.is_some() {
            cmd.arg("--config").arg(self.config_path());
        }
        if let Some(url) = &self.database_url {
            // Replicas share one key; the test's directory keeps it.
            let key = self.dir.join("shared-master.key");
            if !key.exists() {
                std::fs::write(&key, "c3dpdGNoYm9hcmQtdGVzdC1tYXN0ZXIta2V5LTMyYnk=\n").unwrap();
            }
            cmd.env("SWITCHBOARD_DATABASE_URL", url)
                .env("SWITCHBOARD_MASTER_KEY_FILE", key);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.args(&self.extra_args);
        cmd
    }

    /// Where the server keeps its data: `data` beside the config file, or the default.
    pub fn data_dir(&self) -> PathBuf {
        match self.config {
            Some(_) => self.dir.join("data"),
            None => self.dir.join("switchboard-data"),
        }
    }

    async fn spawn(&mut self) {
        if let Some(config) = &self.config {
            std::fs::write(self.config_path(), format!("data_dir = \"data\"\n{config}")).unwrap();
        }
        self.run += 1;
        let stdout =
            std::fs::File::create(self.dir.join(format!("stdout.{}.log", self.run))).unwrap();
        let stderr_path = self.dir.join(format!("stderr.{}.log", self.run));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = self
            .command()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn switchboard");
        self.child = Some(child);
        let listening =
            wait_for_listening(&self.data_dir(), self.child.as_mut().unwrap(), &stderr_path);
        self.base = listening.api;
        self.gateway = listening.gateway;
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let status = wait_timeout(&mut child, Duration::from_secs(15));
            assert!(
                status.is_some_and(|s| s.success()),
                "graceful stop failed: {status:?}"
            );
        }
    }

    /// Takes effect at the next (re)start.
    pub fn set_config(&mut self, config: &str) {
        self.config = Some(config.to_owned());
    }

    /// Takes effect at the next (re)start and for [`Self::command`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_owned(), value.to_owned()));
    }

    /// The file holding the master key this server was started with.
    pub fn master_key_path(&self) -> PathBuf {
        if self.database_url.is_some() {
            self.dir.join("shared-master.key")
        } else {
            self.data_dir().join("master.key")
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Everything the server wrote to stdout and stderr, across restarts.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                std::fs::File::open(&path)
                    .unwrap()
                    .read_to_string(&mut all)
                    .unwrap();
            }
        }
        all
    }

    /// Raw bytes of every database file (main file, WAL, shared memory), or on
    /// PostgreSQL every row as `pg_dump` writes it.
    pub fn database_bytes(&self) -> Vec<u8> {
        if let Some(url) = &self.database_url {
            return postgres::Postgres::shared().dump(url);
        }
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.data_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("switchboard.db")
            {
                all.extend(std::fs::read(&path).unwrap());
            }
        }
        all
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(TOKEN)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).bearer_auth(TOKEN)
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// Runs a CLI subcommand against this server's config; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run cli");
        assert!(
            out.status.success(),
            "cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl TestServer {
    /// GET with the bootstrap token; the body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    /// A data connection's attributes as `GET /api/v1/connections/{id}` shows them.
    pub async fn connection(&self, id: i64) -> serde_json::Value {
        self.get_json(&format!("/api/v1/connections/{id}")).await["data"]["attributes"].clone()
    }

    /// A vault (Pica dialect) request with the test environment's secret.
    pub fn vault(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-pica-secret", TEST_SECRET)
    }

    /// A vault GET's JSON answer.
    pub async fn vault_json(&self, path: &str) -> serde_json::Value {
        self.vault(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `sql` through the gateway as `user`; the answer, not yet read.
    pub async fn gateway_query(&self, user: &str, password: &str, sql: &str) -> reqwest::Response {
        self.client
            .post(&self.gateway)
            .basic_auth(user, Some(password))
            .body(sql.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// The gateway's verdict on these credentials where the upstream never answers
    /// (`TOPOLOGY`'s): credentials it accepts get 502 or 503, others 403.
    pub async fn gateway_verdict(&self, user: &str, password: &str) -> &'static str {
        let status = self
            .gateway_query(user, password, "SELECT 1")
            .await
            .status();
        match status.as_u16() {
            403 => "refused",
            502 | 503 => "accepted",
            other => panic!("unexpected gateway status {other}"),
        }
    }

    /// Creates a data connection; returns (id, username, password).
    pub async fn create_connection(&self, body: serde_json::Value) -> (i64, String, String) {
        let resp = self
            .post_json("/api/v1/connections", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
        let v: serde_json::Value = resp.json().await.unwrap();
        let a = &v["data"]["attributes"];
        (
            a["id"].as_i64().unwrap(),
            a["username"].as_str().unwrap().to_owned(),
            a["password"].as_str().unwrap().to_owned(),
        )
    }

    /// Deletes a data connection, which must exist.
    pub async fn delete_connection(&self, id: i64) {
        let resp = self
            .delete(&format!("/api/v1/connections/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// Where a server listens, as it reports it in `<data_dir>/listening.json`.
#[derive(serde::Deserialize)]
pub struct Listening {
    pub pid: u32,
    pub api: String,
    pub gateway: String,
}

/// Waits until the server started as `child` reports its bound addresses (a file left by
/// an earlier, killed run names another process and is ignored).
pub fn wait_for_listening(data_dir: &Path, child: &mut Child, stderr: &Path) -> Listening {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read(data_dir.join("listening.json"))
            && let Ok(listening) = serde_json::from_slice::<Listening>(&text)
            && listening.pid == child.id()
        {
            return listening;
        }
        let log = || std::fs::read_to_string(stderr).unwrap_or_default();
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "switchboard exited with {status} before listening:\n{}",
                log()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary to completion with the given config text; returns (success, stderr).
pub fn run_once(config: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("switchboard.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(binary());
    cmd.current_dir(tmp.path())
        .env("SWITCHBOARD_API_LISTEN", "127.0.0.1:0")
        .arg("--config")
        .arg(&path)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let stderr_path = tmp.path().join("stderr.log");
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    // A configuration that is wrongly accepted would serve forever: stop it and fail.
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (status.is_some_and(|s| s.success()), stderr)
}
