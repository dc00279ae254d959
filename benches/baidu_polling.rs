//! Baidu polling at scale: many watched Baidu sessions sharing one `baidu.poll_qps` budget, through the public
//! surface (gRPC StartSession and StreamStatus, the sandbox page and the HTTP return relay) of an in-process
//! sandbox facegate.
//!
//! ```text
//! cargo bench --bench baidu_polling -- [--sessions N] [--returns R] [--duration S] [--qps Q]
//! ```
//!
//! Starts N Baidu sessions (default 10,000) and opens one StatusStream on each, so all N are watched and polled.
//! Then, spread over S seconds (default 240), R users (default 60) pass on the Baidu sandbox page and come back
//! through facegate's return relay; for each, the time from the relay request to VERIFIED on its stream is taken.
//! It prints those latencies (p50, p99, max), the requests the simulator received (result/getall per second
//! against the budget; result/detail and result/stat, which a decision no longer needs), and, per session, the
//! longest gap between two result queries (from its stream's start to its first query, between queries, and from
//! its last query to the end) against the fair-share bound `max(status.poll_max_interval_ms, N / Q) * (1 +
//! status.poll_jitter)`. A run shorter than the bound cannot show a full round of the queue; the output says so.
//! `--sessions 200 --returns 5 --duration 10` is the short mode CI runs. Exits non-zero when a returned session
//! never became final on its stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use facegate::app::{self, Mode};
use facegate::config::{Config, Secret};
use facegate::proto::v1 as pb;
use pb::verification_service_client::VerificationServiceClient;
use tonic::transport::Channel;

/// StatusStreams per gRPC connection (the server allows 200 concurrent streams on one).
const STREAMS_PER_CONNECTION: usize = 150;
/// StartSession calls in flight while the sessions are created.
const START_CONCURRENCY: usize = 32;

struct Args {
    sessions: usize,
    returns: usize,
    duration: Duration,
    qps: f64,
}

fn args() -> Args {
    let mut a = Args {
        sessions: 10_000,
        returns: 60,
        duration: Duration::from_secs(240),
        qps: 5.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--sessions" => a.sessions = value("--sessions").parse().expect("--sessions N"),
            "--returns" => a.returns = value("--returns").parse().expect("--returns R"),
            "--duration" => {
                a.duration = Duration::from_secs(value("--duration").parse().expect("--duration S"))
            }
            "--qps" => a.qps = value("--qps").parse().expect("--qps Q"),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    assert!(a.sessions > 0 && a.returns <= a.sessions, "need 0 < R <= N");
    a
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

struct Started {
    id: String,
    user_url: String,
    token: String,
}

/// What each stream saw: when it opened (unix ms) and when the session became final (Instant).
#[derive(Default)]
struct Seen {
    opened_ms: HashMap<String, i64>,
    final_at: HashMap<String, (Instant, i32)>,
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn start_sessions(client: &VerificationServiceClient<Channel>, n: usize) -> Vec<Started> {
    let out = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let number = facegate::sandbox::test_id_number(1).expect("a sandbox ID number");
    let mut workers = Vec::new();
    for _ in 0..START_CONCURRENCY {
        let mut client = client.clone();
        let out = Arc::clone(&out);
        let next = Arc::clone(&next);
        let number = number.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let s = client
                    .start_session(pb::StartSessionRequest {
                        request_id: format!("bench-baidu-{i}"),
                        vendor: pb::Vendor::Baidu as i32,
                        vendor_options: Some(pb::start_session_request::VendorOptions::Baidu(
                            pb::BaiduOptions { plan: "kyc".into() },
                        )),
                        identity: Some(pb::Identity {
                            name: "测试用户".into(),
                            id_number: number.clone(),
                            id_type: 0,
                        }),
                        ..Default::default()
                    })
                    .await
                    .expect("StartSession")
                    .into_inner()
                    .session
                    .expect("a session");
                let token = query_param(&s.user_url, "token").expect("the page URL has the token");
                out.lock().unwrap().push(Started {
                    id: s.id,
                    user_url: s.user_url,
                    token,
                });
            }
        }));
    }
    for w in workers {
        w.await.expect("start worker");
    }
    let mut v = std::mem::take(&mut *out.lock().unwrap());
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Opens one stream per session (spread over several connections) and records what they see.
async fn open_streams(
    grpc: &str,
    sessions: &[Started],
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(sessions.len());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for chunk in sessions.chunks(STREAMS_PER_CONNECTION) {
        let channel = Channel::from_shared(grpc.to_owned())
            .expect("gRPC URL")
            .connect()
            .await
            .expect("connect");
        for s in chunk {
            let mut client = VerificationServiceClient::new(channel.clone());
            let id = s.id.clone();
            let seen = Arc::clone(seen);
            let ready = ready_tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = client
                    .stream_status(pb::StreamStatusRequest {
                        session_id: id.clone(),
                    })
                    .await
                    .expect("StreamStatus")
                    .into_inner();
                let mut first = true;
                while let Ok(Some(msg)) = stream.message().await {
                    let Some(session) = msg.session else { continue };
                    if first {
                        first = false;
                        seen.lock().unwrap().opened_ms.insert(id.clone(), unix_ms());
                        let _ = ready.send(());
                    }
                    let state = session.state;
                    let is_final = matches!(
                        pb::SessionState::try_from(state),
                        Ok(pb::SessionState::Verified
                            | pb::SessionState::Failed
                            | pb::SessionState::Expired
                            | pb::SessionState::Canceled)
                    );
                    if is_final {
                        seen.lock()
                            .unwrap()
                            .final_at
                            .insert(id.clone(), (Instant::now(), state));
                        return;
                    }
                }
            }));
        }
    }
    drop(ready_tx);
    for _ in 0..sessions.len() {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    tasks
}

/// The user passes on the sandbox page; returns the relay URL the page sends the browser to.
async fn pass_on_page(http: &reqwest::Client, user_url: &str) -> String {
    let (page, query) = user_url.split_once('?').expect("page URL with a query");
    let mut form: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("outcome".into(), "pass".into()));
    let r = http
        .post(format!("{page}submit"))
        .form(&form)
        .send()
        .await
        .expect("page submit");
    assert_eq!(r.status(), 303, "the page sends the browser back");
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location")
        .to_owned()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn main() {
    let a = args();
    // The service's own log lines, on stderr, when RUST_LOG asks for them (e.g. RUST_LOG=warn).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ok = rt.block_on(run(a));
    if !ok {
        std::process::exit(1);
    }
}

async fn run(a: Args) -> bool {
    app::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.grpc.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.store.sqlite_path = dir.path().join("facegate.db");
    config.store.encryption_keys = vec![Secret::new(format!(
        "k1:{}",
        facegate::store::seal::generate_key_base64().expect("key")
    ))];
    config.baidu.poll_qps = a.qps;
    let max_interval = Duration::from_millis(config.status.poll_max_interval_ms);
    let jitter = config.status.poll_jitter;
    let running = app::start(config, Mode::sandbox())
        .await
        .expect("facegate starts");
    let grpc = format!("http://{}", running.grpc_addr);
    let sim = Arc::clone(&running.sandbox.as_ref().expect("sandbox").baidu);
    let client = VerificationServiceClient::connect(grpc.clone())
        .await
        .expect("connect");

    println!(
        "Baidu polling: {} watched sessions, budget {} req/s, {} returns over {} s",
        a.sessions,
        a.qps,
        a.returns,
        a.duration.as_secs()
    );
    let t = Instant::now();
    let sessions = start_sessions(&client, a.sessions).await;
    println!(
        "started {} sessions in {}",
        sessions.len(),
        secs(t.elapsed())
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let t = Instant::now();
    let streams = open_streams(&grpc, &sessions, &seen).await;
    println!("opened {} streams in {}", streams.len(), secs(t.elapsed()));
    let run_start = Instant::now();
    let run_start_ms = unix_ms();
    let getall_before = sim.stats().calls.get("result/getall").copied().unwrap_or(0);

    // Returns spread over the run, on sessions spread over the list (so some are deep in the queue).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let step = sessions.len() / a.returns.max(1);
    let chosen: Vec<&Started> = (0..a.returns)
        .map(|k| &sessions[(k * step + step / 2).min(sessions.len() - 1)])
        .collect();
    let mut returned: Vec<(String, Instant)> = Vec::new();
    for (k, s) in chosen.iter().enumerate() {
        let at = run_start
            + a.duration
                .mul_f64((k as f64 + 0.5) / a.returns.max(1) as f64);
        tokio::time::sleep_until(at.into()).await;
        let relay = pass_on_page(&http, &s.user_url).await;
        let t = Instant::now();
        let r = http.get(&relay).send().await.expect("return relay");
        assert!(r.status().is_success(), "relay answered {}", r.status());
        returned.push((s.id.clone(), t));
    }
    tokio::time::sleep_until((run_start + a.duration).into()).await;
    // Give the last returns time to land.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            returned
                .iter()
                .all(|(id, _)| seen.final_at.contains_key(id))
        };
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end_ms = unix_ms();
    let elapsed = run_start.elapsed();

    let mut latencies = Vec::new();
    let mut missing = 0;
    {
        let seen = seen.lock().unwrap();
        for (id, t) in &returned {
            match seen.final_at.get(id) {
                Some((at, state)) if *state == pb::SessionState::Verified as i32 => {
                    latencies.push(at.saturating_duration_since(*t))
                }
                _ => missing += 1,
            }
        }
    }
    latencies.sort();

    let stats = sim.stats();
    let calls = |p: &str| stats.calls.get(p).copied().unwrap_or(0);
    let getall_run = calls("result/getall") - getall_before;
    let metrics = reqwest::get(format!("http://{}/metrics", running.http_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");

    // Per session: the longest wait for a result query while watched.
    let returned_ids: std::collections::HashSet<&str> =
        returned.iter().map(|(id, _)| id.as_str()).collect();
    let opened = std::mem::take(&mut seen.lock().unwrap().opened_ms);
    let mut max_gap = Duration::ZERO;
    let mut never_polled = 0usize;
    let mut queries_per_session = Vec::new();
    for s in &sessions {
        if returned_ids.contains(s.id.as_str()) {
            continue;
        }
        let times: Vec<i64> = sim.getall_times(&s.token);
        queries_per_session.push(times.len());
        if times.is_empty() {
            never_polled += 1;
        }
        let open = opened.get(&s.id).copied().unwrap_or(run_start_ms);
        let mut last = open;
        for t in times.iter().copied().filter(|t| *t >= open) {
            max_gap = max_gap.max(Duration::from_millis((t - last).max(0) as u64));
            last = t;
        }
        max_gap = max_gap.max(Duration::from_millis((end_ms - last).max(0) as u64));
    }
    let fair = Duration::from_secs_f64(a.sessions as f64 / a.qps);
    let bound = fair.max(max_interval).mul_f64(1.0 + jitter);
    queries_per_session.sort();

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| watched Baidu sessions | {} |", a.sessions);
    println!("| budget (baidu.poll_qps) | {} req/s |", a.qps);
    println!("| run (returns spread over) | {} |", secs(elapsed));
    println!(
        "| returned users final on their stream | {} of {} |",
        latencies.len(),
        returned.len()
    );
    println!(
        "| return -> VERIFIED on the stream, p50 / p99 / max | {} / {} / {} |",
        secs(percentile(&latencies, 50.0)),
        secs(percentile(&latencies, 99.0)),
        secs(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "| result/getall during the run | {} ({:.2} req/s) |",
        getall_run,
        getall_run as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| result/detail, result/stat (decisions need neither) | {}, {} |",
        calls("result/detail"),
        calls("result/stat")
    );
    println!(
        "| facegate_status_polls_total (requests sent) | {} |",
        metric(&metrics, "facegate_status_polls_total{vendor=\"baidu\"")
    );
    println!(
        "| facegate_status_poll_queue_depth | {} |",
        metric(&metrics, "facegate_status_poll_queue_depth")
    );
    println!(
        "| result queries per unreturned session, min / median / max | {} / {} / {} |",
        queries_per_session.first().copied().unwrap_or(0),
        queries_per_session
            .get(queries_per_session.len() / 2)
            .copied()
            .unwrap_or(0),
        queries_per_session.last().copied().unwrap_or(0)
    );
    println!("| unreturned sessions not polled yet | {never_polled} |");
    println!(
        "| longest gap between result queries of a session | {} |",
        secs(max_gap)
    );
    println!(
        "| fair-share bound max(poll_max_interval, N/qps) x (1 + jitter) | {} |",
        secs(bound)
    );
    if elapsed < bound {
        println!(
            "note: the run ({}) is shorter than the bound, so it cannot show a whole round of the queue; the gap \
             above is the longest seen so far (run with --duration above the bound, or fewer --sessions, to see \
             whole rounds)",
            secs(elapsed)
        );
    } else {
        println!(
            "gap within the bound: {}",
            if max_gap <= bound { "yes" } else { "NO" }
        );
    }
    if a.returns > 0 {
        println!(
            "target p99 <= 2 s: {}",
            if missing == 0 && percentile(&latencies, 99.0) <= Duration::from_secs(2) {
                "met"
            } else {
                "NOT met"
            }
        );
    }

    for t in streams {
        t.abort();
    }
    let _ = running.shutdown().await;
    missing == 0
}
