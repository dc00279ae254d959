//! The load generator: the generated tonic client over one or more HTTP/2 connections, a fixed number of calls
//! shared by `concurrency` tasks, one latency sample per call (sorted, not binned), and idle StatusStreams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate::proto::v1 as pb;
use facegate::proto::v1::verification_service_client::VerificationServiceClient;
use futures_util::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

pub type Client = VerificationServiceClient<Channel>;

/// Streams opened at once while setting up idle streams.
const OPEN_AT_ONCE: usize = 256;

/// A synthetic 1x1 JPEG (not a face): the sandbox Juhe simulator checks the image format only.
const JPEG: &[u8] = &[
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x01, 0x00, 0x48,
    0x00, 0x48, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xd9,
];

/// Opens `n` HTTP/2 connections to `addr`.
pub async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Client>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        clients.push(
            VerificationServiceClient::new(channel)
                .max_decoding_message_size(32 << 20)
                .max_encoding_message_size(32 << 20),
        );
    }
    Ok(clients)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Rpc {
    GetResult,
    /// Juhe with identity (sandbox sequence 001: VERIFIED) and probe image inline: decided at once.
    StartSession,
    /// On a Juhe session started without inputs: records the identity (the session then waits for the image).
    SubmitIdentity,
    /// StreamStatus: from the call to the first message (the snapshot); the stream is then dropped.
    StreamOpen,
    /// Setup only: a Juhe session without inputs (REQUIRES_INPUT), for SubmitIdentity and idle streams.
    StartEmpty,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::GetResult => "GetResult",
            Rpc::StartSession => "StartSession",
            Rpc::SubmitIdentity => "SubmitIdentity",
            Rpc::StreamOpen => "StreamStatus open",
            Rpc::StartEmpty => "StartSession (no inputs)",
        }
    }
}

/// The sessions calls refer to (call `i` uses `ids[i % len]`; SubmitIdentity needs one session per call).
#[derive(Default)]
pub struct Targets {
    pub get_result: Vec<String>,
    pub submit: Vec<String>,
    pub stream: Vec<String>,
}

/// One measured run.
pub struct Run {
    pub elapsed: Duration,
    /// Per call, nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// What StartSession calls returned: session id and state.
    pub started: Vec<(String, i32)>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` in ms (nearest rank).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1] as f64 / 1e6
    }
}

/// A request id no other call of this process uses.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default()
    });
    format!("bench-{run}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn identity() -> Result<pb::Identity, String> {
    Ok(pb::Identity {
        name: "测试用户".into(),
        id_number: facegate::sandbox::test_id_number(1).ok_or("no test ID number")?,
        id_type: 0,
    })
}

pub fn juhe_inline() -> Result<pb::StartSessionRequest, String> {
    Ok(pb::StartSessionRequest {
        request_id: request_id(),
        vendor: pb::Vendor::Juhe as i32,
        identity: Some(identity()?),
        images: vec![pb::FaceImage {
            data: JPEG.to_vec(),
            role: pb::ImageRole::Probe as i32,
        }],
        ..Default::default()
    })
}

pub fn juhe_empty() -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        request_id: request_id(),
        vendor: pb::Vendor::Juhe as i32,
        ..Default::default()
    }
}

fn failed(rpc: Rpc, status: tonic::Status) -> String {
    format!(
        "a {} call failed: {:?} {}",
        rpc.name(),
        status.code(),
        status.message()
    )
}

fn pick(ids: &[String], i: usize, what: &str) -> Result<String, String> {
    if ids.is_empty() {
        return Err(format!("no sessions prepared for {what}"));
    }
    Ok(ids[i % ids.len()].clone())
}

/// One call; StartSession returns the session it created.
async fn call(
    client: &mut Client,
    rpc: Rpc,
    i: usize,
    targets: &Targets,
) -> Result<Option<(String, i32)>, String> {
    match rpc {
        Rpc::GetResult => {
            let session_id = pick(&targets.get_result, i, "GetResult")?;
            let r = client
                .get_result(pb::GetResultRequest {
                    session_id,
                    ..Default::default()
                })
                .await
                .map_err(|e| failed(rpc, e))?;
            r.into_inner()
                .session
                .ok_or("GetResult answered without a session")?;
            Ok(None)
        }
        Rpc::StartSession | Rpc::StartEmpty => {
            let req = if rpc == Rpc::StartSession {
                juhe_inline()?
            } else {
                juhe_empty()
            };
            let s = client
                .start_session(req)
                .await
                .map_err(|e| failed(rpc, e))?
                .into_inner()
                .session
                .ok_or("StartSession answered without a session")?;
            Ok(Some((s.id, s.state)))
        }
        Rpc::SubmitIdentity => {
            let session_id = targets
                .submit
                .get(i)
                .cloned()
                .ok_or("fewer sessions prepared than SubmitIdentity calls")?;
            client
                .submit_identity(pb::SubmitIdentityRequest {
                    session_id,
                    identity: Some(identity()?),
                })
                .await
                .map_err(|e| failed(rpc, e))?
                .into_inner()
                .session
                .ok_or("SubmitIdentity answered without a session")?;
            Ok(None)
        }
        Rpc::StreamOpen => {
            let session_id = pick(&targets.stream, i, "StreamStatus")?;
            let mut stream = client
                .stream_status(pb::StreamStatusRequest { session_id })
                .await
                .map_err(|e| failed(rpc, e))?
                .into_inner();
            stream
                .message()
                .await
                .map_err(|e| failed(rpc, e))?
                .ok_or("StreamStatus ended before its first message")?;
            Ok(None)
        }
    }
}

/// `calls` calls of `rpc` (numbered from `first`) by `concurrency` tasks spread over `clients`' connections.
pub async fn run(
    clients: &[Client],
    rpc: Rpc,
    concurrency: usize,
    first: usize,
    calls: usize,
    targets: Arc<Targets>,
) -> Result<Run, String> {
    if clients.is_empty() {
        return Err("no connections".into());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency.max(1) {
        let mut client = clients[t % clients.len()].clone();
        let next = Arc::clone(&next);
        let targets = Arc::clone(&targets);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                let t0 = Instant::now();
                let r = call(&mut client, rpc, first + i, &targets).await?;
                latencies.push(t0.elapsed().as_nanos() as u64);
                made.extend(r);
            }
            Ok::<_, String>((latencies, made))
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    let mut made = Vec::new();
    let mut error = None;
    for t in tasks {
        match t.await {
            Ok(Ok((l, m))) => {
                latencies.extend(l);
                made.extend(m);
            }
            Ok(Err(e)) => error = error.or(Some(e)),
            Err(e) => error = error.or(Some(format!("a load task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = error {
        return Err(e);
    }
    latencies.sort_unstable();
    Ok(Run {
        elapsed,
        latencies,
        started: made,
    })
}

/// `n` sessions without inputs (REQUIRES_INPUT: they stay open and are never polled).
pub async fn empty_sessions(clients: &[Client], n: usize) -> Result<Vec<String>, String> {
    let r = run(
        clients,
        Rpc::StartEmpty,
        64,
        0,
        n,
        Arc::new(Targets::default()),
    )
    .await?;
    Ok(r.started.into_iter().map(|(id, _)| id).collect())
}

/// Reads every session back with GetResult; returns how many came back with the id and state their StartSession
/// reply had.
pub async fn read_back(clients: &[Client], started: &[(String, i32)]) -> Result<usize, String> {
    if clients.is_empty() {
        return Err("no connections".into());
    }
    let found = futures_util::stream::iter(started.iter().enumerate())
        .map(|(i, (id, state))| {
            let mut client = clients[i % clients.len()].clone();
            async move {
                let r = client
                    .get_result(pb::GetResultRequest {
                        session_id: id.clone(),
                        ..Default::default()
                    })
                    .await;
                matches!(r, Ok(r) if r.get_ref().session.as_ref().is_some_and(|s| &s.id == id && s.state == *state))
            }
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    Ok(found)
}

/// Idle StatusStreams: open, their first message received, held until dropped (streams first, then connections).
pub struct IdleStreams {
    streams: Vec<Streaming<pb::StreamStatusResponse>>,
    clients: Vec<Client>,
}

impl IdleStreams {
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Closes every stream, then every connection.
    pub fn close(mut self) {
        self.streams.clear();
        self.clients.clear();
    }
}

/// Opens one stream per entry of `sessions` (ids may repeat) over connections of `per_connection` streams each.
pub async fn open_idle(
    addr: SocketAddr,
    sessions: &[String],
    per_connection: usize,
) -> Result<IdleStreams, String> {
    let per_connection = per_connection.max(1);
    let clients = connect(addr, sessions.len().div_ceil(per_connection)).await?;
    let opened: Vec<Result<Streaming<pb::StreamStatusResponse>, String>> =
        futures_util::stream::iter(sessions.iter().enumerate())
            .map(|(i, id)| {
                let mut client = clients[i / per_connection].clone();
                async move {
                    let mut stream = client
                        .stream_status(pb::StreamStatusRequest {
                            session_id: id.clone(),
                        })
                        .await
                        .map_err(|e| failed(Rpc::StreamOpen, e))?
                        .into_inner();
                    stream
                        .message()
                        .await
                        .map_err(|e| failed(Rpc::StreamOpen, e))?
                        .ok_or("StreamStatus ended before its first message")?;
                    Ok(stream)
                }
            })
            .buffer_unordered(OPEN_AT_ONCE)
            .collect()
            .await;
    let streams = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(IdleStreams { streams, clients })
}
