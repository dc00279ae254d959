//! TLS and mTLS of the listeners, with a CA and certificates generated at test time: calls over TLS, plaintext
//! refused, client certificates required, certificate rotation on disk while a stream stays open, HTTPS on the HTTP
//! listener, and start-up refusals that name the config key.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use facegate::app;
use facegate::config::{Config, TlsConfig};
use facegate::proto::v1 as pb;
use facegate::proto::v1::verification_service_client::VerificationServiceClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A test CA that issues server and client certificates into a directory.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "facegate test CA");
        let ca = params.self_signed(&key).unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join("ca.crt"), &ca_pem).unwrap();
        Self {
            dir: dir.to_owned(),
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` with common name `cn`: (certificate PEM, key PEM).
    fn server(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client identity with subject `CN=<cn>,O=Shop`.
    fn client(&self, cn: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Shop");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity::from_pem(cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate as `server.crt` / `server.key` the way a Kubernetes Secret update does: new
    /// files, then a rename over the old paths.
    fn install_server(&self, cn: &str) {
        let (cert, key) = self.server(cn);
        for (name, text) in [("server.key", key), ("server.crt", cert)] {
            let tmp = self.dir.join(format!(".{name}.new"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.join(name)).unwrap();
        }
    }

    /// `grpc.tls` / `http.tls` for the installed server certificate; with the CA for client certificates when
    /// `mtls` is `Some(require_client_cert)`.
    fn tls_config(&self, mtls: Option<bool>) -> TlsConfig {
        TlsConfig {
            cert_file: self.dir.join("server.crt"),
            key_file: self.dir.join("server.key"),
            client_ca_file: if mtls.is_some() {
                self.dir.join("ca.crt")
            } else {
                PathBuf::new()
            },
            require_client_cert: mtls.unwrap_or(false),
            reload_interval_ms: 100,
        }
    }
}

async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<Identity>,
) -> Result<VerificationServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(VerificationServiceClient::new(channel))
}

/// A Juhe call that must succeed.
async fn juhe_call(
    client: &mut VerificationServiceClient<Channel>,
    request_id: &str,
) -> pb::Session {
    client
        .start_session(juhe_inline(request_id, 1))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
}

/// Whether a call through `client` fails, the connection attempt included.
async fn call_fails(
    client: Result<VerificationServiceClient<Channel>, tonic::transport::Error>,
    request_id: &str,
) -> bool {
    match client {
        Err(_) => true,
        Ok(mut c) => c.start_session(juhe_inline(request_id, 1)).await.is_err(),
    }
}

fn sandbox_with_tls(dir: &Path, tls: TlsConfig) -> Config {
    let mut config = sandbox_config(&dir.join("facegate.db"));
    config.grpc.tls = tls;
    config
}

/// The common name of the certificate a new TLS connection to `addr` is served.
async fn served_common_name(addr: SocketAddr, ca_pem: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let conn = tls.get_ref().1;
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]), "gRPC negotiates h2");
    let der = conn.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    cn
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn grpc_over_tls_works_and_plaintext_to_the_tls_port_fails() {
    app::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.install_server("facegate-1");
    // Client certificates are verified when sent, not required.
    let config = sandbox_with_tls(dir.path(), pki.tls_config(Some(false)));
    let running = app::start(config, app::Mode::sandbox()).await.unwrap();
    let addr = running.grpc_addr;

    let mut anonymous = tls_channel(addr, &pki.ca_pem, None).await.unwrap();
    let s = juhe_call(&mut anonymous, "tls-anon").await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    let mut with_cert = tls_channel(addr, &pki.ca_pem, Some(pki.client("orders-service")))
        .await
        .unwrap();
    juhe_call(&mut with_cert, "tls-cert").await;

    // Another CA's client certificate is refused even though certificates are optional.
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other_dir.path()).client("orders-service");
    assert!(
        call_fails(
            tls_channel(addr, &pki.ca_pem, Some(stranger)).await,
            "tls-stranger"
        )
        .await
    );

    // Plaintext HTTP/2 to the TLS port.
    let plain = async {
        Ok(VerificationServiceClient::new(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await?,
        ))
    };
    assert!(call_fails(plain.await, "tls-plain").await);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn mtls_with_required_client_certificates_refuses_clients_without_one() {
    app::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.install_server("facegate-1");
    let config = sandbox_with_tls(dir.path(), pki.tls_config(Some(true)));
    let running = app::start(config, app::Mode::sandbox()).await.unwrap();
    let addr = running.grpc_addr;

    assert!(call_fails(tls_channel(addr, &pki.ca_pem, None).await, "mtls-none").await);
    let mut client = tls_channel(addr, &pki.ca_pem, Some(pki.client("orders-service")))
        .await
        .unwrap();
    let s = juhe_call(&mut client, "mtls-ok").await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_an_open_stream_finishes() {
    app::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.install_server("facegate-1");
    let mut config = sandbox_with_tls(dir.path(), pki.tls_config(None));
    fast_polling(&mut config);
    let running = app::start(config, app::Mode::sandbox()).await.unwrap();
    let addr = running.grpc_addr;
    assert_eq!(served_common_name(addr, &pki.ca_pem).await, "facegate-1");

    let mut client = tls_channel(addr, &pki.ca_pem, None).await.unwrap();
    let session = client
        .start_session(baidu_inline("rotate-baidu", "", 1))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&session), pb::SessionState::AwaitingUser);
    let mut stream = client
        .stream_status(pb::StreamStatusRequest {
            session_id: session.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap().session.unwrap();
    assert_eq!(state(&first), pb::SessionState::AwaitingUser);

    pki.install_server("facegate-2");
    // The reloader checks every 100 ms; new connections get the new certificate once it has.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while served_common_name(addr, &pki.ca_pem).await != "facegate-2" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut after = tls_channel(addr, &pki.ca_pem, None).await.unwrap();
    juhe_call(&mut after, "rotate-juhe").await;

    // The stream opened before the rotation carries on to the end of the session.
    Browser::new().choose(&session.user_url, "pass").await;
    let mut last = first;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
    {
        last = msg.unwrap().session.unwrap();
    }
    assert_eq!(state(&last), pb::SessionState::Verified);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_http_listener_serves_https_with_h2_and_refuses_plaintext() {
    app::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.install_server("facegate-http");
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    // The sandbox's adapters reach the simulators over loopback plaintext, so HTTPS is for production mode.
    common::live_unauthenticated(&mut config);
    config.http.tls = pki.tls_config(None);
    let running = app::start(config, app::Mode::Production).await.unwrap();
    let addr = running.http_addr;

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let https = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let r = https
        .get(format!("https://localhost:{}/metrics", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2");

    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn start_up_refuses_unreadable_or_invalid_tls_files_naming_the_key() {
    app::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.install_server("facegate-1");

    let mut tls = pki.tls_config(None);
    tls.cert_file = dir.path().join("missing.crt");
    let e = app::start(sandbox_with_tls(dir.path(), tls), app::Mode::sandbox())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("grpc.tls.cert_file"), "{e}");

    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let mut tls = pki.tls_config(Some(true));
    tls.key_file = dir.path().join("bad.key");
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    common::live_unauthenticated(&mut config);
    config.http.tls = tls;
    let e = app::start(config, app::Mode::Production)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("http.tls.key_file"), "{e}");
}

#[tokio::test]
async fn start_up_refuses_plaintext_vendor_urls_unless_opted_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    common::live_unauthenticated(&mut config);
    config.megvii.page_url = "http://api.megvii.com/faceid/lite/do".into();
    let e = app::start(config.clone(), app::Mode::Production)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("megvii.page_url"), "{e}");
    config.megvii.allow_plaintext_http = true;
    let running = app::start(config, app::Mode::Production).await.unwrap();
    running.shutdown().await.unwrap();
}

/// mTLS end to end: the subject of a verified client certificate authenticates a configured caller (its tenant and
/// scopes apply), a certificate whose subject no caller has is refused, and without any certificate a bearer key
/// still works (require_client_cert = false) while no credentials at all are refused.
#[tokio::test]
async fn a_verified_client_certificate_authenticates_its_caller() {
    app::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.install_server("facegate-mtls");
    let mut config = sandbox_with_tls(dir.path(), pki.tls_config(Some(false)));
    config.auth.callers = vec![
        facegate::config::CallerConfig {
            id: "orders-service".into(),
            tenant: "shop".into(),
            scopes: vec!["sessions:create".into(), "sessions:read".into()],
            mtls_subject: "CN=orders-service, O=Shop".into(),
            ..Default::default()
        },
        caller_config(
            "reports",
            "analytics",
            &["sessions:read"],
            "reports-key-0123",
        ),
    ];
    let running = app::start(config, app::Mode::sandbox()).await.unwrap();
    let addr = running.grpc_addr;

    let mut orders = tls_channel(addr, &pki.ca_pem, Some(pki.client("orders-service")))
        .await
        .unwrap();
    let session = juhe_call(&mut orders, "mtls-1").await;
    assert_eq!(state(&session), pb::SessionState::Verified);
    let read = orders
        .get_result(pb::GetResultRequest {
            session_id: session.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.session.unwrap().id, session.id);
    // Its scopes are the caller's: no sessions:cancel.
    let denied = orders
        .cancel_session(pb::CancelSessionRequest {
            session_id: session.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&denied).0, "MISSING_SCOPE");

    // A caller of another tenant, by bearer key over TLS without a client certificate: the session does not exist.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reports = VerificationServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some("reports-key-0123")),
    );
    let hidden = reports
        .get_result(pb::GetResultRequest {
            session_id: session.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    // The same TLS connection without any credential.
    let mut anonymous = VerificationServiceClient::new(channel);
    let refused = anonymous
        .get_result(pb::GetResultRequest {
            session_id: session.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&refused).0, "UNAUTHENTICATED");

    // A certificate from the right CA whose subject no caller has.
    let mut intruder = tls_channel(addr, &pki.ca_pem, Some(pki.client("intruder")))
        .await
        .unwrap();
    let refused = intruder
        .start_session(juhe_inline("mtls-intruder", 1))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    running.shutdown().await.unwrap();
}
