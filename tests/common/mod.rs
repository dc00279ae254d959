//! Shared test harness: starts the real server (gRPC + HTTP on ephemeral ports, sandbox simulators, a fresh SQLite
//! file) and connects a generated gRPC client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use facegate::app::{self, Running};
use facegate::config::Config;
use facegate::proto::v1 as pb;
use facegate::proto::v1::verification_service_client::VerificationServiceClient;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// A synthetic 1x1 JPEG (not a face).
pub const JPEG: &[u8] = &[
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x01, 0x00, 0x48,
    0x00, 0x48, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xd9,
];

pub struct Server {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub client: VerificationServiceClient<Channel>,
}

pub fn sandbox_config(db: &Path) -> Config {
    let mut c = Config::default();
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.store.sqlite_path = db.to_path_buf();
    c.sandbox.enabled = true;
    c
}

pub async fn connect(running: &Running) -> VerificationServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    VerificationServiceClient::new(channel)
        .max_decoding_message_size(32 << 20)
        .max_encoding_message_size(32 << 20)
}

impl Server {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = sandbox_config(&dir.path().join("facegate.db"));
        Self::start_with(dir, config).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: Config) -> Self {
        let running = app::start(config).await.unwrap();
        let client = connect(&running).await;
        Self {
            running: Some(running),
            dir,
            client,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("facegate.db")
    }

    pub fn juhe_stats(&self) -> facegate::sandbox::juhe::JuheSimStats {
        self.running().sandbox.as_ref().unwrap().juhe.stats()
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
    }
}

pub fn id_number(sequence: u16) -> String {
    facegate::sandbox::test_id_number(sequence).unwrap()
}

pub fn identity(sequence: u16) -> pb::Identity {
    pb::Identity {
        name: "测试用户".into(),
        id_number: id_number(sequence),
        id_type: 0,
    }
}

pub fn probe() -> pb::FaceImage {
    pb::FaceImage {
        data: JPEG.to_vec(),
        role: pb::ImageRole::Probe as i32,
    }
}

pub fn juhe_inline(request_id: &str, sequence: u16) -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        request_id: request_id.into(),
        vendor: pb::Vendor::Juhe as i32,
        identity: Some(identity(sequence)),
        images: vec![probe()],
        ..Default::default()
    }
}

pub fn juhe_empty(request_id: &str) -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        request_id: request_id.into(),
        vendor: pb::Vendor::Juhe as i32,
        ..Default::default()
    }
}

/// The ErrorInfo reason and metadata of a status (exactly one ErrorInfo in domain facegate.v1).
pub fn reason(status: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .expect("every error carries an ErrorInfo");
    assert_eq!(info.domain, "facegate.v1");
    (info.reason.clone(), info.metadata.clone())
}

pub fn has_retry_info(status: &tonic::Status) -> bool {
    status.get_error_details().retry_info().is_some()
}

pub fn state(s: &pb::Session) -> pb::SessionState {
    pb::SessionState::try_from(s.state).unwrap()
}
