//! The transport under both listeners: an accept loop that sets TCP_NODELAY on every accepted socket and, with
//! `grpc.tls` / `http.tls`, completes a TLS handshake per connection (spawned and time-bounded, so a slow or failing
//! client never holds up the next accept). Connections come out as [`Conn`], which reports a [`PeerInfo`] to tonic
//! (`Connected::ConnectInfo`) and is the IO of the HTTP listener's connections.
//!
//! Idle connections cannot pile up ([`Limits`]): each listener holds at most `max_connections` (a connection
//! accepted beyond it is closed at once, with one warning per [`REFUSAL_LOG_INTERVAL`], and the loop goes on
//! accepting), and a connection that has not sent its first [`PREFACE_BYTES`] bytes (the HTTP/2 client preface, or
//! an HTTP/1 request that got an answer) within `preface_timeout` of being handed out fails its next read, so the
//! server closes it.

pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::grpc::conn::PeerInfo;

pub use tls::TlsSource;

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once; accepting waits while this many are open.
const MAX_PENDING_HANDSHAKES: usize = 512;
/// Connections handed over but not yet taken by the server.
const QUEUE: usize = 64;
/// Length of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`): a connection that has sent this
/// much is past its preface, whatever protocol it speaks.
pub const PREFACE_BYTES: usize = 24;
/// At most one "connection limit reached" warning per listener in this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What one listener allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once (handshaking, queued or served).
    pub max_connections: usize,
    /// How long a handed-out connection may take to send its first [`PREFACE_BYTES`] bytes.
    pub preface_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            preface_timeout: Duration::from_secs(5),
        }
    }
}

/// Descriptors kept free for everything but the listeners' connections (store, vendor calls, logs, TLS files).
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The connection limits `wanted` (per listener) scaled down so that together they stay [`RESERVED_DESCRIPTORS`]
/// below `open_files` (the process's RLIMIT_NOFILE soft limit), each at least 1. `None` when they fit already.
pub fn fit_to_open_files(wanted: &[usize], open_files: u64) -> Option<Vec<usize>> {
    let total: u64 = wanted.iter().map(|w| *w as u64).sum();
    let room = open_files
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(wanted.len() as u64);
    if total <= room {
        return None;
    }
    Some(
        wanted
            .iter()
            .map(|w| {
                let share = (*w as u128 * room as u128 / total.max(1) as u128) as usize;
                share.max(1)
            })
            .collect(),
    )
}

/// The soft limit on open files (RLIMIT_NOFILE) from `/proc/self/limits`, where there is one.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&text)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    // "unlimited" has no bound to keep below.
    soft.parse().ok()
}

/// Fails a connection's reads once its preface deadline passes before [`PREFACE_BYTES`] bytes came in (or an answer
/// went out after a first byte: a short HTTP/1.0 request).
struct Preface {
    deadline: Pin<Box<Sleep>>,
    received: usize,
}

/// An accepted connection: plaintext TCP or TLS over TCP, with what is known of the peer.
pub struct Conn {
    io: Io,
    remote: SocketAddr,
    peer: PeerInfo,
    /// Armed until the connection is past its preface.
    preface: Option<Preface>,
    /// The listener's connection slot, given back when the connection is dropped.
    _slot: Option<OwnedSemaphorePermit>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// What is known of the peer: its address and, with mTLS, the verified client certificate's subject.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The TCP socket under the connection.
    pub fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }

    /// The remote address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    fn new(io: Io, remote: SocketAddr, peer: PeerInfo, slot: OwnedSemaphorePermit) -> Self {
        Self {
            io,
            remote,
            peer,
            preface: None,
            _slot: Some(slot),
        }
    }

    /// Starts the preface deadline (when the connection is handed to the server).
    fn arm(mut self, timeout: Duration) -> Self {
        self.preface = Some(Preface {
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
            received: 0,
        });
        self
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let Some(preface) = &mut this.preface else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                preface.received += buf.filled().len() - before;
                if preface.received >= PREFACE_BYTES {
                    this.preface = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match preface.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.preface = None;
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the preface timeout",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl Conn {
    /// An answer written after the peer sent something: the connection is past its preface (an HTTP/2 server's
    /// SETTINGS go out before anything is read, so they do not count).
    fn answered(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0)
            && self.preface.as_ref().is_some_and(|p| p.received > 0)
        {
            self.preface = None;
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        this.answered(&polled);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.answered(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts on `listener` until `stop` turns true (or nobody takes connections any more), handing out each
/// connection once it is ready: TCP_NODELAY set, and with `tls` the handshake done. `name` labels log lines.
/// The default [`Limits`] apply ([`accept_with`] takes others).
pub fn accept(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsSource>,
    stop: watch::Receiver<bool>,
) -> mpsc::Receiver<Conn> {
    accept_with(name, listener, tls, Limits::default(), stop)
}

/// [`accept`] with `limits`.
pub fn accept_with(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsSource>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let acceptors = tls.map(|t| t.spawn_reloader(stop.clone()));
    tokio::spawn(accept_loop(name, listener, acceptors, limits, tx, stop));
    rx
}

/// [`accept`] as the stream tonic's `serve_with_incoming_shutdown` takes.
pub fn incoming(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsSource>,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Conn, io::Error>> {
    incoming_with(name, listener, tls, Limits::default(), stop)
}

/// [`incoming`] with `limits`.
pub fn incoming_with(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsSource>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Conn, io::Error>> {
    ReceiverStream::new(accept_with(name, listener, tls, limits, stop)).map(Ok)
}

/// Counts connections closed at the limit and says so at most once per [`REFUSAL_LOG_INTERVAL`].
struct Refusals {
    name: &'static str,
    limit: usize,
    since_report: u64,
    last_report: Option<Instant>,
}

impl Refusals {
    /// Counts a closed connection; true when this one was reported.
    fn refused(&mut self) -> bool {
        self.since_report += 1;
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            return false;
        }
        tracing::warn!(
            listener = self.name,
            max_connections = self.limit,
            closed = self.since_report,
            "connection limit reached: closing new connections until open ones end"
        );
        self.since_report = 0;
        self.last_report = Some(now);
        true
    }
}

async fn accept_loop(
    name: &'static str,
    listener: TcpListener,
    tls: Option<tls::Acceptors>,
    limits: Limits,
    tx: mpsc::Sender<Conn>,
    mut stop: watch::Receiver<bool>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let mut refusals = Refusals {
        name,
        limit: max,
        since_report: 0,
        last_report: None,
    };
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&pending).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.wait_for(|v| *v) => return,
            _ = tx.closed() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|v| *v) => return,
            _ = tx.closed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning; the listener stays up.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the limit the connection is closed at once (dropped): the loop never waits for a slot, so the
        // connections that are served keep being served and the listener's backlog does not fill up.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            let _reported = refusals.refused();
            continue;
        };
        // A reply written in two parts (message, then trailers) must not wait for the peer's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(listener = name, peer = %remote, error = %e, "cannot set TCP_NODELAY");
        }
        let peer = PeerInfo {
            remote_addr: Some(remote),
            client_subject: None,
        };
        match &tls {
            None => {
                drop(permit);
                let conn =
                    Conn::new(Io::Plain(stream), remote, peer, slot).arm(limits.preface_timeout);
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
            Some(acceptors) => {
                let acceptor = acceptors.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let client_subject = tls::client_subject(stream.get_ref().1);
                            let peer = PeerInfo {
                                client_subject,
                                ..peer
                            };
                            let conn = Conn::new(Io::Tls(Box::new(stream)), remote, peer, slot)
                                .arm(limits.preface_timeout);
                            let _ = tx.send(conn).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, peer = %remote, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, peer = %remote, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
}

/// The HTTP listener for `axum::serve`: connections from [`accept`].
pub struct HttpListener {
    conns: mpsc::Receiver<Conn>,
    local: SocketAddr,
}

impl HttpListener {
    /// Accepts on `listener` (see [`accept`]).
    pub fn new(
        listener: TcpListener,
        tls: Option<TlsSource>,
        stop: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            conns: accept("http", listener, tls, stop),
            local,
        })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.conns.recv().await {
            Some(conn) => {
                let remote = conn.remote;
                (conn, remote)
            }
            // The accept loop stopped: the server is shutting down and stops asking.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::TlsConfig;

    struct Pki {
        ca_pem: String,
        server: TlsConfig,
        client_cert: String,
        client_key: String,
    }

    /// A CA, a server certificate for localhost and a client certificate `CN=orders-service,O=Shop`.
    fn pki(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test ca");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "orders-service");
        client_params
            .distinguished_name
            .push(DnType::OrganizationName, "Shop");
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca_pem: ca_cert.pem(),
            server: TlsConfig {
                cert_file: write("server.crt", &server_cert.pem()),
                key_file: write("server.key", &server_key.serialize_pem()),
                client_ca_file: write("ca.crt", &ca_cert.pem()),
                require_client_cert: true,
                reload_interval_ms: 100,
            },
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        }
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_and_the_peer_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = accept("test", listener, None, stop_rx);
        let client = TcpStream::connect(addr).await.unwrap();
        let conn = conns.recv().await.unwrap();
        assert!(conn.tcp().nodelay().unwrap(), "TCP_NODELAY is on");
        assert_eq!(conn.peer().remote_addr, Some(client.local_addr().unwrap()));
        assert_eq!(conn.peer().client_subject, None);
        let _ = stop_tx.send(true);
        assert!(conns.recv().await.is_none(), "the loop stops");
    }

    #[tokio::test]
    async fn a_stalled_handshake_does_not_hold_up_the_next_client() {
        crate::app::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut pki = pki(dir.path());
        pki.server.client_ca_file = Default::default();
        pki.server.require_client_cert = false;
        let source = TlsSource::load("grpc.tls", &pki.server, tls::GRPC_ALPN)
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut conns = accept("test", listener, source, stop_rx);
        // Connects and says nothing: its handshake waits (up to HANDSHAKE_TIMEOUT).
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let client_config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let client = tokio::spawn(async move { connector.connect(name, tcp).await.unwrap() });
        let conn = conns.recv().await.unwrap();
        let client = client.await.unwrap();
        assert_eq!(
            conn.peer().remote_addr,
            Some(client.get_ref().0.local_addr().unwrap())
        );
        assert!(conn.tcp().nodelay().unwrap(), "TCP_NODELAY is on under TLS");
        assert_eq!(client.get_ref().1.alpn_protocol(), None, "no ALPN offered");
        // Served while the silent client's handshake is still open (not after it timed out and was closed).
        let mut buf = [0u8; 8];
        assert_eq!(
            silent.try_read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max_connections: usize, preface_timeout: Duration) -> Limits {
        Limits {
            max_connections,
            preface_timeout,
        }
    }

    /// A test listener's address, its accepted connections under `limits`, and the sender that stops it.
    async fn acceptor(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        mpsc::Receiver<Conn>,
        watch::Sender<bool>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let conns = accept_with("test", listener, None, limits, stop_rx);
        (addr, conns, stop_tx)
    }

    #[tokio::test]
    async fn a_silent_connection_fails_its_read_at_the_preface_deadline() {
        let (addr, mut conns, _stop_tx) = acceptor(limits(10, Duration::from_millis(200))).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut conn = conns.recv().await.unwrap();
        let mut buf = [0u8; 64];
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // The rest watches when the deadline stops applying: under a deadline a slow test thread cannot overrun.
        let (addr, mut conns, _stop_tx) = acceptor(limits(10, Duration::from_secs(30))).await;
        // One that sends its preface (in two parts) is past the deadline for good.
        let mut talker = TcpStream::connect(addr).await.unwrap();
        let mut conn = conns.recv().await.unwrap();
        talker.write_all(&[b'P'; 10]).await.unwrap();
        let mut got = 0;
        while got < 10 {
            got += conn.read(&mut buf).await.unwrap();
        }
        assert!(conn.preface.is_some(), "10 bytes are not a preface");
        talker.write_all(&[b'R'; PREFACE_BYTES - 10]).await.unwrap();
        while got < PREFACE_BYTES {
            got += conn.read(&mut buf).await.unwrap();
        }
        assert!(conn.preface.is_none(), "past the preface");

        // A short request that got an answer is past it too; the server's first words alone are not.
        let mut short = TcpStream::connect(addr).await.unwrap();
        let mut conn = conns.recv().await.unwrap();
        conn.write_all(b"settings").await.unwrap();
        assert!(conn.preface.is_some(), "written before anything was read");
        short.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0 && conn.preface.is_some());
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
        assert!(conn.preface.is_none(), "answered");
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_and_accepting_goes_on() {
        let (addr, mut conns, _stop_tx) = acceptor(limits(2, Duration::from_secs(3600))).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = conns.recv().await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = conns.recv().await.unwrap();
        // Over the limit: closed by the server without a word, several times over.
        for _ in 0..3 {
            let mut over = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 8];
            assert!(matches!(over.read(&mut buf).await, Ok(0) | Err(_)));
        }
        assert!(
            conns.try_recv().is_err(),
            "nothing over the limit was handed out"
        );
        // A slot comes back when a connection ends.
        drop(first);
        let c = TcpStream::connect(addr).await.unwrap();
        let next = conns.recv().await.unwrap();
        assert_eq!(next.peer().remote_addr, Some(c.local_addr().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_reported_once_per_interval() {
        let mut r = Refusals {
            name: "test",
            limit: 1,
            since_report: 0,
            last_report: None,
        };
        assert!(r.refused(), "the first is reported");
        for _ in 0..1000 {
            assert!(!r.refused());
        }
        assert_eq!(r.since_report, 1000);
        tokio::time::advance(REFUSAL_LOG_INTERVAL).await;
        assert!(r.refused(), "the next interval reports again");
        assert_eq!(r.since_report, 0, "with the count since the last report");
    }

    #[test]
    fn limits_are_fitted_below_the_open_file_limit() {
        assert_eq!(fit_to_open_files(&[10_000, 4_096], 1_048_576), None);
        let fitted = fit_to_open_files(&[10_000, 4_096], 1024).unwrap();
        assert!(fitted.iter().sum::<usize>() as u64 <= 1024 - RESERVED_DESCRIPTORS);
        assert!(fitted[0] > fitted[1] && fitted[1] > 0);
        assert_eq!(fit_to_open_files(&[10, 10], 100), Some(vec![1, 1]));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
    }

    /// The verified client certificate's subject reaches a tonic service's request extensions as PeerInfo.
    #[tokio::test]
    async fn the_client_certificate_subject_reaches_the_request_extensions() {
        crate::app::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let source = TlsSource::load("grpc.tls", &pki.server, tls::GRPC_ALPN)
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let seen = Arc::new(std::sync::Mutex::new(Vec::<PeerInfo>::new()));
        let record = Arc::clone(&seen);
        let (_reporter, health) = tonic_health::server::health_reporter();
        let mut signal = stop_rx.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(tonic::service::InterceptorLayer::new(
                    move |req: tonic::Request<()>| {
                        if let Some(p) = req.extensions().get::<PeerInfo>() {
                            record.lock().unwrap().push(p.clone());
                        }
                        Ok(req)
                    },
                ))
                .add_service(health)
                .serve_with_incoming_shutdown(
                    incoming("grpc", listener, source, stop_rx),
                    async move {
                        let _ = signal.wait_for(|v| *v).await;
                    },
                ),
        );
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &pki.client_cert,
                &pki.client_key,
            ))
            .domain_name("localhost");
        let channel = tonic::transport::Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            seen[0].client_subject.as_deref(),
            Some("CN=orders-service,O=Shop")
        );
        assert!(seen[0].remote_addr.is_some());
        let _ = stop_tx.send(true);
        server.await.unwrap().unwrap();
    }
}
