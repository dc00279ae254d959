//! The HTTP listener's server loop: hyper's HTTP/1 and HTTP/2 (auto-detected, or chosen by ALPN under TLS) over the
//! connections of [`crate::net::accept_with`], with what `axum::serve` cannot set: an HTTP/1 header read timeout
//! (which is also the keep-alive idle timeout: it runs whenever the connection waits for a request) and HTTP/2
//! keepalive pings that close a connection whose peer stopped answering. On `stop` every connection finishes its
//! request in progress and closes; the returned future ends when all have.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, watch};

use crate::net::Conn;

/// HTTP/2 keepalive ping interval on the HTTP listener (as on the gRPC listener).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long an HTTP/2 keepalive ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `routes` on `conns` until `stop` turns true (see the module docs).
pub async fn serve(
    mut conns: mpsc::Receiver<Conn>,
    routes: Router,
    header_read_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    // Every connection task holds a receiver; the loop's end waits until all are dropped.
    let (open_tx, open_rx) = watch::channel(());
    let mut stopping = stop.clone();
    loop {
        let conn = tokio::select! {
            c = conns.recv() => match c {
                Some(c) => c,
                None => break,
            },
            _ = stopping.wait_for(|v| *v) => break,
        };
        let remote = conn.remote_addr();
        let service = TowerToHyperService::new(routes.clone());
        let builder = builder.clone();
        let mut stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
            tokio::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    r = connection.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(listener = "http", peer = %remote, error = %e, "connection closed");
                        }
                        break;
                    }
                    _ = stop.wait_for(|v| *v), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }
    drop(open_rx);
    drop(conns);
    open_tx.closed().await;
}
