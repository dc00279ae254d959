//! What the listener knows of a connection, for the auth layer: the peer address and, with mTLS, the verified client
//! certificate's subject. The gRPC listener's IO type reports a [`PeerInfo`] as its `Connected::ConnectInfo`, so tonic
//! puts one in every request's extensions.

use std::net::SocketAddr;

/// The peer of a gRPC connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The remote address.
    pub remote_addr: Option<SocketAddr>,
    /// The subject of the client certificate the listener verified against `grpc.tls.client_ca_file`, as
    /// [`normalize_dn`] renders it (`CN=orders-service,O=Shop`); `None` without mTLS or without a client certificate.
    pub client_subject: Option<String>,
}

/// A distinguished name in one canonical form: RDNs as `KEY=value`, keys upper-cased, white space around `,` and `=`
/// removed, joined by `,`. Config's `mtls_subject` and a certificate's subject are compared in this form.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => format!("{}={}", k.trim().to_ascii_uppercase(), v.trim()),
            None => p.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_in_one_form() {
        assert_eq!(
            normalize_dn("cn = orders-service, O=Shop"),
            "CN=orders-service,O=Shop"
        );
        assert_eq!(normalize_dn("CN=orders-service"), "CN=orders-service");
    }
}
