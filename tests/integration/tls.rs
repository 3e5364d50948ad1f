//! HTTPS on the gateway and the API: a certificate from PEM files, and a reload on SIGHUP
//! that keeps established connections.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::TestServer;
use crate::common::clickhouse::{ClickHouse, TEAM_A_PASSWORD, TEAM_A_ROWS};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
fn write_certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn https(addr: &str) -> String {
    addr.replace("http://", "https://")
}

/// One TLS connection that stays open across requests.
struct KeptConnection {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl KeptConnection {
    async fn open(addr: &str, ca: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).unwrap();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.unwrap();
            roots.add(cert).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr.split_once("://").map_or(addr, |(_, a)| a))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        Self {
            stream: connector.connect(name, tcp).await.unwrap(),
        }
    }

    /// Sends a query and returns the raw response (chunked, as ClickHouse answers).
    async fn query(&mut self, user: &str, password: &str, sql: &str) -> String {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let request = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        self.stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(
                n > 0,
                "the connection was closed: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

fn wait_for_log(server: &TestServer, needle: &str) {
    let start = Instant::now();
    while !server.logs().contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "log never said {needle:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn gateway_serves_https_and_reloads_its_certificate_on_sighup() {
    let ch = ClickHouse::start().await;
    let secrets = ch.path();
    std::fs::write(secrets.join("team_a.secret"), TEAM_A_PASSWORD).unwrap();
    let (cert, key) = write_certificate(secrets, "gateway");
    let config = format!(
        r#"
[gateway]
tls_cert_file = "{cert}"
tls_key_file = "{key}"

[[regions]]
name = "local"
id = "local-1"
host = "127.0.0.1"
port = 8443
tls = true
upstreams = ["{url}"]

[[teams]]
id = 1
name = "Team A"
upstream_user = "team_a"
upstream_password_file = "{dir}/team_a.secret"
"#,
        cert = cert.display(),
        key = key.display(),
        url = ch.url,
        dir = secrets.display()
    );
    let server = TestServer::start(&config).await;
    assert!(server.logs().contains("scheme=https"));
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let gateway = https(&server.gateway);
    let credentials = format!("{user}:{password}");
    let cert_arg = cert.display().to_string();

    let (ok, body) = curl(&[
        "--cacert",
        &cert_arg,
        "-u",
        &credentials,
        &gateway,
        "-d",
        "SELECT count() FROM team_a.events",
    ]);
    assert!(ok, "{body}");
    assert_eq!(body, format!("{TEAM_A_ROWS}\n"));
    // Plain HTTP on the TLS port gets nowhere, and an unknown CA is refused by the client.
    let (ok, _) = curl(&["-u", &credentials, &server.gateway, "-d", "SELECT 1"]);
    assert!(!ok, "plain HTTP is not served on the TLS port");
    let (ok, _) = curl(&["-u", &credentials, &gateway, "-d", "SELECT 1"]);
    assert!(
        !ok,
        "the self-signed certificate is not in the system store"
    );

    // A connection made before the reload keeps working after it.
    let mut kept = KeptConnection::open(&server.gateway, &cert).await;
    assert!(
        kept.query(&user, &password, "SELECT 1")
            .await
            .contains("\r\n\r\n2\r\n1\n\r\n0\r\n\r\n")
    );

    let (new_cert, new_key) = write_certificate(secrets, "next");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_log(&server, "TLS certificate reloaded");

    assert!(
        kept.query(&user, &password, "SELECT 2")
            .await
            .contains("\r\n\r\n2\r\n2\n\r\n0\r\n\r\n")
    );
    let new_cert_arg = new_cert.display().to_string();
    let (ok, body) = curl(&[
        "--cacert",
        &new_cert_arg,
        "-u",
        &credentials,
        &gateway,
        "-d",
        "SELECT 3",
    ]);
    assert!(ok, "{body}");
    assert_eq!(body, "3\n");

    // A broken pair on reload keeps the current certificate.
    std::fs::write(&key, "not a key").unwrap();
    Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    wait_for_log(&server, "TLS reload failed");
    let (ok, body) = curl(&[
        "--cacert",
        &new_cert_arg,
        "-u",
        &credentials,
        &gateway,
        "-d",
        "SELECT 4",
    ]);
    assert!(ok, "{body}");
}

#[tokio::test]
async fn api_serves_https_and_bad_tls_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_certificate(dir.path(), "api");
    let config = format!(
        "[api]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let server = TestServer::start(&config).await;
    let (ok, body) = curl(&[
        "--cacert",
        &cert.display().to_string(),
        &format!("{}/healthz", https(&server.base)),
    ]);
    assert!(ok, "{body}");
    assert!(body.contains("ok"));
    // Over TLS the console's session cookie is marked Secure.
    let (ok, answer) = curl(&[
        "--cacert",
        &cert.display().to_string(),
        "-i",
        "--data-urlencode",
        &format!("credential={}", crate::common::TOKEN),
        &format!("{}/console/sign-in", https(&server.base)),
    ]);
    assert!(ok, "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {answer}"));
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let (ok, stderr) = crate::common::run_once(
        &format!("[api]\ntls_cert_file = \"{}\"\n", cert.display()),
        &["serve"],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("tls_key_file"), "{stderr}");
    let (ok, stderr) = crate::common::run_once(
        &format!(
            "[gateway]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            key.display(),
            cert.display()
        ),
        &["serve"],
        &[("SWITCHBOARD_GATEWAY_LISTEN", "127.0.0.1:0")],
    );
    assert!(!ok);
    assert!(stderr.contains("TLS"), "{stderr}");
}

/// Terminates TLS with `cert` on a free port and pipes each connection to `upstream`: a
/// stand-in for a ClickHouse node served over HTTPS.
async fn tls_terminator(cert: &Path, key: &Path, upstream: u16) -> u16 {
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let ch = ClickHouse::start().await;
    let secrets = ch.path();
    std::fs::write(secrets.join("team_a.secret"), TEAM_A_PASSWORD).unwrap();
    let (cert, key) = write_certificate(secrets, "upstream");
    let port = tls_terminator(&cert, &key, ch.port).await;
    let config = |ca: &str| {
        format!(
            r#"
[gateway]
upstream_ca_file = "{ca}"

[[regions]]
name = "local"
id = "local-1"
host = "127.0.0.1"
port = 8124
upstreams = ["https://127.0.0.1:{port}"]

[[teams]]
id = 1
name = "Team A"
upstream_user = "team_a"
upstream_password_file = "{dir}/team_a.secret"
"#,
            dir = secrets.display()
        )
    };
    let server = TestServer::start(&config(&cert.display().to_string())).await;
    let (_, user, password) = server
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let resp = server
        .client
        .post(&server.gateway)
        .basic_auth(&user, Some(&password))
        .body("SELECT count() FROM team_a.events")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), format!("{TEAM_A_ROWS}\n"));

    // Trusting another CA, the same upstream is refused: the certificate is verified.
    let (other, _) = write_certificate(secrets, "other");
    let distrusting = TestServer::start(&config(&other.display().to_string())).await;
    let (_, user, password) = distrusting
        .create_connection(json!({"client_type": "clickhouse"}))
        .await;
    let resp = distrusting
        .client
        .post(&distrusting.gateway)
        .basic_auth(&user, Some(&password))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_server_error(), "{}", resp.status());
}
