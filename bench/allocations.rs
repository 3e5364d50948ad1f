//! Heap allocations per passthrough call and per gateway query, counted.
//!
//! Run: `cargo bench --bench allocations` (options: `-- --calls N`, `-- --sites N`: where
//! the allocations of N passthrough calls come from, by call stack; `--gateway 1`: of the
//! gateway's queries; without `--sites`, `--gateway 1` or `--passthrough 1` makes only
//! those, as a steady load for a profiler such as callgrind).
//!
//! The server runs in this process under a counting allocator (around mimalloc, as the
//! binary uses), with nginx as the platform and as the gateway's upstream (it answers
//! every request alike, and the gateway never reads what it forwards, so it stands in for
//! ClickHouse). The client is a plain thread writing one
//! prepared request and reading the answer into a fixed buffer, so it allocates nothing
//! per call; what the process allocates besides the calls (background tasks, the client)
//! is measured the same way with the client calling the platform directly, and taken off.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{arg, json_of, nginx_platform};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations by size: bucket `i` counts sizes in `[2^i, 2^(i+1))` (the last, larger).
static BY_SIZE: [AtomicU64; 20] = [const { AtomicU64::new(0) }; 20];

/// While set, every allocation's call stack is kept in `STACKS` (for `--sites`).
static RECORDING: AtomicBool = AtomicBool::new(false);
static STACKS: Mutex<Vec<(usize, Backtrace)>> = Mutex::new(Vec::new());

thread_local! {
    /// Set while this thread records a stack: the recording's own allocations are not kept.
    static IN_RECORDING: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if RECORDING.load(Ordering::Relaxed) && !IN_RECORDING.get() {
        IN_RECORDING.set(true);
        let stack = Backtrace::force_capture();
        STACKS.lock().unwrap().push((size, stack));
        IN_RECORDING.set(false);
    }
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    let bucket = (usize::BITS - 1 - size.max(1).leading_zeros()) as usize;
    BY_SIZE[bucket.min(BY_SIZE.len() - 1)].fetch_add(1, Ordering::Relaxed);
}

fn by_size() -> [u64; 20] {
    std::array::from_fn(|i| BY_SIZE[i].load(Ordering::Relaxed))
}

/// mimalloc, counting every allocation and reallocation and the bytes asked for.
struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SECRET: &str = "sk_test_bench0123456789abcdefghij";

/// Reads one HTTP/1.1 answer (Content-Length or chunked) into `buffer`, allocating nothing;
/// its status.
fn read_answer(stream: &mut TcpStream, buffer: &mut [u8]) -> u16 {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..]).expect("read the answer");
        assert!(read > 0, "the server closed the connection");
        filled += read;
        let seen = &buffer[..filled];
        let Some(head_end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&seen[..head_end]).expect("ASCII head");
        let status = head[9..12].parse().expect("a status");
        let body = &seen[head_end + 4..];
        let length = head.split("\r\n").find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        let complete = match length {
            Some(length) => body.len() >= length,
            None => body.ends_with(b"0\r\n\r\n"),
        };
        if complete {
            return status;
        }
    }
}

/// What the process allocated while a client made calls.
struct Allocated {
    allocations: u64,
    bytes: u64,
    by_size: [u64; 20],
}

/// `calls` requests `request` on one keep-alive connection to `addr`; what the process
/// allocated meanwhile, and with `record_sites`, each allocation's call stack.
fn count_calls(addr: &str, request: &[u8], calls: u64, record_sites: bool) -> Allocated {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut call = |stream: &mut TcpStream| {
        stream.write_all(request).unwrap();
        let status = read_answer(stream, &mut buffer);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&buffer[..200]));
    };
    // Warm: the platform connection open, every lazily built thing built.
    for _ in 0..1000 {
        call(&mut stream);
    }
    let (allocations, bytes, sizes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
        by_size(),
    );
    RECORDING.store(record_sites, Ordering::Relaxed);
    for _ in 0..calls {
        call(&mut stream);
    }
    RECORDING.store(false, Ordering::Relaxed);
    let now = by_size();
    Allocated {
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations,
        bytes: BYTES.load(Ordering::Relaxed) - bytes,
        by_size: std::array::from_fn(|i| now[i] - sizes[i]),
    }
}

/// Drops generic arguments (`<...>`) from a function name: they make one name a page long.
fn without_generics(name: &str) -> String {
    let mut depth = 0;
    let mut short = String::new();
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => short.push(c),
            _ => {}
        }
    }
    short
}

/// One frame of a recorded stack.
#[derive(PartialEq, Eq, Hash)]
struct Frame {
    function: String,
    /// `file:line:column`, from the crate's folder on (`tower-0.5.3/src/...`,
    /// `./src/...` for this repository's); empty when unknown.
    location: String,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.function, self.location)
    }
}

impl Frame {
    /// The crate the frame is in (`switchboard` for this repository's), from its folder
    /// (`name-1.2.3`); empty when unknown.
    fn crate_name(&self) -> &str {
        if self.location.starts_with("./") {
            return "switchboard";
        }
        let folder = self.location.split('/').next().unwrap_or("");
        match folder.rfind('-') {
            Some(at) if folder[at + 1..].starts_with(|c: char| c.is_ascii_digit()) => &folder[..at],
            _ => folder,
        }
    }
}

/// The frames of `stack` outside the standard library (the allocator, the recording).
fn frames(stack: &Backtrace) -> Vec<Frame> {
    let text = stack.to_string();
    let mut frames: Vec<Frame> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(location) = line.strip_prefix("at ") {
            if let Some(frame) = frames.last_mut() {
                frame.location = location.to_owned();
            }
        } else if let Some((index, name)) = line.split_once(": ")
            && index.parse::<u32>().is_ok()
        {
            let name = match name.rfind("::h") {
                Some(at) if name.len() - at == 19 => &name[..at],
                _ => name,
            };
            frames.push(Frame {
                function: without_generics(name),
                location: String::new(),
            });
        }
    }
    frames.retain(|frame| {
        !frame.location.starts_with("/rustc/")
            && !frame.location.contains("/library/")
            && !frame.location.contains("allocations.rs")
            && !frame.function.starts_with("__rust")
    });
    for frame in &mut frames {
        // From the crate's folder on: the last `/src/` (a registry path has one before the
        // crate's folder too) or `/bench/`.
        if let Some(at) = ["/src/", "/bench/"]
            .iter()
            .find_map(|marker| frame.location.rfind(marker))
        {
            let crate_start = frame.location[..at].rfind('/').map_or(0, |slash| slash + 1);
            frame.location.drain(..crate_start);
        }
    }
    frames
}

/// Crates that hold what others ask them to (buffers, maps, parsed text): an allocation
/// in one is charged to the crate that called it.
const CONTAINERS: [&str; 8] = [
    "bytes",
    "hashbrown",
    "http",
    "http-body-util",
    "serde_core",
    "allocator-api2",
    "url",
    "uuid",
];

/// The first crate up the stack that is not a container: who asked for the allocation.
fn asker(frames: &[Frame]) -> &str {
    frames
        .iter()
        .map(Frame::crate_name)
        .find(|name| !name.is_empty() && !CONTAINERS.contains(name))
        .unwrap_or("?")
}

/// Prints where the allocations recorded over `calls` calls come from: one line per call
/// stack (its first frames outside the standard library), most frequent first.
fn print_sites(calls: u64, what: &str) {
    let stacks = std::mem::take(&mut *STACKS.lock().unwrap());
    let mut sites: HashMap<Vec<Frame>, (u64, u64)> = HashMap::new();
    let mut askers: HashMap<String, u64> = HashMap::new();
    for (size, stack) in &stacks {
        let mut frames = frames(stack);
        *askers.entry(asker(&frames).to_owned()).or_default() += 1;
        frames.truncate(3);
        let site = sites.entry(frames).or_default();
        site.0 += 1;
        site.1 += *size as u64;
    }
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by_key(|site| std::cmp::Reverse(site.1.0));
    println!(
        "allocation sites over {calls} {what} ({} allocations, {:.1} per call):",
        stacks.len(),
        stacks.len() as f64 / calls as f64
    );
    let mut askers: Vec<_> = askers.into_iter().collect();
    askers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("  by the crate that asked:");
    for (name, count) in askers {
        println!("{:>8.1} {name}", count as f64 / calls as f64);
    }
    println!("  by place (the first three frames outside the standard library):");
    // Sites rarer than one call in two are the background tasks' (the change feed's poll,
    // the webhook sender's), not the calls'.
    let (rare, sites): (Vec<_>, Vec<_>) = sites
        .into_iter()
        .partition(|(_, (count, _))| *count * 2 < calls);
    for (frames, (count, bytes)) in sites {
        println!(
            "{:>6.1} per call, {:>6} B each:",
            count as f64 / calls as f64,
            bytes / count
        );
        for frame in frames {
            println!("         {frame}");
        }
    }
    let rare_count: u64 = rare.iter().map(|(_, (count, _))| count).sum();
    println!(
        "  and {} rarer sites, {:.1} per call together",
        rare.len(),
        rare_count as f64 / calls as f64
    );
}

/// What a proxy allocates per request beyond what the process allocates anyway (measured
/// while calling the platform directly, before and after), printed by size.
fn report(what: &str, calls: u64, before: &Allocated, proxied: &Allocated, after: &Allocated) {
    let per_call = |count: u64| count as f64 / calls as f64;
    let background = |of: fn(&Allocated) -> u64| (per_call(of(before)) + per_call(of(after))) / 2.0;
    let (base_allocations, base_bytes) = (background(|a| a.allocations), background(|a| a.bytes));
    println!(
        "  process while calling through the {what:<11}: {:>6.1} allocations {:>8.0} bytes",
        per_call(proxied.allocations),
        per_call(proxied.bytes)
    );
    println!(
        "  the {what}'s own, per call: {:.1} allocations, {:.0} bytes; by size:",
        per_call(proxied.allocations) - base_allocations,
        per_call(proxied.bytes) - base_bytes
    );
    for (bucket, count) in proxied.by_size.iter().enumerate() {
        let base = (before.by_size[bucket] + after.by_size[bucket]) as f64 / 2.0;
        let own = (*count as f64 - base) / calls as f64;
        if own.abs() >= 0.05 {
            println!("    {:>7} B and up: {own:>5.1}", 1u64 << bucket);
        }
    }
}

fn main() {
    let calls = arg("--calls", 20_000);
    let sites = arg("--sites", 0);
    let gateway_only = arg("--gateway", 0) == 1;
    let passthrough_only = arg("--passthrough", 0) == 1;
    let (_platform, platform) = nginx_platform();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = \"{}\"\n[log]\nlevel = \"info\"\n[api]\nlisten = \"127.0.0.1:0\"\n[gateway]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_queries_per_connection = 0\nmax_requests_per_minute_per_connection = 0\n[upstream]\nurl = \"{platform}\"\n\n[[platforms]]\nplatform = \"resend\"\nbase_url = \"{platform}\"\nallow_private_network = true\n",
        dir.path().join("data").display()
    );
    let config_file = dir.path().join("switchboard.toml");
    std::fs::write(&config_file, config).unwrap();
    // SAFETY: set before any other thread of this process exists.
    unsafe {
        std::env::set_var("SWITCHBOARD_BOOTSTRAP_TEST_SECRET", SECRET);
        std::env::set_var("SWITCHBOARD_BOOTSTRAP_TOKEN", common::TOKEN);
    }
    let settings =
        switchboard::config::Settings::load(Some(&config_file), Default::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = runtime
        .block_on(switchboard::app::Application::build(settings))
        .unwrap();
    let (api, gateway) = (app.api_addr().to_string(), app.gateway_addr().to_string());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let client = common::http_client(1);
    let created = runtime.block_on(json_of(
        client
            .post(format!("http://{api}/v1/vault/connections"))
            .header("x-pica-secret", SECRET)
            .header("content-type", "application/json")
            .body(r#"{"platform":"resend","identity":"me","identityType":"user","credentials":{"api_key":"re_bench_key"}}"#),
    ));
    let key = created["key"].as_str().expect("a connection key");
    let issued = runtime.block_on(json_of(
        client
            .post(format!("http://{api}/api/v1/connections"))
            .bearer_auth(common::TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"client_type":"clickhouse"}"#),
    ));
    let attributes = &issued["data"]["attributes"];
    let login = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!(
            "{}:{}",
            attributes["username"].as_str().expect("a username"),
            attributes["password"].as_str().expect("a password")
        ),
    );

    let platform_addr = platform.trim_start_matches("http://");
    let direct = format!("GET /v1/ping HTTP/1.1\r\nHost: {platform_addr}\r\n\r\n");
    let passthrough = format!(
        "GET /v1/passthrough/v1/ping HTTP/1.1\r\nHost: {api}\r\nx-pica-secret: {SECRET}\r\nx-pica-connection-key: {key}\r\n\r\n"
    );
    let query = format!(
        "POST / HTTP/1.1\r\nHost: {gateway}\r\nAuthorization: Basic {login}\r\nContent-Length: 8\r\n\r\nSELECT 1"
    );
    // One proxy's calls alone: their call stacks (`--sites`), or a steady load to profile.
    let alone = if gateway_only {
        Some((&gateway, &query, "gateway queries"))
    } else if passthrough_only || sites > 0 {
        Some((&api, &passthrough, "passthrough calls"))
    } else {
        None
    };
    if let Some((addr, request, what)) = alone {
        if sites > 0 {
            count_calls(addr, request.as_bytes(), sites, true);
            print_sites(sites, what);
        } else {
            let counted = count_calls(addr, request.as_bytes(), calls, false);
            println!(
                "{calls} {what}: {:.1} allocations each",
                counted.allocations as f64 / calls as f64
            );
        }
        let _ = stop.send(());
        let _ = runtime.block_on(server);
        return;
    }
    // Direct first and last: what the process allocates without a proxy's work.
    let before = count_calls(platform_addr, direct.as_bytes(), calls, false);
    let proxied = count_calls(&api, passthrough.as_bytes(), calls, false);
    let queried = count_calls(&gateway, query.as_bytes(), calls, false);
    let after = count_calls(platform_addr, direct.as_bytes(), calls, false);
    let per_call = |count: u64| count as f64 / calls as f64;
    let base = |of: fn(&Allocated) -> u64| (per_call(of(&before)) + per_call(of(&after))) / 2.0;
    println!("allocations per call, {calls} calls on one connection (1 client)");
    println!(
        "  process while calling the platform directly:   {:>6.1} allocations {:>8.0} bytes",
        base(|a| a.allocations),
        base(|a| a.bytes)
    );
    report("passthrough", calls, &before, &proxied, &after);
    report("gateway", calls, &before, &queried, &after);

    let _ = stop.send(());
    let _ = runtime.block_on(server);
}
