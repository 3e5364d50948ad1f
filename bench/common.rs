//! Helpers shared by the benchmarks.

use std::path::Path;
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

/// Waits for `marker` in a log file and returns the word that follows it.
pub fn wait_for(path: &Path, marker: &str) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(pos) = text.find(marker) {
            return text[pos + marker.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
