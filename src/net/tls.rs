//! TLS of a listener: a rustls `ServerConfig` built from PEM files named by a [`TlsConfig`], with optional client
//! certificate verification (mTLS), rebuilt when the files change so the next handshake uses the new certificate.
//!
//! One crypto provider in the process: ring, passed explicitly so no process default is needed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::grpc::conn::normalize_dn;

/// ALPN of the gRPC listener (gRPC is HTTP/2 only).
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP listener.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// Largest PEM file read (a chain or a CA bundle is a few KB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The file contents a `ServerConfig` was built from. No `Debug`: it holds the private key.
#[derive(Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

/// The TLS of one listener: the current `ServerConfig` and what is needed to rebuild it.
pub struct TlsSource {
    /// The config key prefix (`grpc.tls`, `http.tls`), named in every message.
    prefix: &'static str,
    config: TlsConfig,
    alpn: &'static [&'static [u8]],
    contents: Contents,
    current: Arc<ServerConfig>,
}

impl TlsSource {
    /// Reads and checks the files of `config` (the section at `prefix`); `None` while `cert_file` is empty. Errors
    /// name the config key of the file at fault.
    pub async fn load(
        prefix: &'static str,
        config: &TlsConfig,
        alpn: &'static [&'static [u8]],
    ) -> Result<Option<Self>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let contents = read_all(prefix, config).await?;
        let current = Arc::new(build(prefix, config, alpn, &contents)?);
        Ok(Some(Self {
            prefix,
            config: config.clone(),
            alpn,
            contents,
            current,
        }))
    }

    /// The config key prefix.
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// Starts checking the files every `reload_interval_ms` until `stop`; returns the acceptors' view of the
    /// current config.
    pub fn spawn_reloader(self, stop: watch::Receiver<bool>) -> Acceptors {
        let (tx, rx) = watch::channel(Arc::clone(&self.current));
        tokio::spawn(self.reload_loop(tx, stop));
        Acceptors { current: rx }
    }

    async fn reload_loop(
        mut self,
        tx: watch::Sender<Arc<ServerConfig>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let interval = Duration::from_millis(self.config.reload_interval_ms.max(100));
        let mut state = ReloadState::default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|v| *v) => return,
                _ = tx.closed() => return,
            }
            if let Some(server_config) = self.reload(&mut state).await {
                let _ = tx.send(server_config);
            }
        }
    }

    /// Re-reads the files; a new `ServerConfig` when they changed and are valid. Files that do not read or build
    /// keep the current config and are reported once (not at every check).
    async fn reload(&mut self, state: &mut ReloadState) -> Option<Arc<ServerConfig>> {
        // Re-read by path each time: a Kubernetes Secret update swaps a symlink, so an open fd would go stale.
        let contents = match read_all(self.prefix, &self.config).await {
            Ok(c) => {
                state.read_error = None;
                c
            }
            Err(e) => {
                if state.read_error.as_deref() != Some(e.as_str()) {
                    tracing::error!(error = %e, "TLS files cannot be read; keeping the current certificate");
                    state.read_error = Some(e);
                }
                return None;
            }
        };
        if contents == self.contents || state.rejected.as_ref() == Some(&contents) {
            return None;
        }
        match build(self.prefix, &self.config, self.alpn, &contents) {
            Ok(server_config) => {
                let server_config = Arc::new(server_config);
                self.current = Arc::clone(&server_config);
                self.contents = contents;
                state.rejected = None;
                tracing::info!(
                    tls = self.prefix,
                    "TLS files changed: new connections get the new certificate"
                );
                Some(server_config)
            }
            Err(e) => {
                tracing::error!(error = %e, "changed TLS files are not valid; keeping the current certificate");
                state.rejected = Some(contents);
                None
            }
        }
    }
}

/// What the reloader remembers between checks.
#[derive(Default)]
struct ReloadState {
    /// The last contents that failed to build.
    rejected: Option<Contents>,
    /// The last read error.
    read_error: Option<String>,
}

/// Hands out an acceptor with the newest `ServerConfig`.
#[derive(Clone)]
pub struct Acceptors {
    current: watch::Receiver<Arc<ServerConfig>>,
}

impl Acceptors {
    /// An acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.borrow()))
    }
}

/// The subject of the client certificate the handshake verified, in [`normalize_dn`] form (RDNs in certificate
/// order, e.g. `CN=orders-service,O=Shop`); `None` when the client sent none.
pub fn client_subject(conn: &ServerConnection) -> Option<String> {
    let der = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(normalize_dn(&cert.subject().to_string()))
}

async fn read_all(prefix: &str, config: &TlsConfig) -> Result<Contents, String> {
    let cert = read_pem(prefix, "cert_file", &config.cert_file).await?;
    let key = read_pem(prefix, "key_file", &config.key_file).await?;
    let ca = if config.client_ca_file.as_os_str().is_empty() {
        None
    } else {
        Some(read_pem(prefix, "client_ca_file", &config.client_ca_file).await?)
    };
    Ok(Contents { cert, key, ca })
}

async fn read_pem(prefix: &str, field: &str, path: &Path) -> Result<Vec<u8>, String> {
    let name = || format!("{prefix}.{field} ({})", path.display());
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: cannot read: {e}", name()))?;
    let mut out = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|e| format!("{}: cannot read: {e}", name()))?;
    if out.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{}: larger than {MAX_PEM_BYTES} bytes", name()));
    }
    Ok(out)
}

/// Why a PEM file did not parse, without echoing any of its lines (a key file's lines are key material).
fn pem_problem(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("contains no PEM {what}"),
        pem::Error::Io(e) => format!("cannot read: {e}"),
        _ => format!("is not a valid PEM {what}"),
    }
}

fn certificates(
    prefix: &str,
    field: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let name = format!("{prefix}.{field} ({})", path.display());
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name}: {}", pem_problem(&e, "certificate")))?;
    if certs.is_empty() {
        return Err(format!("{name}: contains no PEM certificate"));
    }
    Ok(certs)
}

fn build(
    prefix: &str,
    config: &TlsConfig,
    alpn: &[&[u8]],
    contents: &Contents,
) -> Result<ServerConfig, String> {
    let certs = certificates(prefix, "cert_file", &config.cert_file, &contents.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| {
        format!(
            "{prefix}.key_file ({}): {}",
            config.key_file.display(),
            pem_problem(&e, "private key (PKCS#8, PKCS#1 or SEC1)")
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{prefix}: {e}"))?;
    let builder = match &contents.ca {
        Some(ca) => {
            let ca_name = format!(
                "{prefix}.client_ca_file ({})",
                config.client_ca_file.display()
            );
            let mut roots = RootCertStore::empty();
            for cert in certificates(prefix, "client_ca_file", &config.client_ca_file, ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{ca_name}: not a usable CA certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if config.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{ca_name}: cannot verify clients with it: {e}"))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut server_config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{prefix}.cert_file ({}) and {prefix}.key_file ({}): {e}",
            config.cert_file.display(),
            config.key_file.display()
        )
    })?;
    server_config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(server_config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TlsConfig {
            cert_file,
            key_file,
            ..TlsConfig::default()
        }
    }

    #[tokio::test]
    async fn bad_files_name_the_config_key_and_never_the_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = self_signed(dir.path(), "a");
        assert!(TlsSource::load("grpc.tls", &config, GRPC_ALPN)
            .await
            .unwrap()
            .is_some());

        let missing = TlsConfig {
            cert_file: dir.path().join("nope.crt"),
            ..config.clone()
        };
        let e = TlsSource::load("grpc.tls", &missing, GRPC_ALPN)
            .await
            .err()
            .unwrap();
        assert!(e.starts_with("grpc.tls.cert_file"), "{e}");

        let secret_line = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n";
        std::fs::write(&config.key_file, secret_line).unwrap();
        let e = TlsSource::load("http.tls", &config, HTTP_ALPN)
            .await
            .err()
            .unwrap();
        assert!(e.starts_with("http.tls.key_file"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");

        // A key of another certificate.
        let other = self_signed(dir.path(), "b");
        config.key_file = other.key_file;
        let e = TlsSource::load("grpc.tls", &config, GRPC_ALPN)
            .await
            .err()
            .unwrap();
        assert!(e.contains("grpc.tls.key_file"), "{e}");

        config = self_signed(dir.path(), "c");
        config.client_ca_file = dir.path().join("c.key");
        let e = TlsSource::load("grpc.tls", &config, GRPC_ALPN)
            .await
            .err()
            .unwrap();
        assert!(e.starts_with("grpc.tls.client_ca_file"), "{e}");
    }

    #[tokio::test]
    async fn an_invalid_change_keeps_the_current_config_and_a_valid_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = self_signed(dir.path(), "a");
        let mut source = TlsSource::load("grpc.tls", &config, GRPC_ALPN)
            .await
            .unwrap()
            .unwrap();
        let first = Arc::clone(&source.current);
        let mut state = ReloadState::default();
        assert!(source.reload(&mut state).await.is_none(), "nothing changed");

        std::fs::write(&config.cert_file, "not a certificate").unwrap();
        assert!(source.reload(&mut state).await.is_none());
        assert!(Arc::ptr_eq(&first, &source.current), "the old config stays");
        std::fs::remove_file(&config.key_file).unwrap();
        assert!(source.reload(&mut state).await.is_none());
        assert!(Arc::ptr_eq(&first, &source.current), "the old config stays");

        let next = self_signed(dir.path(), "b");
        std::fs::copy(&next.key_file, &config.key_file).unwrap();
        std::fs::copy(&next.cert_file, &config.cert_file).unwrap();
        let second = source.reload(&mut state).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&second, &source.current));
        assert_eq!(second.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(source.reload(&mut state).await.is_none(), "nothing changed");
    }
}
