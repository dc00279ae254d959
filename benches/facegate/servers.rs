//! The two server processes: facegate itself (`serve --sandbox`, its output in a log file) and the reference server
//! (this binary again with `--reference-server`), each on a free loopback port, timed from spawn to a health
//! Check answering SERVING, and measured by their resident set size.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The service whose health both servers report.
const SERVICE: &str = "facegate.v1.VerificationService";
/// Longest a server may take to answer SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A server process of this run; killed when dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    /// From spawn to the first health Check answering SERVING.
    pub startup: Duration,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// VmRSS from /proc/<pid>/status, in KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.child.id());
        let status =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no VmRSS in {path}"))
    }
}

/// A loopback port that was free a moment ago.
fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn log_file(path: &Path) -> Result<(Stdio, Stdio), String> {
    let f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let g = f
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

/// Starts facegate with the README's sandbox settings (`serve --sandbox`, default log level, embedded SQLite store
/// in `dir`) and waits until it is SERVING.
pub async fn facegate(dir: &Path) -> Result<Proc, String> {
    let grpc = free_addr()?;
    let http = free_addr()?;
    let config = dir.join("facegate.toml");
    let db = dir.join("facegate.db");
    std::fs::write(
        &config,
        format!(
            "[grpc]\nlisten = \"{grpc}\"\n\n[http]\nlisten = \"{http}\"\n\n[store]\nsqlite_path = {:?}\n",
            db.display().to_string()
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let log = dir.join("facegate.log");
    let (out, err) = log_file(&log)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facegate"));
    cmd.arg("--config")
        .arg(&config)
        .args(["serve", "--sandbox"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // The default log level and only this file's settings: nothing from the benchmark's environment.
    cmd.env_remove("RUST_LOG").env_remove("FACEGATE_CONFIG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FACEGATE__") {
            cmd.env_remove(k);
        }
    }
    spawn(cmd, grpc, log).await
}

/// Starts the reference server (this binary with `--reference-server`), replying with the messages in `replies`.
pub async fn reference(dir: &Path, replies: &Path) -> Result<Proc, String> {
    let grpc = free_addr()?;
    let log = dir.join("reference.log");
    let (out, err) = log_file(&log)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--reference-server")
        .arg("--listen")
        .arg(grpc.to_string())
        .arg("--replies")
        .arg(replies)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err);
    spawn(cmd, grpc, log).await
}

async fn spawn(mut cmd: Command, addr: SocketAddr, log: PathBuf) -> Result<Proc, String> {
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let mut proc = Proc {
        child,
        addr,
        startup: Duration::ZERO,
        log,
    };
    proc.startup = wait_serving(&mut proc, started).await?;
    Ok(proc)
}

async fn wait_serving(proc: &mut Proc, started: Instant) -> Result<Duration, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", proc.addr))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(200))
        .tcp_nodelay(true);
    let mut client = None;
    while started.elapsed() < START_TIMEOUT {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!(
                "the server on {} exited with {status} before serving (log: {})",
                proc.addr,
                proc.log.display()
            ));
        }
        if client.is_none() {
            client = endpoint.connect().await.ok().map(HealthClient::new);
        }
        if let Some(c) = client.as_mut() {
            let answer = c
                .check(HealthCheckRequest {
                    service: SERVICE.into(),
                })
                .await;
            match answer {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => {
                    return Ok(started.elapsed())
                }
                Ok(_) => {}
                // Not registered yet, or the connection went away: connect again.
                Err(_) => client = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!(
        "the server on {} did not answer SERVING within {START_TIMEOUT:?} (log: {})",
        proc.addr,
        proc.log.display()
    ))
}
