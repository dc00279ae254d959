//! Shared test harness: starts the real server (gRPC + HTTP on ephemeral ports, sandbox simulators, a fresh SQLite
//! file) and connects a generated gRPC client. Test binaries using it need the `sandbox` feature (Cargo.toml).
#![allow(dead_code)]

pub mod hooks;
pub mod pg;
pub mod recorder;

use std::path::{Path, PathBuf};

use facegate::app::{self, Mode, Running};
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

/// A test server's configuration: both listeners on loopback ephemeral ports, the store in `db`. The mode is given
/// at start ([`Server::start_with`] runs the sandbox, [`Server::start_mode`] either).
pub fn sandbox_config(db: &Path) -> Config {
    let mut c = Config::default();
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.store.sqlite_path = db.to_path_buf();
    c.store.encryption_keys = vec![db_key(db)];
    c
}

/// The data key of the database at `db`: generated on first use, then the same for every server of this test
/// process that opens that file (a restart reads what the previous server wrote).
pub fn db_key(db: &Path) -> facegate::config::Secret {
    static KEYS: std::sync::Mutex<std::collections::BTreeMap<PathBuf, facegate::config::Secret>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    KEYS.lock()
        .unwrap()
        .entry(db.to_path_buf())
        .or_insert_with(|| test_key("k1"))
        .clone()
}

/// A data key generated now, as a `store.encryption_keys` entry.
pub fn test_key(id: &str) -> facegate::config::Secret {
    facegate::config::Secret::new(format!(
        "{id}:{}",
        facegate::store::seal::generate_key_base64().unwrap()
    ))
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

    /// A sandbox server with `config`.
    pub async fn start_with(dir: tempfile::TempDir, config: Config) -> Self {
        Self::start_mode(dir, config, Mode::sandbox()).await
    }

    /// A server with `config` in `mode` (`Mode::Production` for tests against fake vendor endpoints).
    pub async fn start_mode(dir: tempfile::TempDir, mut config: Config, mode: Mode) -> Self {
        // Replicas sharing a PostgreSQL database share its key (unless the test chose keys).
        if !config.store.database_url.is_empty()
            && config.store.encryption_keys == vec![db_key(&config.store.sqlite_path)]
        {
            config.store.encryption_keys =
                vec![db_key(Path::new(config.store.database_url.expose()))];
        }
        let running = app::start(config, mode).await.unwrap();
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

    /// Requests the Juhe simulator has received on either verification endpoint (counted on arrival).
    pub fn juhe_requests(&self) -> u64 {
        let s = self.juhe_stats();
        s.verify_calls + s.verify_encry_calls
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

/// Asserts that two statuses are the same answer: code, message and every detail (ErrorInfo with its metadata,
/// RetryInfo, BadRequest, QuotaFailure). Compared decoded: protobuf leaves the order of map entries open.
pub fn assert_same_answer(first: &tonic::Status, replay: &tonic::Status) {
    assert_eq!(replay.code(), first.code());
    assert_eq!(replay.message(), first.message());
    let (a, b) = (first.get_error_details(), replay.get_error_details());
    let info = |d: &tonic_types::ErrorDetails| {
        d.error_info()
            .map(|i| (i.reason.clone(), i.domain.clone(), i.metadata.clone()))
    };
    assert_eq!(info(&b), info(&a));
    assert_eq!(
        b.retry_info().map(|r| r.retry_delay),
        a.retry_info().map(|r| r.retry_delay)
    );
    let violations = |d: &tonic_types::ErrorDetails| {
        d.bad_request().map(|r| {
            r.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(violations(&b), violations(&a));
    let quota = |d: &tonic_types::ErrorDetails| {
        d.quota_failure().map(|q| {
            q.violations
                .iter()
                .map(|v| (v.subject.clone(), v.description.clone()))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(quota(&b), quota(&a));
    assert_eq!(
        replay.get_error_details_vec().len(),
        first.get_error_details_vec().len()
    );
}

pub fn has_retry_info(status: &tonic::Status) -> bool {
    status.get_error_details().retry_info().is_some()
}

pub fn state(s: &pb::Session) -> pb::SessionState {
    pb::SessionState::try_from(s.state).unwrap()
}

/// Megvii flows that must be over a second after get_token, asked about with their one get_result
/// `result_wait_secs` later, and expiry checked every second.
pub fn quick_megvii_flows(c: &mut Config, result_wait_secs: u64) {
    c.megvii.max_flow_secs = 1;
    c.megvii.result_wait_secs = result_wait_secs;
    c.session.sweep_interval_secs = 1;
    c.status.final_check_grace_secs = 1;
}

/// A GetResult for a session that does not exist.
pub fn missing_session() -> pb::GetResultRequest {
    pb::GetResultRequest {
        session_id: "ses_00000000000000000000000000000000".into(),
        ..Default::default()
    }
}

/// Polling fast enough for tests (the defaults poll every second at first).
pub fn fast_polling(c: &mut Config) {
    c.status.poll_min_interval_ms = 40;
    c.status.poll_max_interval_ms = 200;
    c.status.poll_jitter = 0.1;
}

impl Server {
    /// A sandbox server that polls fast.
    pub async fn start_fast() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sandbox_config(&dir.path().join("facegate.db"));
        fast_polling(&mut config);
        Self::start_with(dir, config).await
    }

    /// Starts a session that must succeed (a bare request, or one with metadata).
    pub async fn start_ok(
        &mut self,
        req: impl tonic::IntoRequest<pb::StartSessionRequest>,
    ) -> pb::Session {
        self.client
            .start_session(req)
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    /// GetResult with the personal data, face image and media asked for or not.
    pub async fn result_with(
        &mut self,
        session_id: &str,
        reveal: bool,
        face: bool,
        media: bool,
    ) -> pb::GetResultResponse {
        self.client
            .get_result(pb::GetResultRequest {
                session_id: session_id.into(),
                reveal_personal_data: reveal,
                include_face_image: face,
                include_media: media,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// GetResult of a session that must exist.
    pub async fn result(&mut self, session_id: &str) -> pb::Session {
        self.client
            .get_result(pb::GetResultRequest {
                session_id: session_id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    /// The Baidu simulator.
    pub fn baidu(&self) -> std::sync::Arc<facegate::sandbox::baidu::BaiduSimulator> {
        std::sync::Arc::clone(&self.running().sandbox.as_ref().unwrap().baidu)
    }

    /// Calls of one Baidu faceprint path so far.
    pub fn baidu_calls(&self, path: &str) -> u64 {
        self.baidu().stats().calls.get(path).copied().unwrap_or(0)
    }
}

/// A Baidu StartSession with the identity inline (plan by name; empty = default).
pub fn baidu_inline(request_id: &str, plan: &str, sequence: u16) -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        request_id: request_id.into(),
        vendor: pb::Vendor::Baidu as i32,
        vendor_options: Some(pb::start_session_request::VendorOptions::Baidu(
            pb::BaiduOptions { plan: plan.into() },
        )),
        identity: Some(identity(sequence)),
        ..Default::default()
    }
}

/// A browser that does not follow redirects, so each hop can be checked.
pub struct Browser {
    pub http: reqwest::Client,
}

impl Browser {
    /// The body of a GET of `url` (a page the browser is sent to).
    pub async fn page(&self, url: &str) -> String {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn new() -> Self {
        facegate::app::install_crypto_provider();
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Opens the vendor page and returns its HTML.
    pub async fn open(&self, user_url: &str) -> String {
        let r = self.http.get(user_url).send().await.unwrap();
        assert_eq!(r.status(), 200, "the vendor page opens");
        r.text().await.unwrap()
    }

    /// Completes the sandbox page with an outcome, as its form does; returns where the page sent the browser.
    pub async fn choose(&self, user_url: &str, outcome: &str) -> String {
        let html = self.open(user_url).await;
        assert!(
            html.contains(&format!("id=\"{outcome}\"")),
            "the page offers {outcome}"
        );
        let (page, query) = user_url.split_once('?').unwrap();
        let mut form: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if html.contains("name=\"id_name\"") {
            // The plan lets the user type the identity in, as a person would on the page.
            form.push(("id_name".into(), "测试用户".into()));
            form.push(("id_no".into(), id_number(3)));
        }
        form.push(("outcome".into(), outcome.into()));
        let r = self
            .http
            .post(format!("{page}submit"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_redirection(),
            "the page redirects, got {}",
            r.status()
        );
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Follows one redirect hop and returns the response.
    pub async fn follow(&self, location: &str) -> reqwest::Response {
        self.http.get(location).send().await.unwrap()
    }
}

/// Streams a session in the background until it is final (see [`stream_to_end`]).
pub fn watch_in_background(
    client: &VerificationServiceClient<Channel>,
    id: &str,
) -> tokio::task::JoinHandle<Vec<pb::Session>> {
    let mut client = client.clone();
    let id = id.to_owned();
    tokio::spawn(async move { stream_to_end(&mut client, &id).await })
}

/// Streams a session until it is final; returns every message.
pub async fn stream_to_end(
    client: &mut VerificationServiceClient<Channel>,
    id: &str,
) -> Vec<pb::Session> {
    use tokio_stream::StreamExt;
    let mut stream = client
        .stream_status(pb::StreamStatusRequest {
            session_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    let deadline = std::time::Duration::from_secs(30);
    while let Some(msg) = tokio::time::timeout(deadline, stream.next()).await.unwrap() {
        out.push(msg.unwrap().session.unwrap());
    }
    out
}

impl Server {
    /// The Megvii simulator.
    pub fn megvii(&self) -> std::sync::Arc<facegate::sandbox::megvii::MegviiSimulator> {
        std::sync::Arc::clone(&self.running().sandbox.as_ref().unwrap().megvii)
    }

    /// Completes a Megvii session's page (by its user_url) with an outcome; the simulator calls back.
    pub async fn megvii_page(
        &self,
        user_url: &str,
        outcome: facegate::sandbox::megvii::PageOutcome,
    ) {
        self.megvii()
            .complete(&token_of(user_url), outcome)
            .await
            .unwrap();
    }
}

/// A Megvii StartSession against the authority source with the identity inline (idcard_mode 0).
pub fn megvii_inline(request_id: &str, sequence: u16) -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        request_id: request_id.into(),
        vendor: pb::Vendor::Megvii as i32,
        vendor_options: Some(pb::start_session_request::VendorOptions::Megvii(
            pb::MegviiOptions {
                get_fail_reason: true,
                ..Default::default()
            },
        )),
        identity: Some(identity(sequence)),
        ..Default::default()
    }
}

/// The `token` query parameter of a user_url.
pub fn token_of(user_url: &str) -> String {
    let (_, query) = user_url.split_once('?').unwrap();
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// A log writer that keeps what is written, for tests that read the logs.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A server outside sandbox mode (real adapters, pointed by the test at its own endpoint) that serves
/// unauthenticated on purpose (`auth.mode = "none"`), as production may only when told so. The tests using it are
/// about vendor wire formats, TLS and auth, not consent evidence, so the consent policy is off
/// (`tests/redaction.rs` covers it).
pub fn live_unauthenticated(c: &mut Config) {
    c.auth.mode = facegate::config::AuthMode::None;
    c.session.require_consent = Some(false);
}

/// Lowercase hex SHA-256 of a bearer key, as `api_key_sha256` takes it.
pub fn key_sha256(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A caller authenticating with `key`.
pub fn caller_config(
    id: &str,
    tenant: &str,
    scopes: &[&str],
    key: &str,
) -> facegate::config::CallerConfig {
    facegate::config::CallerConfig {
        id: id.into(),
        tenant: tenant.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        api_key_sha256: key_sha256(key),
        ..Default::default()
    }
}

/// Attaches `authorization: Bearer <key>` to every call (nothing without a key).
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// Sends `key` (nothing without one).
    pub fn new(key: Option<&str>) -> Self {
        Self(key.map(|k| format!("Bearer {k}").parse().unwrap()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A generated client whose calls carry a bearer key.
pub type KeyedClient =
    VerificationServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A channel to the server's gRPC listener.
pub async fn channel(running: &Running) -> Channel {
    Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A client of the server that sends `key` (or no credentials).
pub async fn keyed_client(running: &Running, key: Option<&str>) -> KeyedClient {
    let bearer = Bearer::new(key);
    VerificationServiceClient::with_interceptor(channel(running).await, bearer)
        .max_decoding_message_size(32 << 20)
        .max_encoding_message_size(32 << 20)
}

impl Server {
    /// A sandbox server with these callers configured (sandbox mode then authenticates like production); its
    /// `client` sends no credentials.
    pub async fn start_with_callers(callers: Vec<facegate::config::CallerConfig>) -> Self {
        Self::start_with_auth(|a| a.callers = callers).await
    }

    /// A sandbox server with its `[auth]` adjusted by `f`.
    pub async fn start_with_auth(f: impl FnOnce(&mut facegate::config::AuthConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sandbox_config(&dir.path().join("facegate.db"));
        fast_polling(&mut config);
        f(&mut config.auth);
        Self::start_with(dir, config).await
    }

    /// A client of this server that sends `key`.
    pub async fn with_key(&self, key: &str) -> KeyedClient {
        keyed_client(self.running(), Some(key)).await
    }
}
