//! A real ClickHouse server (Debian's `clickhouse-server`) started for one test in a temp
//! dir, on a free port, with two teams whose read-only users can see only their own
//! database.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_PASSWORD: &str = "admin-password";
pub const TEAM_A_PASSWORD: &str = "team-a-password";
pub const TEAM_B_PASSWORD: &str = "team-b-password";
/// Rows seeded in `team_a.events` and `team_b.events`.
pub const TEAM_A_ROWS: u64 = 100_000;
pub const TEAM_B_ROWS: u64 = 7;

pub struct ClickHouse {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
    /// The `default` user's password (`None`: none, as a stock install has it).
    admin_password: Option<String>,
    /// Users and profiles beside `default`, as users.xml elements.
    users: String,
    profiles: String,
}

/// A user element for users.xml: its password, profile, and the databases it may see
/// (`None`: every database).
pub fn user_xml(name: &str, password: &str, profile: &str, databases: Option<&[&str]>) -> String {
    let allow = databases.map_or(String::new(), |dbs| {
        let dbs: String = dbs
            .iter()
            .map(|d| format!("<database>{d}</database>"))
            .collect();
        format!("<allow_databases>{dbs}</allow_databases>")
    });
    format!(
        r#"<{name}>
            <password>{password}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>{profile}</profile>
            <quota>default</quota>
            {allow}
        </{name}>"#
    )
}

fn server_binary() -> &'static str {
    for candidate in ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!("clickhouse-server is not installed: run scripts/test.sh, which installs it");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ClickHouse {
    /// Two teams' users with the `readonly` profile (read-only mode 2), each seeing only
    /// its own database; `default` with a password.
    pub async fn start() -> Self {
        let users = format!(
            "{}{}",
            user_xml("team_a", TEAM_A_PASSWORD, "readonly", Some(&["team_a"])),
            user_xml("team_b", TEAM_B_PASSWORD, "readonly", Some(&["team_b"]))
        );
        Self::start_with_users(&users, Some(ADMIN_PASSWORD)).await
    }

    /// With these users beside `default` (profiles: `default`; `readonly`, mode 2; and
    /// `readonly1`, mode 1), and `default`'s password.
    pub async fn start_with_users(users: &str, admin_password: Option<&str>) -> Self {
        // The port is chosen before ClickHouse binds it; on the rare collision, try again.
        let mut failed = None;
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                url: format!("http://127.0.0.1:{port}"),
                dir: tempfile::tempdir().unwrap(),
                client: reqwest::Client::new(),
                admin_password: admin_password.map(str::to_owned),
                users: users.to_owned(),
                profiles: "<readonly><readonly>2</readonly><max_memory_usage>4000000000</max_memory_usage></readonly>\
                           <readonly1><readonly>1</readonly></readonly1>"
                    .to_owned(),
            };
            server.write_config();
            if server.spawn().await {
                server.seed().await;
                return server;
            }
            failed = Some(server);
        }
        panic_with_log(&failed.unwrap())
    }

    fn write_config(&self) {
        let root = self.dir.path().display().to_string();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{root}/server.log</log><errorlog>{root}/error.log</errorlog></logger>
    <http_port>{port}</http_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>104857600</mark_cache_size>
    <uncompressed_cache_size>104857600</uncompressed_cache_size>
    <max_concurrent_queries>200</max_concurrent_queries>
</yandex>
"#,
            port = self.port
        );
        let users = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default><max_memory_usage>4000000000</max_memory_usage></default>
        {profiles}
    </profiles>
    <users>
        <default>
            <password>{admin}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        {users}
    </users>
    <quotas><default><keyed/><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#,
            profiles = self.profiles,
            admin = self.admin_password.as_deref().unwrap_or(""),
            users = self.users,
        );
        std::fs::write(self.dir.path().join("config.xml"), config).unwrap();
        std::fs::write(self.dir.path().join("users.xml"), users).unwrap();
    }

    /// Starts the process and waits for `/ping`; false if it exited (e.g. port taken).
    async fn spawn(&mut self) -> bool {
        let child = Command::new(server_binary())
            .arg(format!(
                "--config-file={}/config.xml",
                self.dir.path().display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(resp) = self.client.get(format!("{}/ping", self.url)).send().await
                && resp.status().is_success()
            {
                return true;
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn seed(&self) {
        for sql in [
            "CREATE DATABASE team_a".to_owned(),
            "CREATE DATABASE team_b".to_owned(),
            "CREATE TABLE team_a.events (id UInt64, name String, value Float64) ENGINE = MergeTree ORDER BY id".to_owned(),
            "CREATE TABLE team_b.events (id UInt64, name String, value Float64) ENGINE = MergeTree ORDER BY id".to_owned(),
            format!("INSERT INTO team_a.events SELECT number, concat('a-', toString(number)), number / 3 FROM system.numbers LIMIT {TEAM_A_ROWS}"),
            format!("INSERT INTO team_b.events SELECT number, concat('secret-b-', toString(number)), number FROM system.numbers LIMIT {TEAM_B_ROWS}"),
        ] {
            self.admin(&sql).await;
        }
    }

    /// Runs SQL as the admin user; panics on failure.
    pub async fn admin(&self, sql: &str) -> String {
        let resp = self
            .client
            .post(&self.url)
            .basic_auth("default", self.admin_password.as_deref())
            .body(sql.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {text}");
        text
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic_with_log(self);
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `[[teams]]` for the two seeded teams (ids 1 and 2, users `team_a` and `team_b`
    /// with their password files written beside the server, one source each).
    pub fn teams_toml(&self) -> String {
        let secrets = self.path();
        std::fs::write(
            secrets.join("team_a.secret"),
            format!("{TEAM_A_PASSWORD}\n"),
        )
        .unwrap();
        std::fs::write(secrets.join("team_b.secret"), TEAM_B_PASSWORD).unwrap();
        format!(
            r#"
[[teams]]
id = 1
name = "Team A"
upstream_user = "team_a"
upstream_password_file = "{dir}/team_a.secret"

[[teams.sources]]
id = 11
name = "A events"
tables = ["team_a.events"]

[[teams]]
id = 2
name = "Team B"
upstream_user = "team_b"
upstream_password_file = "{dir}/team_b.secret"

[[teams.sources]]
id = 21
name = "B events"
tables = ["team_b.events"]
"#,
            dir = secrets.display()
        )
    }
}

fn panic_with_log(server: &ClickHouse) -> ! {
    let log = std::fs::read_to_string(server.dir.path().join("error.log")).unwrap_or_default();
    let stderr = std::fs::read_to_string(server.dir.path().join("stderr.log")).unwrap_or_default();
    panic!("clickhouse-server did not start:\n{stderr}\n{log}");
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}
