//! The transport under both listeners: an accept loop that sets TCP_NODELAY on every accepted socket and, with
//! `grpc.tls` / `http.tls`, completes a TLS handshake per connection (spawned and time-bounded, so a slow or failing
//! client never holds up the next accept). Connections come out as [`Conn`], which reports a [`PeerInfo`] to tonic
//! (`Connected::ConnectInfo`) and is an `axum::serve::Listener`'s IO for the HTTP listener.

pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
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

/// An accepted connection: plaintext TCP or TLS over TCP, with what is known of the peer.
pub struct Conn {
    io: Io,
    remote: SocketAddr,
    peer: PeerInfo,
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
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
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
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
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
pub fn accept(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsSource>,
    stop: watch::Receiver<bool>,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let acceptors = tls.map(|t| t.spawn_reloader(stop.clone()));
    tokio::spawn(accept_loop(name, listener, acceptors, tx, stop));
    rx
}

/// [`accept`] as the stream tonic's `serve_with_incoming_shutdown` takes.
pub fn incoming(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsSource>,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Conn, io::Error>> {
    ReceiverStream::new(accept(name, listener, tls, stop)).map(Ok)
}

async fn accept_loop(
    name: &'static str,
    listener: TcpListener,
    tls: Option<tls::Acceptors>,
    tx: mpsc::Sender<Conn>,
    mut stop: watch::Receiver<bool>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
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
                let conn = Conn {
                    io: Io::Plain(stream),
                    remote,
                    peer,
                };
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
                            let conn = Conn {
                                io: Io::Tls(Box::new(stream)),
                                remote,
                                peer: PeerInfo {
                                    client_subject,
                                    ..peer
                                },
                            };
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
