//! The simulator's state: sessions (verify tokens), their attempts, access tokens and counters, and the operations
//! the routes and the page perform on them.

use super::*;

// ---------------------------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone)]
pub(super) struct Identity {
    pub(super) name: String,
    pub(super) number: String,
    pub(super) certificate_type: u8,
}

pub(super) struct Attempt {
    pub(super) order: usize,
    pub(super) outcome: PageOutcome,
    pub(super) at_ms: i64,
    pub(super) identity: Option<Identity>,
    pub(super) charged: bool,
    pub(super) score: Option<f64>,
    pub(super) verify_log_id: String,
}

pub(super) struct Session {
    pub(super) plan: BaiduSimPlan,
    pub(super) created_ms: i64,
    pub(super) success_url: Option<String>,
    pub(super) failed_url: Option<String>,
    pub(super) identity: Option<Identity>,
    pub(super) reference_uploaded: bool,
    pub(super) attempts: Vec<Attempt>,
    pub(super) completed_ms: Option<i64>,
}

impl Session {
    /// Whether the user may still verify (inside the 2 h window and not used up).
    pub(super) fn usable(&self, now: i64) -> bool {
        self.completed_ms.is_none() && now < self.created_ms.saturating_add(VERIFY_WINDOW_MS)
    }

    /// Whether result queries may see the token at `now`, given the retention.
    pub(super) fn queryable(&self, now: i64, retention_ms: i64) -> bool {
        let finished = match self.completed_ms {
            Some(t) => Some(t),
            None if self.usable(now) => return true,
            // Window closed: results of attempts made (retry plans) age from the last one; none made => gone.
            None => self.attempts.last().map(|a| a.at_ms),
        };
        finished.is_some_and(|t| now <= t.saturating_add(retention_ms))
    }

    pub(super) fn charge_type(&self) -> &'static str {
        if self.plan.needs_reference {
            "match"
        } else {
            "verify"
        }
    }
}

#[derive(Default)]
pub(super) struct Inner {
    /// access_token -> expiry (unix ms).
    pub(super) access_tokens: HashMap<String, i64>,
    /// verify_token -> session.
    pub(super) sessions: HashMap<String, Session>,
    pub(super) stats: BaiduSimStats,
    /// verify_token -> when each `result/getall` naming it arrived (simulator clock, unix ms), for benchmarks.
    pub(super) getall_times: HashMap<String, Vec<i64>>,
}

/// `result/getall` arrival times kept per verify_token at most.
const MAX_GETALL_TIMES: usize = 100_000;

/// The simulator. Build with [`BaiduSimulator::new`], serve [`BaiduSimulator::router`] under [`MOUNT`].
pub struct BaiduSimulator {
    pub(super) cfg: BaiduSimConfig,
    pub(super) clock: SimClock,
    pub(super) qps_pending: AtomicU32,
    pub(super) qps_shape: AtomicU64,
    pub(super) inner: Mutex<Inner>,
}

impl fmt::Debug for BaiduSimulator {
    /// Shows the (credential-free) configuration and the counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaiduSimulator")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------------------------

/// Why the page (or [`BaiduSimulator::complete`]) refuses an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageError {
    TokenGone,
    IdentityNotSubmitted,
    ReferenceNotUploaded,
    IdentityRequired,
    BadIdentity,
}

impl PageError {
    pub(super) fn message(self) -> Bilingual {
        match self {
            PageError::TokenGone => {
                Bilingual::new(MSG_TOKEN_INVALID, "The token is invalid or has expired.")
            }
            PageError::IdentityNotSubmitted => Bilingual::new(
                "该方案为指定用户身份核验, 请先调用 idcard/submit 上报用户身份信息",
                "This plan verifies a given identity: submit it with idcard/submit first.",
            ),
            PageError::ReferenceNotUploaded => Bilingual::new(
                "该方案为自建人脸库比对, 请先调用 uploadMatchImage 上传比对图片",
                "This plan compares with an uploaded face: upload it with uploadMatchImage first.",
            ),
            PageError::IdentityRequired => {
                Bilingual::new("请输入姓名和身份证号", "Name and ID number are required.")
            }
            PageError::BadIdentity => {
                Bilingual::new("姓名或身份证号格式错误", "Invalid name or ID number.")
            }
        }
    }

    pub(super) fn status(self) -> StatusCode {
        match self {
            PageError::TokenGone => StatusCode::GONE,
            PageError::IdentityNotSubmitted | PageError::ReferenceNotUploaded => {
                StatusCode::CONFLICT
            }
            PageError::IdentityRequired | PageError::BadIdentity => StatusCode::BAD_REQUEST,
        }
    }
}

/// An attempt recorded by the page.
pub(super) struct Recorded {
    pub(super) passed: bool,
    pub(super) success_url: Option<String>,
    pub(super) failed_url: Option<String>,
}

impl BaiduSimulator {
    /// A simulator for one app with its plans, on `clock`.
    pub fn new(cfg: BaiduSimConfig, clock: SimClock) -> Arc<Self> {
        Arc::new(BaiduSimulator {
            cfg,
            clock,
            qps_pending: AtomicU32::new(0),
            qps_shape: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Routes relative to the mount point ([`MOUNT`]); see the module documentation.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/oauth/2.0/token", get(oauth_handler).post(oauth_handler))
            .route(
                "/rpc/2.0/brain/solution/faceprint/{*path}",
                post(faceprint_handler),
            )
            .route("/face/print/", get(page_handler))
            .route("/face/print", get(page_slash_handler))
            .route("/face/print/submit", post(submit_handler))
            .route("/solution/faceprint/image/query", get(image_handler))
            .route("/media/{file}", get(media_handler))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(self))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BaiduSimStats {
        self.lock().stats.clone()
    }

    /// The simulator's clock (advance it to age tokens and results).
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// The next `n` faceprint requests (any path) answer the QPS limit, alternating the gateway shape
    /// `{"error_code":18,..}` and the envelope shape `{"success":false,..,"code":18,"message":"openapi限制",..}`.
    pub fn inject_qps_limit(&self, n: u32) {
        let _ = self
            .qps_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(p.saturating_add(n))
            });
    }

    /// Records an attempt with `outcome` as the page's submit does (for tests without HTTP). Uses the identity from
    /// idcard/submit or, for plans that let the user enter one, a synthetic sandbox identity.
    pub fn complete(&self, verify_token: &str, outcome: PageOutcome) -> Result<(), String> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        self.record_attempt(&mut inner, verify_token, outcome, None, true, now)
            .map(|_| ())
            .map_err(|e| e.message().zh.to_owned())
    }

    /// When each `result/getall` for `verify_token` arrived (simulator clock, unix ms), oldest first.
    pub fn getall_times(&self, verify_token: &str) -> Vec<i64> {
        self.lock()
            .getall_times
            .get(verify_token)
            .cloned()
            .unwrap_or_default()
    }

    /// Number of access tokens issued so far (expired ones included).
    pub fn issued_access_tokens(&self) -> usize {
        self.lock().access_tokens.len()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    // -- OAuth -----------------------------------------------------------------------------------------------

    pub(super) fn oauth(&self, query: Option<&str>) -> Response {
        #[derive(Serialize)]
        struct TokenReply {
            access_token: String,
            expires_in: i64,
            refresh_token: String,
            scope: &'static str,
            session_key: String,
            session_secret: String,
        }
        let oauth_error = |status: StatusCode, error: &str, description: &str| {
            json_response_ct(
                status,
                json!({"error": error, "error_description": description}).to_string(),
            )
        };

        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.token_requests += 1;
        let grant_type = query_param(query, "grant_type");
        if grant_type.as_deref() != Some("client_credentials") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported",
            );
        }
        let client_id = query_param(query, "client_id").unwrap_or_default();
        if client_id.is_empty() || client_id != self.cfg.api_key {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client id",
            );
        }
        let client_secret = query_param(query, "client_secret").unwrap_or_default();
        if client_secret != self.cfg.secret_key {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed",
            );
        }
        let now_s = now.div_euclid(1000);
        let app = &self.cfg.app_id;
        let mut access_token;
        loop {
            access_token = format!(
                "24.{}.{ACCESS_TOKEN_TTL_SECS}.{}.282335-{app}",
                random_hex(),
                now_s + ACCESS_TOKEN_TTL_SECS
            );
            if !inner.access_tokens.contains_key(&access_token) {
                break;
            }
        }
        inner.access_tokens.insert(
            access_token.clone(),
            now.saturating_add(ACCESS_TOKEN_TTL_SECS * 1000),
        );
        let reply = TokenReply {
            access_token,
            expires_in: ACCESS_TOKEN_TTL_SECS,
            refresh_token: format!(
                "25.{}.{REFRESH_TOKEN_TTL_SECS}.{}.282335-{app}",
                random_hex(),
                now_s + REFRESH_TOKEN_TTL_SECS
            ),
            scope: "public brain_all_scope",
            session_key: random_hex(),
            session_secret: random_hex(),
        };
        let body = serde_json::to_string(&reply).unwrap_or_default();
        json_response_ct(StatusCode::OK, body)
    }

    // -- Faceprint API ---------------------------------------------------------------------------------------

    pub(super) fn faceprint(
        &self,
        api: Api,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        base: &str,
    ) -> Reply {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        *inner.stats.calls.entry(api.path().to_owned()).or_insert(0) += 1;
        if let Some(reply) = self.take_qps_limit() {
            inner.stats.qps_limited += 1;
            return reply;
        }
        match query_param(query, "access_token").as_deref() {
            None | Some("") => {
                return Reply::Gateway {
                    code: 100,
                    message: "Invalid parameter",
                }
            }
            Some(token) => match inner.access_tokens.get(token) {
                None => {
                    return Reply::Gateway {
                        code: 110,
                        message: "Access token invalid or no longer valid",
                    }
                }
                Some(&expires) if now >= expires => {
                    return Reply::Gateway {
                        code: 111,
                        message: "Access token expired",
                    }
                }
                Some(_) => {}
            },
        }
        if !is_json_content_type(headers) {
            return Reply::not_json();
        }
        let Ok(body) = body else {
            return Reply::not_json();
        };
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
            return Reply::not_json();
        };
        if api == Api::GetAll {
            if let Some(Value::String(token)) = obj.get("verify_token") {
                if inner.sessions.contains_key(token) {
                    let times = inner.getall_times.entry(token.clone()).or_default();
                    if times.len() < MAX_GETALL_TIMES {
                        times.push(now);
                    }
                }
            }
        }
        let result = match api {
            Api::Generate => self.generate(&mut inner, &obj, now),
            Api::IdcardSubmit => idcard_submit(&mut inner, &obj, now),
            Api::UploadMatchImage => upload_match_image(&mut inner, &obj, now),
            Api::Simple => result_simple(&inner, &obj, now, base),
            Api::Detail => result_detail(&inner, &obj, now),
            Api::Stat => result_stat(&inner, &obj, now),
            Api::Media => result_media(&inner, &obj, now, base),
            Api::GetAll => result_getall(&inner, &obj, now, base),
        };
        match result {
            Ok(value) => Reply::Ok(value),
            Err(reply) => reply,
        }
    }

    pub(super) fn take_qps_limit(&self) -> Option<Reply> {
        self.qps_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        Some(
            if self
                .qps_shape
                .fetch_add(1, Ordering::SeqCst)
                .is_multiple_of(2)
            {
                Reply::Gateway {
                    code: CODE_QPS_LIMIT,
                    message: "Open api qps request limit reached",
                }
            } else {
                Reply::fail(CODE_QPS_LIMIT, "openapi限制")
            },
        )
    }

    pub(super) fn generate(
        &self,
        inner: &mut Inner,
        obj: &Map<String, Value>,
        now: i64,
    ) -> Result<Value, Reply> {
        let plan_id = match obj.get("plan_id") {
            None | Some(Value::Null) => return Err(Reply::missing("plan_id")),
            Some(Value::String(s)) if s.trim().is_empty() => return Err(Reply::missing("plan_id")),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(Reply::invalid("plan_id")),
        };
        let (success_url, failed_url) = match obj.get("redirect_config") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(rc)) => (
                opt_str(rc, "success_url", "redirect_config.success_url")?.map(str::to_owned),
                opt_str(rc, "failed_url", "redirect_config.failed_url")?.map(str::to_owned),
            ),
            Some(_) => return Err(Reply::invalid("redirect_config")),
        };
        let Some(plan) = self.cfg.plans.iter().find(|p| p.plan_id == plan_id) else {
            return Err(Reply::fail(CODE_SERVICE_ERROR, MSG_SERVICE_ERROR));
        };
        let mut token = new_verify_token();
        while inner.sessions.contains_key(&token) {
            token = new_verify_token();
        }
        inner.sessions.insert(
            token.clone(),
            Session {
                plan: plan.clone(),
                created_ms: now,
                success_url,
                failed_url,
                identity: None,
                reference_uploaded: false,
                attempts: Vec::new(),
                completed_ms: None,
            },
        );
        Ok(json!({ "verify_token": token }))
    }

    // -- The page --------------------------------------------------------------------------------------------

    /// Checks what the plan needs before the page may be used.
    pub(super) fn page_preconditions(session: &Session) -> Result<(), PageError> {
        if session.plan.needs_identity && session.identity.is_none() {
            return Err(PageError::IdentityNotSubmitted);
        }
        if session.plan.needs_reference && !session.reference_uploaded {
            return Err(PageError::ReferenceNotUploaded);
        }
        Ok(())
    }

    /// Records one attempt. `entered` is the name / ID number typed on the page (plans without
    /// 指定用户身份核验); `synthetic` allows the sandbox identity when none is known.
    pub(super) fn record_attempt(
        &self,
        inner: &mut Inner,
        token: &str,
        outcome: PageOutcome,
        entered: Option<(&str, &str)>,
        synthetic: bool,
        now: i64,
    ) -> Result<Recorded, PageError> {
        let Inner {
            sessions, stats, ..
        } = inner;
        let session = match sessions.get_mut(token) {
            Some(s) if s.usable(now) => s,
            _ => return Err(PageError::TokenGone),
        };
        Self::page_preconditions(session)?;
        let identity = if session.plan.needs_identity {
            session.identity.clone()
        } else {
            let typed = match entered {
                Some((name, number)) => {
                    let cert = if is_hmt_prefix(number.trim()) { 4 } else { 0 };
                    Some(
                        validate_identity(name, number, cert)
                            .map_err(|_| PageError::BadIdentity)?,
                    )
                }
                None => None,
            };
            typed.or_else(|| session.identity.clone()).or_else(|| {
                synthetic.then(|| Identity {
                    name: SANDBOX_NAME.to_owned(),
                    number: SANDBOX_ID_NUMBER.to_owned(),
                    certificate_type: 0,
                })
            })
        };
        if identity.is_none() && outcome != PageOutcome::Abandon {
            return Err(PageError::IdentityRequired);
        }
        let threshold = session.plan.threshold;
        let charged = outcome.billed();
        let score = match outcome {
            PageOutcome::Pass => Some(round4(
                (threshold + (100.0 - threshold) * 0.7).clamp(0.0, 100.0),
            )),
            PageOutcome::FaceMismatch => Some(round4((threshold * 0.5).clamp(0.0, 100.0))),
            _ => None,
        };
        session.attempts.push(Attempt {
            order: session.attempts.len() + 1,
            outcome,
            at_ms: now,
            identity,
            charged,
            score,
            verify_log_id: if charged { new_log_id() } else { String::new() },
        });
        if charged {
            stats.billed += 1;
        }
        let passed = outcome == PageOutcome::Pass;
        if passed || session.plan.fail_ends_url {
            session.completed_ms = Some(now);
        }
        Ok(Recorded {
            passed,
            success_url: session.success_url.clone(),
            failed_url: session.failed_url.clone(),
        })
    }

    pub(super) fn page(&self, query: Option<&str>) -> Response {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.page_views += 1;
        let token = query_param(query, "token").unwrap_or_default();
        let Some(session) = inner.sessions.get(&token).filter(|s| s.usable(now)) else {
            return error_page(PageError::TokenGone);
        };
        if let Err(e) = Self::page_preconditions(session) {
            return error_page(e);
        }
        let success =
            non_empty(query_param(query, "successUrl")).or_else(|| session.success_url.clone());
        let failed =
            non_empty(query_param(query, "failedUrl")).or_else(|| session.failed_url.clone());
        html_response(
            StatusCode::OK,
            PAGE_CSP,
            render_page(&token, session, success.as_deref(), failed.as_deref(), None),
        )
    }

    pub(super) fn submit(&self, body: &[u8]) -> Response {
        let form = FormFields::parse(body);
        let Some(outcome) = PageOutcome::parse(&form.outcome) else {
            return message_page(
                StatusCode::BAD_REQUEST,
                "error",
                BAD_REQUEST,
                &Bilingual::new("未知的认证结果", "Unknown outcome.").paragraphs("", ""),
                None,
            );
        };
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let entered = (!form.id_name.trim().is_empty() || !form.id_no.trim().is_empty())
            .then_some((form.id_name.as_str(), form.id_no.as_str()));
        let recorded =
            match self.record_attempt(&mut inner, &form.token, outcome, entered, false, now) {
                Ok(r) => r,
                Err(e @ (PageError::IdentityRequired | PageError::BadIdentity)) => {
                    // Show the form again with the problem; nothing was recorded.
                    return match inner.sessions.get(&form.token) {
                        Some(session) => html_response(
                            e.status(),
                            PAGE_CSP,
                            render_page(
                                &form.token,
                                session,
                                non_empty(Some(form.success_url.clone())).as_deref(),
                                non_empty(Some(form.failed_url.clone())).as_deref(),
                                Some(e.message()),
                            ),
                        ),
                        None => error_page(e),
                    };
                }
                Err(e) => return error_page(e),
            };
        drop(inner);
        let target = if recorded.passed {
            non_empty(Some(form.success_url)).or(recorded.success_url)
        } else {
            non_empty(Some(form.failed_url)).or(recorded.failed_url)
        };
        match target
            .filter(|u| is_http_url(u))
            .and_then(|u| HeaderValue::from_str(&u).ok())
        {
            Some(location) => (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
            )
                .into_response(),
            None => message_page(
                StatusCode::OK,
                "result",
                Bilingual::new("认证结果", "Result"),
                &format!(
                    "<p>{}</p>\n<p lang=\"en\" class=\"en\">outcome: {}</p>\n",
                    esc(outcome.failure().map_or(MSG_PASSED, |(_, m)| m)),
                    esc(outcome.as_str())
                ),
                Some(outcome),
            ),
        }
    }

    // -- Media -----------------------------------------------------------------------------------------------

    pub(super) fn image(&self, query: Option<&str>) -> Response {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let token = query_param(query, "verify_token").unwrap_or_default();
        match passed_session(&inner, &token, now, RESULT_RETENTION_MS) {
            Ok(_) => binary_response("image/jpeg", SYNTHETIC_JPEG),
            Err(reply) => reply.into_response_with(StatusCode::NOT_FOUND),
        }
    }

    pub(super) fn media_file(&self, file: &str) -> Response {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let found = if let Some(token) = file.strip_suffix(".mp4") {
            passed_session(&inner, token, now, MEDIA_RETENTION_MS)
                .map(|_| ("video/mp4", SYNTHETIC_MP4))
        } else if let Some((token, name)) =
            file.strip_suffix(".jpg").and_then(|f| f.split_once('-'))
        {
            if let Some(order) = name.strip_prefix("face") {
                face_image_session(&inner, token, order, now)
                    .map(|_| ("image/jpeg", SYNTHETIC_JPEG))
            } else if matches!(name, "1" | "2" | "3" | "4") {
                passed_session(&inner, token, now, MEDIA_RETENTION_MS)
                    .map(|_| ("image/jpeg", SYNTHETIC_JPEG))
            } else {
                Err(Reply::token_invalid())
            }
        } else {
            Err(Reply::token_invalid())
        };
        match found {
            Ok((mime, bytes)) => binary_response(mime, bytes),
            Err(reply) => reply.into_response_with(StatusCode::NOT_FOUND),
        }
    }
}
