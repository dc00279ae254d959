//! The bare tonic reference server: facegate's generated `VerificationService` with canned replies, served with
//! facegate's transport settings (`grpc::server_builder`, the same message size limits) through facegate's accept
//! loop (`net::incoming`: TCP_NODELAY on every accepted socket). Only facegate's own work is missing.
//!
//! The replies are messages captured from the facegate server of the same run (so they have the same shape and
//! size), read from files in a directory the load generator wrote.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use facegate::config::GrpcConfig;
use facegate::proto::v1 as pb;
use facegate::proto::v1::verification_service_server::{
    VerificationService, VerificationServiceServer,
};
use futures_util::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

/// File names of the captured replies in the replies directory.
pub const START_REPLY: &str = "start_session.pb";
pub const SUBMIT_REPLY: &str = "submit_identity.pb";
pub const RESULT_REPLY: &str = "get_result.pb";
pub const STREAM_REPLY: &str = "stream_status.pb";

struct Canned {
    start: pb::StartSessionResponse,
    submit: pb::SubmitIdentityResponse,
    result: pb::GetResultResponse,
    stream: pb::StreamStatusResponse,
}

fn read<M: Message + Default>(dir: &Path, name: &str) -> Result<M, String> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    M::decode(bytes.as_slice()).map_err(|e| format!("cannot decode {}: {e}", path.display()))
}

#[derive(Clone)]
struct Reference(Arc<Canned>);

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::StreamStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VerificationService for Reference {
    async fn start_session(
        &self,
        _request: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        Ok(Response::new(self.0.start.clone()))
    }

    async fn submit_identity(
        &self,
        _request: Request<pb::SubmitIdentityRequest>,
    ) -> Result<Response<pb::SubmitIdentityResponse>, Status> {
        Ok(Response::new(self.0.submit.clone()))
    }

    async fn upload_reference(
        &self,
        _request: Request<pb::UploadReferenceRequest>,
    ) -> Result<Response<pb::UploadReferenceResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }

    async fn get_result(
        &self,
        _request: Request<pb::GetResultRequest>,
    ) -> Result<Response<pb::GetResultResponse>, Status> {
        Ok(Response::new(self.0.result.clone()))
    }

    type StreamStatusStream = SnapshotStream;

    /// One snapshot, then the stream stays open (idle) until the client goes away.
    async fn stream_status(
        &self,
        _request: Request<pb::StreamStatusRequest>,
    ) -> Result<Response<Self::StreamStatusStream>, Status> {
        let first = self.0.stream.clone();
        let stream = futures_util::stream::once(async move { Ok(first) })
            .chain(futures_util::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_session(
        &self,
        _request: Request<pb::CancelSessionRequest>,
    ) -> Result<Response<pb::CancelSessionResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }

    async fn list_session_events(
        &self,
        _request: Request<pb::ListSessionEventsRequest>,
    ) -> Result<Response<pb::ListSessionEventsResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }

    async fn redact_session(
        &self,
        _request: Request<pb::RedactSessionRequest>,
    ) -> Result<Response<pb::RedactSessionResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }

    async fn list_webhook_deliveries(
        &self,
        _: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }

    async fn redeliver_webhook(
        &self,
        _: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::RedeliverWebhookResponse>, Status> {
        Err(Status::unimplemented("not part of the benchmark"))
    }
}

/// Runs the reference server on `listen` until its standard input closes (the load generator holds the other
/// end, so the server never outlives the benchmark).
pub fn main(listen: SocketAddr, replies: &Path) -> Result<(), String> {
    let canned = Canned {
        start: read(replies, START_REPLY)?,
        submit: read(replies, SUBMIT_REPLY)?,
        result: read(replies, RESULT_REPLY)?,
        stream: read(replies, STREAM_REPLY)?,
    };
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(listen, Reference(Arc::new(canned))))
}

async fn serve(listen: SocketAddr, api: Reference) -> Result<(), String> {
    let cfg = GrpcConfig::default();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<VerificationServiceServer<Reference>>()
        .await;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let incoming = facegate::net::incoming("grpc", listener, None, stop_rx);
    let max = cfg.max_message_bytes;
    facegate::grpc::server_builder(&cfg)
        .add_service(health_service)
        .add_service(
            VerificationServiceServer::new(api)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| format!("reference server: {e}"))
}
