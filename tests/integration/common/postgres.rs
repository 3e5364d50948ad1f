//! A real PostgreSQL (Debian's `postgresql` package), one per test binary, started on a
//! free port in a temp dir; each test gets a database of its own. A watchdog stops the
//! server and removes its files when the test process exits.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/test.sh, which installs it")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// Runs a shell script as the `postgres` user when we are root (the server refuses root).
fn as_server_user(script: &str) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    };
    cmd.stdin(Stdio::null());
    cmd
}

impl Postgres {
    /// The server shared by the tests of this process.
    pub fn shared() -> &'static Postgres {
        static SERVER: OnceLock<Postgres> = OnceLock::new();
        SERVER.get_or_init(Postgres::start)
    }

    /// A server of its own, for a test that stops it.
    pub fn dedicated() -> Self {
        Self::start()
    }

    /// Stops the server at once (as a crash would); its files stay until the tests end.
    pub fn stop(&self) {
        let out = as_server_user(&format!(
            "{}/pg_ctl -D {}/data -m immediate stop 2>&1",
            self.bin.display(),
            self.dir.display()
        ))
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn start() -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "switchboard-pg-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let d = dir.display();
        let b = bin.display();
        let out = as_server_user(&format!(
            "{b}/initdb -D {d}/data -U switchboard --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 > {d}/initdb.log 2>&1"
        ))
        .status()
        .unwrap();
        assert!(
            out.success(),
            "initdb failed: {}",
            std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The watchdog ends the server, and removes its files, once this process is gone;
        // only then, so that a test's own `pg_ctl stop` never races the removal.
        let script = format!(
            "{b}/postgres -D {d}/data -p {port} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=400 \
               -c shared_buffers=64MB > {d}/server.log 2>&1 & pg=$!; \
             while [ -d /proc/{parent} ]; do sleep 0.5; done; \
             kill -INT $pg 2>/dev/null; wait $pg; rm -rf {d}",
            parent = std::process::id()
        );
        let mut watchdog = as_server_user(&script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Reaped whenever it ends; it outlives the tests on purpose.
        std::thread::spawn(move || watchdog.wait());
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok()
                && Command::new(bin.join("pg_isready"))
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-U",
                        "switchboard",
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, dir, bin }
    }

    /// A new, empty database; returns its URL.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "switchboard",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {name}"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        format!("postgres://switchboard@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL statement on a database.
    pub fn sql(&self, url: &str, statement: &str) {
        let status = Command::new(self.bin.join("psql"))
            .args(["-q", url, "-c", statement])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{statement} failed");
    }

    /// Every row of a database, as `pg_dump --data-only` writes it.
    pub fn dump(&self, url: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["--data-only", url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// Whether the suite runs against PostgreSQL (`SWITCHBOARD_TEST_STORE=postgres`).
pub fn selected() -> bool {
    std::env::var("SWITCHBOARD_TEST_STORE").is_ok_and(|v| v == "postgres")
}
