//! facegate against a bare tonic server with the same settings, side by side in one run (issue 11).
//!
//! ```text
//! cargo bench --bench facegate [-- --rounds N --calls N --streams N --shared-sessions N --close-wait-secs N]
//! cargo bench --profile dev --bench facegate -- --short        # what CI runs
//! ```
//!
//! Starts two server processes on loopback: facegate itself (`serve --sandbox`, embedded SQLite, built-in
//! simulators, its output in a log file in a temporary directory) and a reference server (this binary again, with
//! `--reference-server`) that implements the generated `facegate.v1.VerificationService` with canned replies
//! captured from that facegate, built with `facegate::grpc::server_builder`, the same message limits and
//! `facegate::net::incoming`. Then, against both, for GetResult, StartSession (Juhe sandbox, decided inline),
//! SubmitIdentity and StreamStatus open (time to the first message), at concurrency 1 and 64: req/s and
//! p50/p99/p999 (medians over rounds), and the ratio to the reference. Then 10k idle streams (one per session, and
//! over 100 sessions): KiB per stream from each process's VmRSS and RSS some time after they close. Start-up time is
//! spawn to a health Check answering SERVING. It prints one table with each issue target next to its figure.
//!
//! The full run exits 0 whether or not the targets are met. Both modes exit non-zero when a figure could not be
//! produced (missing, zero or not finite), a call failed, or a session a StartSession reply named cannot be read
//! back with GetResult.

mod load;
mod reference;
mod report;
mod servers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate::proto::v1 as pb;
use load::{Client, Rpc, Targets};
use prost::Message;
use servers::Proc;

const USAGE: &str = "usage: facegate bench [--short] [--rounds N] [--calls N] [--streams N] \
[--shared-sessions N] [--close-wait-secs N] [--connections N] [--streams-per-connection N] \
[--only RPC[,RPC..]] (RPC: GetResult, StartSession, SubmitIdentity, StreamStatus; --only skips the idle-stream \
scenarios unless StreamStatus is named, and reports without judging completeness: for profiling one path)";

/// Concurrency levels of the unary and stream-open measurements.
const CONCURRENCY: [usize; 2] = [1, 64];
/// Sessions GetResult calls cycle over.
const RESULT_SESSIONS: usize = 100;

pub struct Args {
    pub short: bool,
    pub rounds: usize,
    /// Measured calls per RPC, concurrency and server in each round (plus a tenth, at least 20, to warm up).
    pub calls: usize,
    /// Idle streams per scenario.
    pub streams: usize,
    /// Sessions the streams of the many-per-session scenario share.
    pub shared_sessions: usize,
    /// How long after the streams close RSS is read again.
    pub close_wait: Duration,
    /// How long RSS may settle before it is read.
    pub settle: Duration,
    /// HTTP/2 connections of the load at concurrency > 1.
    pub connections: usize,
    pub streams_per_connection: usize,
    /// When set, only these RPCs are measured (lower-case names without spaces).
    pub only: Option<Vec<String>>,
}

enum Invocation {
    Bench(Args),
    Reference {
        listen: SocketAddr,
        replies: PathBuf,
    },
}

fn parse() -> Result<Invocation, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let short = argv.iter().any(|a| a == "--short");
    let mut a = if short {
        Args {
            short,
            rounds: 1,
            calls: 200,
            streams: 500,
            shared_sessions: 5,
            close_wait: Duration::from_secs(3),
            settle: Duration::from_secs(1),
            connections: 4,
            streams_per_connection: 100,
            only: None,
        }
    } else {
        Args {
            short,
            rounds: 3,
            calls: 5000,
            streams: 10_000,
            shared_sessions: 100,
            close_wait: Duration::from_secs(30),
            settle: Duration::from_secs(2),
            connections: 4,
            streams_per_connection: 100,
            only: None,
        }
    };
    let mut listen = None;
    let mut replies = None;
    let mut reference_server = false;
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .ok_or(format!("{name} needs a positive number\n{USAGE}"))
        };
        match arg.as_str() {
            // cargo bench passes --bench.
            "--bench" | "--short" => {}
            "--rounds" => a.rounds = value("--rounds")?,
            "--calls" => a.calls = value("--calls")?,
            "--streams" => a.streams = value("--streams")?,
            "--shared-sessions" => a.shared_sessions = value("--shared-sessions")?,
            "--close-wait-secs" => {
                a.close_wait = Duration::from_secs(value("--close-wait-secs")? as u64)
            }
            "--connections" => a.connections = value("--connections")?,
            "--streams-per-connection" => {
                a.streams_per_connection = value("--streams-per-connection")?
            }
            "--only" => {
                let list = it
                    .next()
                    .ok_or(format!("--only needs a list of RPCs\n{USAGE}"))?;
                let names: Vec<String> = list.split(',').map(rpc_key).collect();
                for n in &names {
                    if !ALL_RPCS.iter().any(|r| rpc_key(r.name()) == *n) {
                        return Err(format!("--only: unknown RPC {n:?}\n{USAGE}"));
                    }
                }
                a.only = Some(names);
            }
            "--reference-server" => reference_server = true,
            "--listen" => {
                listen = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--listen needs an address")?,
                )
            }
            "--replies" => {
                replies = Some(PathBuf::from(it.next().ok_or("--replies needs a path")?))
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if reference_server {
        return Ok(Invocation::Reference {
            listen: listen.ok_or("--reference-server needs --listen")?,
            replies: replies.ok_or("--reference-server needs --replies")?,
        });
    }
    Ok(Invocation::Bench(a))
}

/// The RPCs measured, in order.
pub const ALL_RPCS: [Rpc; 4] = [
    Rpc::GetResult,
    Rpc::StartSession,
    Rpc::SubmitIdentity,
    Rpc::StreamOpen,
];

/// An RPC's name as `--only` takes it: "StreamStatus open" -> "streamstatus".
fn rpc_key(name: &str) -> String {
    name.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

impl Args {
    pub fn measures(&self, rpc: Rpc) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.contains(&rpc_key(rpc.name())))
    }
}

fn main() -> ExitCode {
    let result = match parse() {
        Ok(Invocation::Reference { listen, replies }) => reference::main(listen, &replies),
        Ok(Invocation::Bench(args)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|rt| rt.block_on(bench(args))),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facegate bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Server {
    Facegate,
    Reference,
}

/// One measured run's figures.
#[derive(Clone, Copy)]
pub struct Point {
    pub per_second: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// One idle-stream scenario on one server; RSS in KiB.
#[derive(Clone, Copy, Default)]
pub struct StreamFigures {
    pub streams: usize,
    pub before: u64,
    pub with: u64,
    pub after: u64,
}

impl StreamFigures {
    pub fn kib_per_stream(&self) -> f64 {
        (self.with as f64 - self.before as f64) / self.streams as f64
    }

    pub fn after_ratio(&self) -> f64 {
        self.after as f64 / self.before as f64
    }
}

/// Everything the table shows.
pub struct Results {
    pub startup: BTreeMap<Server, Duration>,
    pub idle_rss: BTreeMap<Server, u64>,
    pub rpcs: BTreeMap<(Rpc, usize, Server), Vec<Point>>,
    pub started: usize,
    pub read_back: usize,
    /// (scenario name, sessions) -> per server.
    pub streams: Vec<(String, BTreeMap<Server, StreamFigures>)>,
}

/// Both servers: the process and connections for concurrency 1 and for more.
struct Side {
    proc: Proc,
    one: Vec<Client>,
    many: Vec<Client>,
}

/// Lets this process (and the facegate it starts, which inherits the limit) hold `needed` descriptors: the soft
/// RLIMIT_NOFILE is raised to the hard limit when it is lower.
fn raise_nofile(needed: u64) -> Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(());
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < needed {
        return Err(format!(
            "{needed} file descriptors needed, the hard limit is {hard}: use fewer --streams or more \
             --streams-per-connection"
        ));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .map_err(|e| format!("cannot raise the descriptor limit to {hard}: {e}"))
}

async fn bench(args: Args) -> Result<(), String> {
    // Per stream connection: one descriptor here and one in the server; plus the load connections and slack.
    let stream_connections = args.streams.div_ceil(args.streams_per_connection) as u64;
    raise_nofile(stream_connections + 4 * args.connections as u64 + 256)?;
    let dir = tempfile::Builder::new()
        .prefix("facegate-bench-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let result = measure(&args, dir.path()).await;
    if result.is_err() {
        // The servers' logs explain a failed run.
        let kept = dir.keep();
        println!(
            "the run's files (facegate.log, reference.log) are kept in {}",
            kept.display()
        );
    }
    result
}

/// Everything between creating the run's directory and removing it; the servers are stopped when it returns.
async fn measure(args: &Args, dir: &std::path::Path) -> Result<(), String> {
    println!(
        "facegate benchmark ({} mode): {} round(s) of {} calls per RPC and concurrency, {} idle streams; files in {}",
        if args.short { "short" } else { "full" },
        args.rounds,
        args.calls,
        args.streams,
        dir.display()
    );

    let facegate = servers::facegate(dir).await?;
    println!(
        "  facegate SERVING after {:.0} ms on {} (log {})",
        ms(facegate.startup),
        facegate.addr,
        facegate.log.display()
    );
    let f_one = load::connect(facegate.addr, 1).await?;
    let f_many = load::connect(facegate.addr, args.connections).await?;
    let replies = dir.join("replies");
    let (result_ids, mut started) = capture_replies(&f_one, &f_many, &replies).await?;
    let reference = servers::reference(dir, &replies).await?;
    println!(
        "  reference SERVING after {:.0} ms on {}",
        ms(reference.startup),
        reference.addr
    );
    let r_one = load::connect(reference.addr, 1).await?;
    let r_many = load::connect(reference.addr, args.connections).await?;
    let sides = [
        (
            Server::Facegate,
            Side {
                proc: facegate,
                one: f_one,
                many: f_many,
            },
        ),
        (
            Server::Reference,
            Side {
                proc: reference,
                one: r_one,
                many: r_many,
            },
        ),
    ];
    let side = |s: Server| &sides[if s == Server::Facegate { 0 } else { 1 }].1;

    let mut results = Results {
        startup: BTreeMap::new(),
        idle_rss: BTreeMap::new(),
        rpcs: BTreeMap::new(),
        started: 0,
        read_back: 0,
        streams: Vec::new(),
    };
    for (s, d) in &sides {
        results.startup.insert(*s, d.proc.startup);
        results.idle_rss.insert(*s, d.proc.rss_kib()?);
    }

    // Sessions the stream-open calls watch: not final, so each stream stays open until the client drops it.
    let stream_ids = load::empty_sessions(&side(Server::Facegate).many, RESULT_SESSIONS).await?;
    let warm = (args.calls / 10).max(20);
    for round in 0..args.rounds {
        println!("round {}/{}", round + 1, args.rounds);
        for rpc in ALL_RPCS.into_iter().filter(|r| args.measures(*r)) {
            for conc in CONCURRENCY {
                // SubmitIdentity needs a fresh session per call; both servers get the same requests.
                let submit = if rpc == Rpc::SubmitIdentity {
                    load::empty_sessions(&side(Server::Facegate).many, warm + args.calls).await?
                } else {
                    Vec::new()
                };
                let targets = Arc::new(Targets {
                    get_result: result_ids.clone(),
                    submit,
                    stream: stream_ids.clone(),
                });
                // Alternate which server goes first, so neither always runs on a warmer machine.
                let mut order = [Server::Facegate, Server::Reference];
                if round % 2 == 1 {
                    order.reverse();
                }
                for server in order {
                    let d = side(server);
                    let clients = if conc == 1 { &d.one } else { &d.many };
                    let w = load::run(clients, rpc, conc, 0, warm, Arc::clone(&targets)).await?;
                    let m = load::run(clients, rpc, conc, warm, args.calls, Arc::clone(&targets))
                        .await?;
                    if server == Server::Facegate {
                        started.extend(w.started);
                        started.extend(m.started.iter().cloned());
                    }
                    let p = Point {
                        per_second: m.per_second(),
                        p50: m.quantile_ms(0.5),
                        p99: m.quantile_ms(0.99),
                        p999: m.quantile_ms(0.999),
                    };
                    println!(
                        "  {:<18} c={:<3} {:<9} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  p999 {:>8.3} ms",
                        rpc.name(),
                        conc,
                        report::server_name(server),
                        p.per_second,
                        p.p50,
                        p.p99,
                        p.p999
                    );
                    results.rpcs.entry((rpc, conc, server)).or_default().push(p);
                }
            }
        }
    }

    // Every session a StartSession reply named must be in the store with the state the reply gave.
    results.started = started.len();
    results.read_back = load::read_back(&side(Server::Facegate).many, &started).await?;
    println!(
        "StartSession sessions read back with GetResult: {}/{}",
        results.read_back, results.started
    );

    // The RPC load is over: stop those servers, so each stream scenario starts with a fresh pair of processes whose
    // heaps hold nothing from the load or from the other scenario (memory freed there would be reused here, and the
    // per-stream figure would read low).
    drop(sides);
    // A failure here still leaves the table of everything else.
    let mut stream_problems = Vec::new();
    let stream_scenarios = if args.measures(Rpc::StreamOpen) { 2 } else { 0 };
    for (i, (name, sessions)) in [
        ("one per session", args.streams),
        ("many per session", args.shared_sessions.min(args.streams)),
    ]
    .into_iter()
    .take(stream_scenarios)
    .enumerate()
    {
        println!(
            "idle streams, {name}: {} streams over {sessions} sessions (fresh server processes)",
            args.streams
        );
        let figures = match fresh_idle_streams(
            args,
            &dir.join(format!("streams-{}", i + 1)),
            &replies,
            sessions,
        )
        .await
        {
            Ok(f) => f,
            Err(e) => {
                println!("  failed: {e}");
                stream_problems.push(format!("idle streams, {name}: {e}"));
                BTreeMap::new()
            }
        };
        results.streams.push((
            format!("{name} ({} streams / {sessions} sessions)", args.streams),
            figures,
        ));
    }

    println!();
    let table = report::table(args, &results);
    print!("{}", table.text);
    println!(
        "\nthe servers' logs: {} (kept only when the run fails)",
        dir.display()
    );
    if args.only.is_some() {
        println!("--only: a partial run, figures not checked for completeness");
        return Ok(());
    }
    let mut problems = table.missing;
    problems.extend(stream_problems);
    if results.read_back != results.started || results.started == 0 {
        problems.push(format!(
            "{} of {} StartSession sessions could not be read back",
            results.started - results.read_back,
            results.started
        ));
    }
    if problems.is_empty() {
        println!(
            "every figure was produced{}",
            if args.short {
                " (short mode: values not judged)"
            } else {
                ""
            }
        );
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Starts a new facegate and reference pair with its files in `dir`, runs [`idle_streams`] on it, and stops both.
async fn fresh_idle_streams(
    args: &Args,
    dir: &std::path::Path,
    replies: &std::path::Path,
    sessions: usize,
) -> Result<BTreeMap<Server, StreamFigures>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let facegate = servers::facegate(dir).await?;
    let reference = servers::reference(dir, replies).await?;
    let mut pair = Vec::with_capacity(2);
    for (server, proc) in [(Server::Facegate, facegate), (Server::Reference, reference)] {
        let one = load::connect(proc.addr, 1).await?;
        let many = load::connect(proc.addr, args.connections).await?;
        pair.push((server, Side { proc, one, many }));
    }
    let sides: [(Server, Side); 2] = pair
        .try_into()
        .map_err(|_| "two servers were expected".to_string())?;
    idle_streams(args, &sides, sessions).await
}

/// Opens `args.streams` idle streams over `sessions` new sessions against each server in turn, and reads RSS
/// before, with them open, and `args.close_wait` after they closed (the waits of both servers overlap).
async fn idle_streams(
    args: &Args,
    sides: &[(Server, Side); 2],
    sessions: usize,
) -> Result<BTreeMap<Server, StreamFigures>, String> {
    let facegate = &sides[0].1;
    let ids = load::empty_sessions(&facegate.many, sessions).await?;
    if ids.is_empty() {
        return Err("no sessions for the idle streams".into());
    }
    let watched: Vec<String> = (0..args.streams)
        .map(|i| ids[i % ids.len()].clone())
        .collect();
    let mut figures = BTreeMap::new();
    let mut closed_at = BTreeMap::new();
    for (server, d) in sides {
        tokio::time::sleep(args.settle).await;
        let before = d.proc.rss_kib()?;
        let streams = load::open_idle(d.proc.addr, &watched, args.streams_per_connection).await?;
        tokio::time::sleep(args.settle).await;
        let with = d.proc.rss_kib()?;
        let open = streams.len();
        streams.close();
        closed_at.insert(*server, Instant::now());
        println!(
            "  {:<9} {open} streams: RSS {:.1} -> {:.1} MiB",
            report::server_name(*server),
            mib(before),
            mib(with)
        );
        figures.insert(
            *server,
            StreamFigures {
                streams: open,
                before,
                with,
                after: 0,
            },
        );
    }
    for (server, d) in sides {
        if let Some(t) = closed_at.get(server) {
            tokio::time::sleep((*t + args.close_wait).saturating_duration_since(Instant::now()))
                .await;
        }
        let after = d.proc.rss_kib()?;
        if let Some(f) = figures.get_mut(server) {
            f.after = after;
        }
    }
    Ok(figures)
}

/// Writes the replies the reference server gives, captured from facegate: a StartSession of a Juhe session decided
/// inline, a GetResult of it, a SubmitIdentity and the first StreamStatus message of a session without inputs.
/// Returns the sessions GetResult calls cycle over (decided Juhe sessions), and what their StartSession replies
/// said (id, state) for the read-back check.
async fn capture_replies(
    one: &[Client],
    many: &[Client],
    dir: &std::path::Path,
) -> Result<(Vec<String>, Vec<(String, i32)>), String> {
    let mut client = one.first().cloned().ok_or("no connection")?;
    let start = client
        .start_session(load::juhe_inline()?)
        .await
        .map_err(|e| format!("StartSession: {e}"))?
        .into_inner();
    let (id, state) = start
        .session
        .as_ref()
        .map(|s| (s.id.clone(), s.state))
        .ok_or("StartSession answered without a session")?;
    let result = client
        .get_result(pb::GetResultRequest {
            session_id: id.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("GetResult: {e}"))?
        .into_inner();
    let empty = load::empty_sessions(one, 2).await?;
    let submit = client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: empty.first().cloned().ok_or("no session")?,
            identity: Some(load::identity()?),
        })
        .await
        .map_err(|e| format!("SubmitIdentity: {e}"))?
        .into_inner();
    let stream = client
        .stream_status(pb::StreamStatusRequest {
            session_id: empty.get(1).cloned().ok_or("no session")?,
        })
        .await
        .map_err(|e| format!("StreamStatus: {e}"))?
        .into_inner()
        .message()
        .await
        .map_err(|e| format!("StreamStatus: {e}"))?
        .ok_or("StreamStatus ended before its first message")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, bytes) in [
        (reference::START_REPLY, start.encode_to_vec()),
        (reference::SUBMIT_REPLY, submit.encode_to_vec()),
        (reference::RESULT_REPLY, result.encode_to_vec()),
        (reference::STREAM_REPLY, stream.encode_to_vec()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let r = load::run(
        many,
        Rpc::StartSession,
        64,
        0,
        RESULT_SESSIONS - 1,
        Arc::new(Targets::default()),
    )
    .await?;
    let mut started = vec![(id, state)];
    started.extend(r.started);
    Ok((started.iter().map(|(id, _)| id.clone()).collect(), started))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
