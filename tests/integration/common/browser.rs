//! Headless Chromium driven through WebDriver (Debian's `chromium` and `chromium-driver`,
//! installed by scripts/test.sh): a chromedriver of its own per test, on a free port, and
//! a fresh profile in a temp dir. Screenshots go under cargo's temp dir for integration
//! tests (`target/tmp/screenshots/`), to be opened and looked at.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A phone-sized window (390 x 844 CSS pixels), so pages are seen as on a phone.
    pub async fn start() -> Self {
        Self::start_sized(390, 844).await
    }

    pub async fn start_sized(width: u32, height: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run scripts/test.sh, which installs it");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS connector needed.
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("cannot start a Chromium session");
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Saves what the window shows as `name`.png; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        // A blank or failed render is a few hundred bytes of one colour.
        assert!(png.len() > 4_000, "{name}: the screenshot looks empty");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits until the page's text contains `text` (10 s at most); returns the text.
    pub async fn wait_for_text(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            // Between two pages there may be no body yet: that is "not yet", not a failure.
            let body = match self.client.find(fantoccini::Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if body.contains(text) {
                return body;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "'{text}' never appeared; the page says: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page fits the window's width: nothing to scroll sideways.
    pub async fn assert_fits_width(&self) {
        let fits = self
            .client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            serde_json::Value::Bool(true),
            "the page scrolls sideways"
        );
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
