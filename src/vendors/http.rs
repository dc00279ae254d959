//! Shared HTTP plumbing for adapters: one client per vendor with timeouts, bounded body reads, and classification
//! of transport failures by whether the request may have reached the vendor.

use std::time::Duration;

use crate::domain::{Vendor, VendorError, VendorErrorKind};

/// Builds a client with connect and whole-request timeouts. No redirects are followed (a vendor API never
/// redirects; following one could leak a request elsewhere).
pub fn client(connect_timeout: Duration, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("facegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// Maps a transport error. A connect failure never reached the vendor; anything later may have been billed.
pub fn transport_error(vendor: Vendor, e: &reqwest::Error) -> VendorError {
    let (kind, possibly_billed, retry) = if e.is_connect() {
        (
            VendorErrorKind::Unreachable,
            false,
            Some(Duration::from_secs(2)),
        )
    } else if e.is_timeout() {
        (VendorErrorKind::Timeout, true, None)
    } else {
        (VendorErrorKind::ProtocolError, true, None)
    };
    VendorError {
        kind,
        vendor,
        vendor_code: String::new(),
        vendor_message: String::new(),
        possibly_billed,
        retry_after: retry,
    }
}

/// Reads a response body, refusing more than `max` bytes.
pub async fn read_bounded(
    vendor: Vendor,
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, VendorError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large(vendor, max));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(too_large(vendor, max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(vendor, &e)),
        }
    }
}

fn too_large(vendor: Vendor, max: usize) -> VendorError {
    VendorError {
        kind: VendorErrorKind::ProtocolError,
        vendor,
        vendor_code: String::new(),
        vendor_message: format!("reply larger than {max} bytes"),
        possibly_billed: true,
        retry_after: None,
    }
}
