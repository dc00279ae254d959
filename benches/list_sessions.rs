//! ListSessions' page query over many sessions, through the store API, on SQLite and on a private PostgreSQL
//! cluster.
//!
//! ```text
//! cargo bench --bench list_sessions -- [--rows N] [--iterations K] [--stores sqlite,postgres]
//! ```
//!
//! Fills each store with N sessions (default 1,000,000; 80% of tenant `t0`, the rest of `t1` and `t2`) by
//! concurrent `create` calls, then times K (default 200) calls of each query on `t0` and prints p50 and p99 in ms
//! per store: the first page of 100, a deep page (the position after 500,000 rows, or half the tenant's rows when it
//! has fewer), and first pages filtered by state, by client_reference_id and by a create-time range. Before timing
//! it prints each query's plan (`EXPLAIN QUERY PLAN` / `EXPLAIN`, after `ANALYZE` on PostgreSQL) and fails when a
//! plan sorts or scans the table. `--rows 10000` is the short mode CI runs. PostgreSQL needs `initdb` and `pg_ctl`
//! (on PATH or under /usr/lib/postgresql/*/bin).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate::domain::state::tests_support::blank_session;
use facegate::domain::{State, Vendor};
use facegate::store::postgres::PostgresStore;
use facegate::store::sqlite::SqliteStore;
use facegate::store::{ListFilter, SessionStore, StoreOptions};

const PAGE: u32 = 100;
const BASE_MS: i64 = 1_700_000_000_000;
const STATES: [State; 4] = [
    State::RequiresInput,
    State::Verified,
    State::Failed,
    State::Canceled,
];

struct Args {
    rows: usize,
    iterations: usize,
    stores: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        rows: 1_000_000,
        iterations: 200,
        stores: vec!["sqlite".into(), "postgres".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rows" => a.rows = it.next().and_then(|v| v.parse().ok()).expect("--rows N"),
            "--iterations" => {
                a.iterations = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--iterations K")
            }
            "--stores" => {
                a.stores = it
                    .next()
                    .expect("--stores sqlite,postgres")
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            // cargo bench passes --bench.
            _ => {}
        }
    }
    a
}

fn tenant(i: usize) -> &'static str {
    match i % 10 {
        0..=7 => "t0",
        8 => "t1",
        _ => "t2",
    }
}

fn session(i: usize) -> facegate::domain::Session {
    let mut s = blank_session(&format!("ses_{i:032x}"));
    s.tenant = tenant(i).into();
    s.created_at_ms = BASE_MS + i as i64;
    s.updated_at_ms = s.created_at_ms;
    s.expires_at_ms = s.created_at_ms + 86_400_000;
    s.state = STATES[i % STATES.len()];
    s.vendor = [Vendor::Juhe, Vendor::Baidu, Vendor::Megvii][i % 3];
    s.client_reference_id = format!("order-{}", i % 1000);
    s.request_id = format!("r-{i}");
    s
}

async fn fill(store: Arc<dyn SessionStore>, rows: usize, workers: usize) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in (w..rows).step_by(workers) {
                    store.create(&session(i), None, &[]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "  filled {rows} sessions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The position after `depth` sessions of `t0`, newest first.
fn position_after(rows: usize, depth: usize) -> (i64, String) {
    let s = (0..rows)
        .rev()
        .filter(|i| tenant(*i) == "t0")
        .nth(depth - 1)
        .map(session)
        .expect("enough rows");
    (s.created_at_ms, s.id)
}

struct Query {
    name: &'static str,
    filter: ListFilter,
    after: Option<(i64, String)>,
}

fn queries(rows: usize) -> Vec<Query> {
    let t0_rows = (0..rows).filter(|i| tenant(*i) == "t0").count();
    let depth = 500_000.min(t0_rows / 2).max(1);
    let mid = BASE_MS + (rows / 2) as i64;
    vec![
        Query {
            name: "first page",
            filter: ListFilter::default(),
            after: None,
        },
        Query {
            name: if depth == 500_000 {
                "deep page (after 500k)"
            } else {
                "deep page (after half)"
            },
            filter: ListFilter::default(),
            after: Some(position_after(rows, depth)),
        },
        Query {
            name: "state = CANCELED",
            filter: ListFilter {
                state: Some(State::Canceled),
                ..Default::default()
            },
            after: None,
        },
        Query {
            name: "client_reference_id",
            filter: ListFilter {
                client_reference_id: "order-7".into(),
                ..Default::default()
            },
            after: None,
        },
        Query {
            name: "create-time range",
            filter: ListFilter {
                created_from_ms: Some(mid),
                created_before_ms: Some(mid + (rows / 10) as i64),
                ..Default::default()
            },
            after: None,
        },
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times every query; returns rows `store, query, p50, p99`.
async fn time_all(
    label: &str,
    store: &Arc<dyn SessionStore>,
    plans: Vec<(String, Vec<String>)>,
    rows: usize,
    iterations: usize,
) -> Vec<(String, String, f64, f64)> {
    for (name, plan) in &plans {
        println!("  plan of {name}: {}", plan.join(" | "));
        let text = plan.join(" ").to_lowercase();
        // A full sort or a table scan fails. PostgreSQL may instead walk the retention sweep's created_at_ms index
        // for a tenant that holds most rows, ordering only the ties on id ("Incremental Sort ... Presorted Key:
        // created_at_ms" under a Limit): that reads the page's rows and stops, which is allowed.
        let full_sort = text.replace("incremental sort", "").contains("sort")
            && !text.contains("presorted key: created_at_ms");
        assert!(
            !text.contains("temp b-tree") && !full_sort && !text.contains("seq scan"),
            "{label} {name}: the plan sorts or scans"
        );
    }
    let mut out = Vec::new();
    for q in queries(rows) {
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            let page = store
                .list("t0", &q.filter, q.after.clone(), PAGE + 1)
                .await
                .unwrap();
            times.push(started.elapsed());
            assert!(!page.is_empty(), "{}: no rows", q.name);
        }
        times.sort();
        out.push((
            label.to_owned(),
            q.name.to_owned(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
        ));
    }
    out
}

async fn sqlite(rows: usize, iterations: usize) -> Vec<(String, String, f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let store = SqliteStore::open(&path, &StoreOptions::default())
        .await
        .unwrap();
    let dyn_store: Arc<dyn SessionStore> = Arc::new(store.clone());
    println!("SQLite ({})", path.display());
    fill(Arc::clone(&dyn_store), rows, 4).await;
    let mut plans = Vec::new();
    for q in queries(rows) {
        let plan = store
            .explain_list("t0", &q.filter, q.after.clone(), PAGE + 1)
            .await
            .unwrap();
        plans.push((q.name.to_owned(), plan));
    }
    time_all("sqlite", &dyn_store, plans, rows, iterations).await
}

async fn postgres(rows: usize, iterations: usize) -> Vec<(String, String, f64, f64)> {
    let cluster = PgCluster::start();
    let url = cluster.url();
    let store = PostgresStore::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let dyn_store: Arc<dyn SessionStore> = Arc::new(store.clone());
    println!("PostgreSQL (port {})", cluster.port);
    fill(Arc::clone(&dyn_store), rows, 8).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("ANALYZE sessions")
        .execute(&pool)
        .await
        .unwrap();
    let mut plans = Vec::new();
    for q in queries(rows) {
        let plan = store
            .explain_list("t0", &q.filter, q.after.clone(), PAGE + 1)
            .await
            .unwrap();
        plans.push((q.name.to_owned(), plan));
    }
    let out = time_all("postgres", &dyn_store, plans, rows, iterations).await;
    drop(cluster);
    out
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut table = Vec::new();
    for name in &args.stores {
        table.extend(match name.as_str() {
            "sqlite" => runtime.block_on(sqlite(args.rows, args.iterations)),
            "postgres" => runtime.block_on(postgres(args.rows, args.iterations)),
            other => panic!("unknown store {other} (sqlite, postgres)"),
        });
    }
    println!(
        "\n{} sessions, {} calls per query, pages of {PAGE}",
        args.rows, args.iterations
    );
    println!(
        "| store    | query                    | p50 ms | p99 ms |\n|----------|--------------------------|--------|--------|"
    );
    for (store, query, p50, p99) in table {
        println!("| {store:<8} | {query:<24} | {p50:>6.2} | {p99:>6.2} |");
    }
}

/// A private PostgreSQL cluster (the helper of tests/common/pg.rs, which a bench cannot import): `initdb` in a
/// temporary directory, `pg_ctl start` on a free loopback port with trust authentication, stopped when dropped.
/// As root the binaries run as user `postgres` through `runuser`.
struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres_user: bool,
    port: u16,
}

impl PgCluster {
    fn start() -> Self {
        let bin = pg_bin_dir();
        let uid = Command::new("id").arg("-u").output().expect("run id -u");
        let as_postgres_user = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir().expect("a temporary directory");
        if as_postgres_user {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(chown.status.success(), "chown to user postgres");
        }
        let mut cluster = Self {
            bin,
            dir,
            as_postgres_user,
            port: 0,
        };
        let data = cluster.data_dir();
        let init = cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        assert!(init.status.success(), "initdb failed");
        for _ in 0..5 {
            cluster.port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off",
                cluster.port,
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("log").display().to_string();
            let out = cluster.run(
                "pg_ctl",
                &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
            );
            if out.status.success() {
                return cluster;
            }
        }
        panic!("pg_ctl start failed");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

fn pg_bin_dir() -> PathBuf {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(d) = on_path.into_iter().find(|d| has_both(d)) {
        return d;
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_both(d))
        .collect();
    debian.sort_by_key(|d| {
        let version = d.parent().and_then(|v| v.file_name());
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    debian
        .pop()
        .expect("PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin")
}
