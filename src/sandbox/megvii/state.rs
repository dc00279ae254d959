//! The simulator's state: flows (biz tokens) from get_token to the page and the result, notify deliveries, counters,
//! and the operations the routes and the page perform on them.

use super::*;

// State
// ---------------------------------------------------------------------------------------------------------------

/// The get_token arguments a flow needs later.
#[derive(Debug, Clone)]
pub(super) struct Params {
    pub(super) return_url: String,
    pub(super) notify_url: String,
    pub(super) comparison_type: u8,
    pub(super) idcard_mode: Option<u8>,
    pub(super) idcard_uneditable_field: Option<String>,
    /// image_ref1..3 uploaded.
    pub(super) refs: [bool; 3],
    pub(super) procedure_type: Option<String>,
    pub(super) get_fail_reason: bool,
    pub(super) return_multifaces_tag: bool,
    pub(super) action_get: bool,
    pub(super) web_title: Option<String>,
}

pub(super) struct Flow {
    pub(super) token: String,
    pub(super) biz_id: String,
    pub(super) biz_no: String,
    pub(super) biz_extra_data: Option<String>,
    pub(super) params: Params,
    pub(super) created_ms: i64,
    pub(super) status: LiteStatus,
    pub(super) result: Option<LiteResult>,
    pub(super) completed_ms: Option<i64>,
    pub(super) get_result_calls: u32,
}

impl Flow {
    pub(super) fn biz_info(&self) -> BizInfo {
        BizInfo {
            biz_id: self.biz_id.clone(),
            biz_no: self.biz_no.clone(),
            biz_extra_data: self.biz_extra_data.clone(),
        }
    }

    /// Whether get_result still finds the flow at `now`.
    pub(super) fn retained(&self, now: i64) -> bool {
        let from = self.completed_ms.unwrap_or(self.created_ms);
        now <= from.saturating_add(RESULT_RETENTION_MS)
    }
}

#[derive(Default)]
pub(super) struct Inner {
    /// biz_id -> flow.
    pub(super) flows: HashMap<String, Flow>,
    /// token -> biz_id.
    pub(super) tokens: HashMap<String, String>,
    pub(super) fault: CallbackFault,
    pub(super) stats: MegviiSimStats,
}

/// The simulator. Build with [`MegviiSimulator::new`], serve [`MegviiSimulator::router`] under [`MOUNT`].
pub struct MegviiSimulator {
    pub(super) cfg: MegviiSimConfig,
    pub(super) clock: SimClock,
    pub(super) client: Option<reqwest::Client>,
    pub(super) concurrency_pending: AtomicU32,
    pub(super) inner: Mutex<Inner>,
}

impl fmt::Debug for MegviiSimulator {
    /// Shows the (credential-free) configuration and the counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MegviiSimulator")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One notify POST.
pub(super) struct NotifySend {
    pub(super) delay: Duration,
    pub(super) data: String,
    pub(super) sign: String,
}

/// The notifies of a finished flow.
pub(super) struct NotifyPlan {
    pub(super) url: String,
    pub(super) sends: Vec<NotifySend>,
}

/// Why the page (or [`MegviiSimulator::complete`]) refuses a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageError {
    UnknownToken,
    Expired,
    Finished,
    BadOutcome,
    Internal,
}

impl PageError {
    pub(super) fn message(self) -> Bilingual {
        match self {
            PageError::UnknownToken => Bilingual::new("无效的 token", "Unknown token."),
            PageError::Expired => Bilingual::new("token 已过期", "The token expired."),
            PageError::Finished => Bilingual::new("该 token 已使用", "The token was already used."),
            PageError::BadOutcome => Bilingual::new("无效的请求", "Unknown outcome."),
            PageError::Internal => Bilingual::new("内部错误", "Internal error."),
        }
    }

    pub(super) fn status(self) -> StatusCode {
        match self {
            PageError::UnknownToken => StatusCode::NOT_FOUND,
            PageError::Expired | PageError::Finished => StatusCode::GONE,
            PageError::BadOutcome => StatusCode::BAD_REQUEST,
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(super) fn missing(key: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("MISSING_ARGUMENTS: {key}"))
    }

    pub(super) fn bad(key: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("BAD_ARGUMENTS: {key}"))
    }

    pub(super) fn image(key: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("IMAGE_ERROR_UNSUPPORTED_FORMAT: {key}"),
        )
    }

    pub(super) fn authentication() -> Self {
        Self::new(StatusCode::FORBIDDEN, "AUTHENTICATION_ERROR")
    }

    pub(super) fn concurrency() -> Self {
        Self::new(StatusCode::FORBIDDEN, "CONCURRENCY_LIMIT_EXCEEDED")
    }

    pub(super) fn result_not_found() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "RESULT_NOT_FOUND")
    }

    pub(super) fn into_response(self, now_ms: i64, started: Instant) -> Response {
        let body = ErrorReply {
            error_message: self.message,
            request_id: Some(new_request_id(now_ms)),
            time_used: Some(elapsed_ms(started)),
        };
        let text = serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"error_message":"INTERNAL_ERROR"}"#.to_owned());
        json_response_ct(self.status, text)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------------------------

impl MegviiSimulator {
    /// A simulator for one account, on `clock`.
    pub fn new(cfg: MegviiSimConfig, clock: SimClock) -> Arc<Self> {
        crate::app::install_crypto_provider();
        let client = crate::vendors::http::client(NOTIFY_TIMEOUT, NOTIFY_TIMEOUT).ok();
        Arc::new(MegviiSimulator {
            cfg,
            clock,
            client,
            concurrency_pending: AtomicU32::new(0),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Routes relative to the mount point ([`MOUNT`]); see the module documentation.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/faceid/lite/get_token", post(get_token_handler))
            .route("/faceid/lite/do", get(page_handler).post(do_handler))
            .route("/faceid/lite/get_result", get(get_result_handler))
            .route("/{*path}", any(api_not_found_handler))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(self))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MegviiSimStats {
        self.lock().stats.clone()
    }

    /// The simulator's clock (advance it to expire tokens and results).
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Makes the notify of the next finished flow misbehave; it then resets to [`CallbackFault::None`].
    pub fn set_fault(&self, fault: CallbackFault) {
        self.lock().fault = fault;
    }

    /// The next `n` get_token calls answer 403 `CONCURRENCY_LIMIT_EXCEEDED`.
    pub fn inject_concurrency_limit(&self, n: u32) {
        let _ = self
            .concurrency_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(p.saturating_add(n))
            });
    }

    /// Does what the page does, without a browser: records the result, sends the notify (applying the fault) and
    /// waits for it (a [`CallbackFault::Late`] delay included), then says where the browser would go.
    pub async fn complete(
        &self,
        token: &str,
        outcome: PageOutcome,
    ) -> Result<CompletedFlow, String> {
        let (completed, plan) = self
            .finish(token, outcome)
            .map_err(|e| e.message().en.to_owned())?;
        self.deliver(plan).await;
        Ok(completed)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn take_concurrency_limit(&self) -> bool {
        self.concurrency_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    // -- get_token -------------------------------------------------------------------------------------------

    pub(super) fn get_token(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let started = Instant::now();
        let now = self.clock.now_ms();
        self.lock().stats.get_token += 1;
        match self.issue(headers, body, now) {
            Ok(reply) => {
                let text = serde_json::to_string(&GetTokenReply {
                    time_used: elapsed_ms(started),
                    ..reply
                })
                .unwrap_or_default();
                json_response_ct(StatusCode::OK, text)
            }
            Err(e) => e.into_response(now, started),
        }
    }

    pub(super) fn issue(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        now: i64,
    ) -> Result<GetTokenReply, ApiError> {
        if self.take_concurrency_limit() {
            return Err(ApiError::concurrency());
        }
        let body = body.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "REQUEST_ENTITY_TOO_LARGE")
        })?;
        let fields = Fields::from_request(headers, &body)?;
        let api_key = fields.required("api_key")?;
        let api_secret = fields.required("api_secret")?;
        if api_key != self.cfg.api_key || api_secret != self.cfg.api_secret {
            return Err(ApiError::authentication());
        }
        let params = validate_params(&fields, self.cfg.enforce_notify_ports)?;
        let biz_no = fields.required("biz_no")?.to_owned();
        let biz_extra_data = fields.optional("biz_extra_data").map(str::to_owned);

        let now_s = now.div_euclid(1000);
        let mut inner = self.lock();
        let token = loop {
            let t = uuid::Uuid::new_v4().simple().to_string();
            if !inner.tokens.contains_key(&t) {
                break t;
            }
        };
        let biz_id = format!("{now_s},{}", uuid::Uuid::new_v4());
        inner.tokens.insert(token.clone(), biz_id.clone());
        inner.flows.insert(
            biz_id.clone(),
            Flow {
                token: token.clone(),
                biz_id: biz_id.clone(),
                biz_no: biz_no.clone(),
                biz_extra_data,
                params,
                created_ms: now,
                status: LiteStatus::NotStarted,
                result: None,
                completed_ms: None,
                get_result_calls: 0,
            },
        );
        Ok(GetTokenReply {
            request_id: new_request_id(now),
            time_used: 0,
            token,
            biz_id,
            expired_time: now_s + TOKEN_TTL_MS / 1000,
            biz_no: Some(biz_no),
        })
    }

    // -- Page ------------------------------------------------------------------------------------------------

    pub(super) fn usable_flow<'a>(
        inner: &'a mut Inner,
        token: &str,
        now: i64,
    ) -> Result<&'a mut Flow, PageError> {
        let biz_id = inner.tokens.get(token).ok_or(PageError::UnknownToken)?;
        let flow = inner.flows.get_mut(biz_id).ok_or(PageError::UnknownToken)?;
        if flow.status.is_final() {
            return Err(PageError::Finished);
        }
        if now >= flow.created_ms.saturating_add(TOKEN_TTL_MS) {
            return Err(PageError::Expired);
        }
        Ok(flow)
    }

    pub(super) fn page(&self, query: Option<&str>) -> Response {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.page_views += 1;
        let token = query_param(query, "token").unwrap_or_default();
        match Self::usable_flow(&mut inner, &token, now) {
            Ok(flow) => {
                if flow.status == LiteStatus::NotStarted {
                    flow.status = LiteStatus::Processing;
                }
                html_response(StatusCode::OK, PAGE_CSP, render_page(flow))
            }
            Err(e) => error_page(e),
        }
    }

    pub(super) fn finish(
        &self,
        token: &str,
        outcome: PageOutcome,
    ) -> Result<(CompletedFlow, NotifyPlan), PageError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let fault = {
            let flow = Self::usable_flow(&mut inner, token, now)?;
            let result = build_result(flow, outcome, now.div_euclid(1000));
            flow.status = result.status;
            flow.result = Some(result);
            flow.completed_ms = Some(now);
            std::mem::take(&mut inner.fault)
        };
        let flow = Self::finished_flow(&inner, token).ok_or(PageError::Internal)?;
        let result = flow.result.as_ref().ok_or(PageError::Internal)?;
        let data = serde_json::to_string(result).map_err(|_| PageError::Internal)?;
        let sign = wire::sign(&self.cfg.api_secret, &data);
        let plan = self.notify_plan(flow, result, &data, &sign, fault)?;
        let completed = if flow.params.action_get {
            CompletedFlow {
                return_method: "GET".to_owned(),
                return_url: append_biz_id(&flow.params.return_url, &flow.biz_id),
                form: Vec::new(),
            }
        } else {
            CompletedFlow {
                return_method: "POST".to_owned(),
                return_url: flow.params.return_url.clone(),
                form: vec![("data".to_owned(), data), ("sign".to_owned(), sign)],
            }
        };
        Ok((completed, plan))
    }

    pub(super) fn finished_flow<'a>(inner: &'a Inner, token: &str) -> Option<&'a Flow> {
        inner.flows.get(inner.tokens.get(token)?)
    }

    pub(super) fn notify_plan(
        &self,
        flow: &Flow,
        result: &LiteResult,
        data: &str,
        sign: &str,
        fault: CallbackFault,
    ) -> Result<NotifyPlan, PageError> {
        let send = |delay: Duration, data: &str, sign: &str| NotifySend {
            delay,
            data: data.to_owned(),
            sign: sign.to_owned(),
        };
        let now = Duration::ZERO;
        let sends = match fault {
            CallbackFault::None => vec![send(now, data, sign)],
            CallbackFault::Duplicate => vec![send(now, data, sign), send(now, data, sign)],
            CallbackFault::Late(delay) => vec![send(delay, data, sign)],
            CallbackFault::Forged => {
                let wrong = format!("forged-{}", self.cfg.api_secret);
                vec![send(now, data, &wire::sign(&wrong, data))]
            }
            CallbackFault::Tampered => {
                let tampered = serde_json::to_string(&tamper(result.clone()))
                    .map_err(|_| PageError::Internal)?;
                vec![send(now, &tampered, sign)]
            }
            CallbackFault::Never => Vec::new(),
            CallbackFault::Reordered => {
                let stale = LiteResult {
                    status: LiteStatus::Processing,
                    fail_reason: None,
                    biz_info: flow.biz_info(),
                    idcard_info: None,
                    liveness_result: None,
                    verify_result: None,
                    will_result: None,
                    multifaces_tag: None,
                };
                let stale = serde_json::to_string(&stale).map_err(|_| PageError::Internal)?;
                let stale_sign = wire::sign(&self.cfg.api_secret, &stale);
                vec![send(now, data, sign), send(now, &stale, &stale_sign)]
            }
        };
        Ok(NotifyPlan {
            url: flow.params.notify_url.clone(),
            sends,
        })
    }

    pub(super) async fn deliver(&self, plan: NotifyPlan) {
        for send in plan.sends {
            if !send.delay.is_zero() {
                tokio::time::sleep(send.delay).await;
            }
            let delivered = match &self.client {
                Some(client) => client
                    .post(&plan.url)
                    .form(&[("data", send.data.as_str()), ("sign", send.sign.as_str())])
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => false,
            };
            let mut inner = self.lock();
            if delivered {
                inner.stats.notify_sent += 1;
            } else {
                inner.stats.notify_failed += 1;
            }
        }
    }

    pub(super) fn submit(self: &Arc<Self>, body: &[u8]) -> Response {
        let mut token = None;
        let mut outcome = None;
        for (k, v) in form_urlencoded::parse(body) {
            match k.as_ref() {
                "token" if token.is_none() => token = Some(v.into_owned()),
                "outcome" if outcome.is_none() => outcome = Some(v.into_owned()),
                _ => {}
            }
        }
        let Some(outcome) = outcome.as_deref().and_then(PageOutcome::parse) else {
            return error_page(PageError::BadOutcome);
        };
        let (completed, plan) = match self.finish(token.as_deref().unwrap_or_default(), outcome) {
            Ok(done) => done,
            Err(e) => return error_page(e),
        };
        let sim = Arc::clone(self);
        tokio::spawn(async move { sim.deliver(plan).await });
        browser_return(&completed)
    }

    // -- get_result ------------------------------------------------------------------------------------------

    pub(super) fn get_result(&self, query: Option<&str>) -> Response {
        let started = Instant::now();
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.get_result += 1;
        match self.result_reply(&mut inner, query, now) {
            Ok(mut reply) => {
                reply.time_used = Some(elapsed_ms(started));
                match serde_json::to_string(&reply) {
                    Ok(text) => json_response_ct(StatusCode::OK, text),
                    Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
                        .into_response(now, started),
                }
            }
            Err(e) => e.into_response(now, started),
        }
    }

    pub(super) fn result_reply(
        &self,
        inner: &mut Inner,
        query: Option<&str>,
        now: i64,
    ) -> Result<GetResultReply, ApiError> {
        let arg = |name: &str| query_param(query, name).filter(|v| !v.is_empty());
        let api_key = arg("api_key").ok_or_else(|| ApiError::missing("api_key"))?;
        let api_secret = arg("api_secret").ok_or_else(|| ApiError::missing("api_secret"))?;
        if api_key != self.cfg.api_key || api_secret != self.cfg.api_secret {
            return Err(ApiError::authentication());
        }
        let biz_id = arg("biz_id").ok_or_else(|| ApiError::missing("biz_id"))?;
        let return_image = match arg("return_image").as_deref() {
            None => 0,
            Some(v) => match v.parse::<u8>() {
                Ok(n) if n <= 6 && v.len() == 1 => n,
                _ => return Err(ApiError::bad("return_image")),
            },
        };
        let return_verify_time = match arg("return_verify_time").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(ApiError::bad("return_verify_time")),
        };
        let flow = inner
            .flows
            .get_mut(&biz_id)
            .filter(|f| f.retained(now))
            .ok_or_else(ApiError::result_not_found)?;
        if flow.get_result_calls >= MAX_GET_RESULT_CALLS {
            return Err(ApiError::bad("biz_id"));
        }
        flow.get_result_calls += 1;
        let mut result = match &flow.result {
            Some(r) if flow.status.is_final() => r.clone(),
            _ => LiteResult {
                status: flow.status,
                fail_reason: None,
                biz_info: flow.biz_info(),
                idcard_info: None,
                liveness_result: None,
                verify_result: None,
                will_result: None,
                multifaces_tag: None,
            },
        };
        if !return_verify_time {
            if let Some(v) = result.verify_result.as_mut() {
                v.verify_time = None;
            }
        }
        let images = (result.status == LiteStatus::Ok && return_image > 0)
            .then(|| result_images(&flow.params, return_image))
            .flatten();
        Ok(GetResultReply {
            result,
            request_id: Some(new_request_id(now)),
            time_used: Some(0),
            images,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
