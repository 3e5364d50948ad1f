//! Scale benchmark: the gateway's credential snapshot holding 1,000 and then 1,000,000
//! issued connections. Reports, for each size, a lookup's cost (over 64 usernames, as a
//! busy gateway sees them, and over 4,096 spread through the snapshot), the memory the snapshot takes per connection (RSS growth while it is
//! built) and how long one change (an upsert, a removal) takes to apply.
//!
//! Run: `cargo bench --bench scale` (options: `-- --connections N --lookups L`).
//! In-process: it measures the snapshot itself; the feed that carries a change to it is
//! measured end to end by the API benchmark (a create returns once the snapshot has it).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::arg;
use switchboard::crypto::random_alphanumeric;
use switchboard::domain::allowlist::IpAllowlist;
use switchboard::domain::data_connection::{ClientType, DataConnection, PasswordHashes, TeamScope};
use switchboard::domain::time::Timestamp;
use switchboard::domain::usage::Usage;
use switchboard::gateway::directory::CredentialDirectory;

/// A connection as the API makes it (the snapshot holds it whole: the gateway reads its
/// credential, the control plane lists it).
fn connection(id: i64) -> (DataConnection, PasswordHashes) {
    let connection = DataConnection {
        id,
        client_type: ClientType::ClickHouse,
        note: Some(format!("connection {id}")),
        created_at: Timestamp::from_millis(1_700_000_000_000 + id),
        valid_until: None,
        region_id: "local-1".into(),
        host: "127.0.0.1".into(),
        port: 8124,
        // As the API issues them: `u` and random characters.
        username: format!("u{}", random_alphanumeric(15)),
        ip_allowlist: IpAllowlist::default(),
        teams: TeamScope::Teams(vec![1]),
        created_by: None,
        usage: Usage::default(),
    };
    let passwords = PasswordHashes {
        current: [7; 32],
        previous: None,
    };
    (connection, passwords)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

struct Figures {
    size: u64,
    /// Over 64 usernames (as many as the clients of the gateway benchmark): cache-warm.
    hot_lookup_ns: f64,
    /// Over 4,096 usernames spread through the snapshot: mostly cache misses at 1M.
    lookup_ns: f64,
    bytes_per_connection: f64,
    upsert_us: (f64, f64, f64),
    remove_us: (f64, f64, f64),
}

/// p50, p99 and the worst of `samples` (microseconds).
fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), *samples.last().unwrap())
}

fn measure(size: u64, lookups: u64) -> Figures {
    let before = rss_bytes();
    let directory = CredentialDirectory::default();
    let connections: Vec<(DataConnection, PasswordHashes)> =
        (1..=size as i64).map(connection).collect();
    // Probes chosen before the build, so the build's memory is all the snapshot's.
    let probes: Vec<String> = (0..4096)
        .map(|i| {
            connections[(i * 7919) % connections.len()]
                .0
                .username
                .clone()
        })
        .collect();
    directory.replace_all(connections);
    let bytes_per_connection = rss_bytes().saturating_sub(before) as f64 / size as f64;

    let timed = |probes: &[String]| {
        let start = Instant::now();
        for i in 0..lookups as usize {
            let found = directory.lookup(black_box(&probes[i % probes.len()]));
            assert!(found.is_some());
            black_box(found);
        }
        start.elapsed().as_nanos() as f64 / lookups as f64
    };
    let hot_lookup_ns = timed(&probes[..64]);
    let lookup_ns = timed(&probes);

    let (mut upserts, mut removes) = (Vec::new(), Vec::new());
    for i in 0..2000 {
        // A new connection, then its removal: the snapshot keeps its size.
        let id = size as i64 + 1 + i;
        let (next, passwords) = connection(id);
        let t = Instant::now();
        directory.upsert(next, passwords);
        upserts.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        directory.remove(id);
        removes.push(t.elapsed().as_secs_f64() * 1e6);
    }
    assert_eq!(directory.len() as u64, size);
    Figures {
        size,
        hot_lookup_ns,
        lookup_ns,
        bytes_per_connection,
        upsert_us: spread(upserts),
        remove_us: spread(removes),
    }
}

fn main() {
    let large = arg("--connections", 1_000_000);
    let lookups = arg("--lookups", 2_000_000);
    println!("scale benchmark: the gateway's credential snapshot, 1,000 vs {large} connections\n");
    let small = measure(1_000, lookups);
    let big = measure(large, lookups);
    for f in [&small, &big] {
        println!(
            "{:>9} connections: lookup {:>4.0} ns (64 hot) {:>4.0} ns (4,096 spread)   memory {:>6} B/connection   \
             upsert p50/p99/max {:.1}/{:.1}/{:.1} us   remove {:.1}/{:.1}/{:.1} us",
            f.size,
            f.hot_lookup_ns,
            f.lookup_ns,
            // RSS moves in pages and allocator arenas: meaningless for a small snapshot.
            if f.size >= 100_000 {
                format!("{:.0}", f.bytes_per_connection)
            } else {
                "-".into()
            },
            f.upsert_us.0,
            f.upsert_us.1,
            f.upsert_us.2,
            f.remove_us.0,
            f.remove_us.1,
            f.remove_us.2,
        );
    }
    println!(
        "\nratios, lookup at {large} / at 1,000: {:.2}x (64 hot), {:.2}x (4,096 spread)",
        big.hot_lookup_ns / small.hot_lookup_ns,
        big.lookup_ns / small.lookup_ns
    );
}
