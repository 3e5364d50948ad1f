//! Control-plane API benchmark: creates 10,000 data connections through the HTTP API, then
//! lists and gets them, against the release binary on the embedded SQLite store and then on a
//! local PostgreSQL server (started in a temp dir), and prints the two side by side.
//!
//! Run: `cargo bench --bench api` (options: `-- --connections N --concurrency C --seconds S`).
//! Client and server share this machine's cores; the figures include that contention.

use std::sync::Arc;
use std::time::Duration;

mod common;
#[path = "../tests/integration/common/postgres.rs"]
mod postgres;
use common::{Figures, Switchboard, TOKEN, arg, drive, start_switchboard};

/// Starts the release binary on the embedded store, or on `postgres_url`.
fn start_server(postgres_url: Option<&str>) -> Switchboard {
    match postgres_url {
        Some(url) => start_switchboard(
            "",
            &[(
                "master.key",
                "c3dpdGNoYm9hcmQtYmVuY2gtbWFzdGVyLWtleS0zMmI=\n",
            )],
            &[
                ("SWITCHBOARD_DATABASE_URL", url),
                ("SWITCHBOARD_MASTER_KEY_FILE", "master.key"),
            ],
        ),
        None => start_switchboard("", &[], &[]),
    }
}

fn main() {
    let connections = arg("--connections", 10_000);
    let concurrency = arg("--concurrency", 32) as usize;
    let seconds = arg("--seconds", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        println!("switchboard API benchmark: {connections} connections, {concurrency} concurrent clients\n");
        let client = common::http_client(concurrency);
        let sqlite = start_server(None);
        println!("SQLite (embedded)");
        let on_sqlite = run_suite(&client, &sqlite.api, connections, concurrency, seconds).await;
        drop(sqlite);

        let pg = postgres::Postgres::shared();
        let url = pg.create_database();
        let server = start_server(Some(&url));
        println!("\nPostgreSQL (local server, same machine)");
        let on_postgres = run_suite(&client, &server.api, connections, concurrency, seconds).await;
        // Right after a bulk load the planner has no statistics and the counter rows carry
        // dead versions; autovacuum fixes both within a minute. Measure that state too.
        pg.sql(&url, "VACUUM ANALYZE");
        let analyzed = list_phase(&client, &Arc::new(server.api.clone()), connections, concurrency, seconds).await;
        print!("after VACUUM ANALYZE: ");
        analyzed.print();

        println!("\nPostgreSQL beside SQLite (req/s ratio)");
        for (a, b) in on_sqlite.iter().zip(&on_postgres) {
            println!("  {:<34} {:.2}x", a.name, b.rps() / a.rps());
        }
        println!("  {:<34} {:.2}x", "list, after VACUUM ANALYZE", analyzed.rps() / on_sqlite[1].rps());
        println!("\nhealthz is the ceiling this client and machine allow; compare the others to it.");
    });
}

/// Create, list, get and healthz phases against one server.
async fn run_suite(
    client: &reqwest::Client,
    base: &str,
    connections: u64,
    concurrency: usize,
    seconds: u64,
) -> Vec<Figures> {
    let base = Arc::new(base.to_owned());
    let mut all = Vec::new();
    let (c, b) = (client.clone(), base.clone());
    let create = drive("create (POST /api/v1/connections)", concurrency, Some(connections), None, move |i| {
        let req = c
            .post(format!("{b}/api/v1/connections"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(format!(r#"{{"client_type":"clickhouse","note":"bench {i}","ip_allowlist":["10.0.0.0/8"]}}"#));
        async move { req.send().await.unwrap().status() }
    })
    .await;
    create.print();
    all.push(create);

    let list = list_phase(client, &base, connections, concurrency, seconds).await;
    list.print();
    all.push(list);

    let (c, b) = (client.clone(), base.clone());
    let get = drive(
        "get (GET /api/v1/connections/{id})",
        concurrency,
        None,
        Some(Duration::from_secs(seconds)),
        move |i| {
            let id = i.wrapping_mul(2_654_435_761) % connections + 1;
            let req = c
                .get(format!("{b}/api/v1/connections/{id}"))
                .bearer_auth(TOKEN);
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let _ = resp.bytes().await.unwrap();
                status
            }
        },
    )
    .await;
    get.print();
    all.push(get);

    let (c, b) = (client.clone(), base.clone());
    let health = drive(
        "healthz (no auth, no store)",
        concurrency,
        None,
        Some(Duration::from_secs(seconds.min(5))),
        move |_| {
            let req = c.get(format!("{b}/healthz"));
            async move { req.send().await.unwrap().status() }
        },
    )
    .await;
    health.print();
    all.push(health);
    all
}

/// Random pages of 50 for `seconds`.
async fn list_phase(
    client: &reqwest::Client,
    base: &Arc<String>,
    connections: u64,
    concurrency: usize,
    seconds: u64,
) -> Figures {
    let pages = connections.div_ceil(50).max(1);
    let (c, b) = (client.clone(), base.clone());

    drive(
        "list (per_page=50, random page)",
        concurrency,
        None,
        Some(Duration::from_secs(seconds)),
        move |i| {
            let page = i.wrapping_mul(2_654_435_761) % pages + 1;
            let req = c
                .get(format!("{b}/api/v1/connections?page={page}&per_page=50"))
                .bearer_auth(TOKEN);
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let _ = resp.bytes().await.unwrap();
                status
            }
        },
    )
    .await
}
