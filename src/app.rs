//! Wiring: store, vendors, domain service, gRPC and HTTP listeners, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::domain::adapter::Vendors;
use crate::domain::quota::Quotas;
use crate::domain::service::{ServiceConfig, SessionService};
use crate::grpc::auth::{AuthLayer, Authenticator};
use crate::grpc::codec::MessageLimit;
use crate::grpc::observe::Observed;
#[cfg(feature = "sandbox")]
use crate::grpc::sandbox::SandboxApi;
use crate::grpc::VerificationApi;
use crate::health::Health;
pub use crate::mode::Mode;
#[cfg(feature = "sandbox")]
pub use crate::mode::SandboxOptions;
use crate::net::{self, tls, TlsSource};
#[cfg(feature = "sandbox")]
use crate::proto::v1::sandbox_service_server::SandboxServiceServer;
use crate::proto::v1::verification_service_server::VerificationServiceServer;
#[cfg(feature = "sandbox")]
use crate::sandbox::Sandbox;
use crate::status::poller::PollConfig;
use crate::status::Hub;
use crate::store::postgres::PostgresStore;
use crate::store::seal::KeyRing;
use crate::store::sqlite::SqliteStore;
use crate::store::{SessionStore, StoreError, StoreOptions};
use crate::vendors::{baidu::BaiduAdapter, juhe::JuheAdapter, megvii::MegviiAdapter};

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "facegate.v1.VerificationService";

/// Most open connections on the operations listener (`http.admin_listen`).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Something else stopped start-up.
    #[error("{0}")]
    Startup(String),
    /// A server failed while running.
    #[error("server error: {0}")]
    Serve(String),
}

/// A running service.
pub struct Running {
    /// Bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Bound address of the operations listener (`http.admin_listen`), when configured.
    pub admin_addr: Option<SocketAddr>,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// The simulators, in sandbox mode.
    #[cfg(feature = "sandbox")]
    pub sandbox: Option<Arc<Sandbox>>,
    /// The domain service.
    pub service: Arc<SessionService>,
    /// The effective configuration (sandbox adjustments applied).
    pub config: Config,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), AppError>>,
}

impl Running {
    /// Whether vendor simulators serve this instance's sessions.
    pub fn is_sandbox(&self) -> bool {
        #[cfg(feature = "sandbox")]
        return self.sandbox.is_some();
        #[cfg(not(feature = "sandbox"))]
        return false;
    }

    /// Starts a graceful shutdown and waits for it.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the servers stop.
    pub async fn wait(self) -> Result<(), AppError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(AppError::Serve(format!("server task failed: {e}"))),
        }
    }

    /// A handle that starts a graceful shutdown when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

fn loopback_of(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Each listener's connection limits from `grpc.*` / `http.*`, scaled down (with a warning) when together they would
/// not stay below the process's open-file limit.
fn listener_limits(config: &Config) -> (net::Limits, net::Limits) {
    let mut grpc = net::Limits {
        max_connections: config.grpc.max_connections,
        preface_timeout: Duration::from_secs(config.grpc.preface_timeout_secs),
    };
    let mut http = net::Limits {
        max_connections: config.http.max_connections,
        preface_timeout: Duration::from_secs(config.http.preface_timeout_secs),
    };
    if let Some(open_files) = net::open_files_limit() {
        if let Some(fitted) =
            net::fit_to_open_files(&[grpc.max_connections, http.max_connections], open_files)
        {
            if let [g, h] = fitted[..] {
                tracing::warn!(
                    open_files,
                    grpc_max_connections = g,
                    http_max_connections = h,
                    "grpc.max_connections + http.max_connections do not fit the open-file limit \
                     (RLIMIT_NOFILE); lowered to these (raise the limit, e.g. ulimit -n, to allow more)"
                );
                grpc.max_connections = g;
                http.max_connections = h;
            }
        }
    }
    (grpc, http)
}

/// Installs the process-wide TLS crypto provider (ring) once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PostgreSQL store when `store.database_url` is set, else the SQLite file. Sessions stored before tenants
/// existed get `auth.default_tenant`, and the live mode of this start.
///
/// `serving`: the store is opened for `serve`, the one process that serves an SQLite file (it takes the file's lock
/// and refuses a second service; see [`SqliteStore::open_exclusive`]); tools pass `false`.
pub async fn open_store(
    config: &Config,
    sandbox: bool,
    serving: bool,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    open_store_with(config, sandbox, serving, None).await
}

/// [`open_store`], its creates and updates enqueuing webhook messages through `outbox`.
pub async fn open_store_with(
    config: &Config,
    sandbox: bool,
    serving: bool,
    outbox: Option<Arc<dyn crate::domain::webhooks::OutboxSource>>,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    let keys = match config.store.key_ring() {
        Ok(Some(keys)) => keys,
        Ok(None) if sandbox => {
            tracing::warn!(
                "store.encryption_keys is not set: sessions are sealed with an ephemeral key, so those stored in \
                 this run cannot be read after a restart (configure a key to keep them)"
            );
            KeyRing::ephemeral()
        }
        Ok(None) => {
            return Err(StoreError::Database(
                "no encryption key is configured (store.encryption_keys)".into(),
            ))
        }
        Err(problems) => return Err(StoreError::Database(problems.join("; "))),
    };
    tracing::info!(key_ids = ?keys.key_ids(), "store encryption keys");
    let options = StoreOptions {
        default_tenant: config.auth.default_tenant.clone(),
        legacy_live_mode: !sandbox,
        keys,
        outbox,
    };
    if config.store.database_url.is_empty() {
        tracing::info!(path = %config.store.sqlite_path.display(), "session store: SQLite");
        let path = &config.store.sqlite_path;
        Ok(Arc::new(if serving {
            SqliteStore::open_exclusive(path, &options).await?
        } else {
            SqliteStore::open(path, &options).await?
        }))
    } else {
        tracing::info!("session store: PostgreSQL");
        Ok(Arc::new(
            PostgresStore::connect(config.store.database_url.expose(), &options).await?,
        ))
    }
}

/// Starts the service in `mode`: binds both listeners, opens the store, resumes what a previous run left, and serves
/// until a shutdown is requested through [`Running::shutdown`] or its handle. In sandbox mode the simulators of
/// [`SandboxOptions::simulators`] are reused (they keep their state across a restart of the service, as a vendor
/// would), and the listeners must be loopback unless [`SandboxOptions::public`] is set
/// ([`crate::mode::check_sandbox_exposure`]).
#[cfg_attr(not(feature = "sandbox"), allow(unused_mut))]
pub async fn start(mut config: Config, mode: Mode) -> Result<Running, AppError> {
    install_crypto_provider();
    // Sandbox mode is decided by `mode`, once; everything below follows it. The safe-default rules (callers, the
    // wire) read the operator's own settings, before sandbox mode points the vendor URLs at its loopback simulators.
    let sandbox_mode = mode.is_sandbox();
    #[cfg(feature = "sandbox")]
    if let Mode::Sandbox(options) = &mode {
        crate::mode::check_sandbox_exposure(&config, options.public).map_err(AppError::Startup)?;
    }
    let problems = config.start_problems(sandbox_mode);
    if !problems.errors.is_empty() {
        return Err(AppError::Startup(format!(
            "refusing to start: {}",
            problems.errors.join("; ")
        )));
    }
    for w in &problems.warnings {
        tracing::warn!("{w}");
    }
    let authenticator =
        Authenticator::new(&config.auth, sandbox_mode).map_err(AppError::Startup)?;
    let grpc_tls = TlsSource::load("grpc.tls", &config.grpc.tls, tls::GRPC_ALPN)
        .await
        .map_err(AppError::Startup)?;
    let http_tls = TlsSource::load("http.tls", &config.http.tls, tls::HTTP_ALPN)
        .await
        .map_err(AppError::Startup)?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.http.listen,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| AppError::Startup(format!("cannot read HTTP address: {e}")))?;
    let grpc_listener = TcpListener::bind(config.grpc.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.grpc.listen,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| AppError::Startup(format!("cannot read gRPC address: {e}")))?;
    let admin_listener = match config.http.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind { addr, source })?,
        ),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(|e| AppError::Startup(format!("cannot read the admin address: {e}")))?;

    #[cfg(feature = "sandbox")]
    let sandbox = match mode {
        Mode::Production => None,
        Mode::Sandbox(options) => {
            crate::sandbox::configure(&mut config, &format!("http://{}", loopback_of(http_addr)));
            Some(
                options
                    .simulators
                    .unwrap_or_else(|| Arc::new(Sandbox::new())),
            )
        }
    };
    #[cfg(not(feature = "sandbox"))]
    let Mode::Production = mode;

    // Webhook endpoints: the store enqueues their messages with every change; the worker sends them.
    let webhook_endpoints = Arc::new(
        config
            .webhooks
            .endpoints(&config.auth.default_tenant, &config.tenants())
            .map_err(|p| AppError::Startup(format!("refusing to start: {}", p.join("; "))))?,
    );
    let webhook_wake = Arc::new(tokio::sync::Notify::new());
    let outbox: Option<Arc<dyn crate::domain::webhooks::OutboxSource>> =
        (!webhook_endpoints.is_empty()).then(|| {
            Arc::new(crate::webhooks::Outbox::new(
                Arc::clone(&webhook_endpoints),
                Arc::clone(&webhook_wake),
            )) as Arc<dyn crate::domain::webhooks::OutboxSource>
        });
    let store = open_store_with(&config, sandbox_mode, true, outbox)
        .await
        .map_err(|e| AppError::Startup(format!("cannot open the session store: {e}")))?;
    let webhook_store = Arc::clone(&store);
    // Given up when the service stops (see `SessionStore::release`).
    let owned_store = Arc::clone(&store);
    let pinged_store = Arc::clone(&store);
    let public_base = config.public_base_url(loopback_of(http_addr));
    let vendors = Arc::new(Vendors {
        juhe: if config.juhe.key.is_empty() {
            None
        } else {
            Some(Box::new(
                JuheAdapter::new(&config.juhe).map_err(AppError::Startup)?,
            ))
        },
        baidu: if config.baidu.api_key.is_empty() || config.baidu.plans.is_empty() {
            None
        } else {
            Some(Box::new(
                BaiduAdapter::new(&config.baidu, &public_base).map_err(AppError::Startup)?,
            ))
        },
        megvii: if config.megvii.api_key.is_empty() || config.megvii.api_secret.is_empty() {
            None
        } else {
            Some(Box::new(
                MegviiAdapter::new(
                    &config.megvii,
                    &public_base,
                    config.retention.revealable_secs,
                )
                .map_err(AppError::Startup)?,
            ))
        },
    });
    let vendor_configured =
        vendors.juhe.is_some() || vendors.baidu.is_some() || vendors.megvii.is_some();
    if !vendor_configured {
        tracing::warn!(
            "no vendor is configured (juhe.key, baidu.api_key + baidu.plans, megvii.api_key + megvii.api_secret): \
             readiness stays NOT_SERVING"
        );
    }
    let health = Health::new(vendor_configured);
    // `shutdown` is the request; `stopping` follows after the drain delay and stops listeners and streams.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let service_cfg = ServiceConfig {
        session_ttl_ms: i64::try_from(config.session.ttl_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        default_far: config.session.default_target_false_accept_rate,
        attempt_stale_ms: i64::try_from(
            (config.juhe.timeout_secs.max(config.baidu.timeout_secs * 3) * 2 + 30) * 1000,
        )
        .unwrap_or(i64::MAX),
        replay_wait: Duration::from_secs(
            config.juhe.timeout_secs.max(config.baidu.timeout_secs * 3) + 5,
        ),
        poll: PollConfig {
            min_interval: Duration::from_millis(config.status.poll_min_interval_ms),
            max_interval: Duration::from_millis(config.status.poll_max_interval_ms),
            jitter: config.status.poll_jitter,
            // About a second of the Baidu budget in flight: enough to use all of it, few enough that the
            // earliest-deadline choice stays fresh.
            in_flight: (config.baidu.poll_qps.ceil() as usize).clamp(2, 64),
        },
        watch_refresh: (!config.store.database_url.is_empty())
            .then(|| Duration::from_millis(config.session.watch_refresh_ms.max(100))),
        final_check_grace_ms: i64::try_from(
            config.status.final_check_grace_secs.saturating_mul(1000),
        )
        .unwrap_or(i64::MAX),
        live_mode: !sandbox_mode,
        require_consent: config.session.require_consent(sandbox_mode),
        personal_data_max_ms: i64::try_from(
            config
                .retention
                .personal_data_max_secs(&config.session)
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX),
        session_rows_max_ms: i64::try_from(
            config
                .retention
                .session_rows_days
                .saturating_mul(86_400_000),
        )
        .unwrap_or(i64::MAX),
    };
    crate::metrics::global().register_tenants(
        std::iter::once(config.auth.default_tenant.as_str())
            .chain(config.auth.callers.iter().map(|c| c.tenant.as_str())),
    );
    let service = Arc::new(
        SessionService::new(
            store,
            vendors,
            Arc::new(Hub::new()),
            service_cfg,
            shutdown_rx.clone(),
        )
        .await
        .map_err(|e| AppError::Startup(format!("cannot start the session service: {e}")))?
        .with_quotas(Arc::new(Quotas::new(&config.auth)))
        .with_router(config.routing.router())
        .with_webhooks(
            webhook_endpoints.iter().map(|e| e.name.clone()).collect(),
            Arc::clone(&webhook_wake),
        ),
    );
    crate::metrics::global()
        .register_webhook_endpoints(webhook_endpoints.iter().map(|e| e.name.as_str()));
    service.enable_polling();
    let recovered = service
        .recover(config.store.database_url.is_empty())
        .await
        .map_err(|e| AppError::Startup(format!("cannot recover sessions: {e}")))?;
    if recovered > 0 {
        tracing::warn!(
            sessions = recovered,
            "vendor calls were under way at the last stop; marked outcome unknown"
        );
    }
    match service.expire_due().await {
        Ok(n) if n > 0 => tracing::info!(expired = n, "expired sessions at start-up"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "expiry at start-up failed"),
    }

    // gRPC: the service, health, reflection (v1 and v1alpha; facegate.v1, health and google.rpc).
    // The overall status ("") is liveness, the service's is readiness; both follow `health` (crate::health).
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    crate::health::set_grpc(&health_reporter, SERVICE_NAME, &health.current()).await;
    tokio::spawn(crate::health::report_grpc(
        Arc::clone(&health),
        health_reporter,
        SERVICE_NAME,
        stopping_rx.clone(),
    ));
    tokio::spawn(crate::health::check_store(
        pinged_store,
        Arc::clone(&health),
        Duration::from_millis(config.health.store_check_interval_ms.max(100)),
        Duration::from_millis(config.health.store_check_timeout_ms.max(100)),
        stopping_rx.clone(),
    ));
    // A sandbox server lists facegate.v1.SandboxService too; a production server's reflection does not know it.
    let facegate_descriptors = if sandbox_mode {
        crate::proto::SANDBOX_FILE_DESCRIPTOR_SET
    } else {
        crate::proto::FILE_DESCRIPTOR_SET
    };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(facegate_descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The error details every error carries (ErrorInfo, BadRequest, RetryInfo, QuotaFailure), so that
            // grpcurl and buf curl print them decoded.
            .register_encoded_file_descriptor_set(crate::proto::GOOGLE_RPC_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| AppError::Startup(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| AppError::Startup(format!("reflection: {e}")))?;
    let api = VerificationApi::new(
        Arc::clone(&service),
        Duration::from_secs(config.grpc.request_timeout_secs),
    );
    let max = config.grpc.max_message_bytes;
    // Spans, request ids, trace context and RPC metrics wrap the service; handlers know nothing of them.
    // Requests over the limit and requests that do not decode are refused with an ErrorInfo (grpc::codec).
    // The sandbox's test controls, on the same listener and behind the same layers, only in sandbox mode.
    #[cfg(feature = "sandbox")]
    let sandbox_service = sandbox.as_ref().map(|simulators| {
        Observed::new(MessageLimit::new(
            SandboxServiceServer::new(SandboxApi::new(api.clone(), Arc::clone(simulators)))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            max,
        ))
    });
    let grpc_service = Observed::new(MessageLimit::new(
        VerificationServiceServer::new(api)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        max,
    ));

    let mut requested = shutdown_rx.clone();
    let draining = Arc::clone(&health);
    let drain = Duration::from_secs(config.grpc.drain_delay_secs);
    tokio::spawn(async move {
        if requested.wait_for(|v| *v).await.is_err() {
            return;
        }
        // Tell load balancers first, keep serving through the drain delay, then stop taking connections and let
        // in-flight calls finish.
        draining.set_draining();
        tracing::info!(drain_secs = drain.as_secs(), "draining: health NOT_SERVING");
        tokio::time::sleep(drain).await;
        let _ = stopping_tx.send(true);
        tracing::info!("stopping: finishing in-flight calls");
    });
    let mut grpc_stop = stopping_rx.clone();
    let grpc_signal = async move {
        let _ = grpc_stop.wait_for(|v| *v).await;
    };
    // Both listeners accept through `net`: TCP_NODELAY on every socket (tonic's `tcp_nodelay` does not apply to
    // an incoming stream), TLS when configured, and for gRPC a PeerInfo in every request's extensions.
    let (grpc_limits, http_limits) = listener_limits(&config);
    let grpc_incoming = net::incoming_with(
        "grpc",
        grpc_listener,
        grpc_tls,
        grpc_limits,
        stopping_rx.clone(),
    );
    // Authentication wraps every service, health and reflection included (they decide themselves whether to be open).
    let grpc_routes = crate::grpc::server_builder(&config.grpc)
        .layer(AuthLayer::new(authenticator))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(grpc_service);
    #[cfg(feature = "sandbox")]
    let grpc_routes = grpc_routes.add_optional_service(sandbox_service);
    let grpc_server = grpc_routes.serve_with_incoming_shutdown(grpc_incoming, grpc_signal);

    let http_conns = net::accept_with(
        "http",
        http_listener,
        http_tls,
        http_limits,
        stopping_rx.clone(),
    );
    #[cfg_attr(not(feature = "sandbox"), allow(unused_mut))]
    let mut http_routes = if admin_listener.is_some() {
        crate::http::public_router(Arc::clone(&service))
    } else {
        crate::http::router(Arc::clone(&service), Arc::clone(&health))
    };
    #[cfg(feature = "sandbox")]
    if let Some(sb) = &sandbox {
        http_routes = http_routes.merge(sb.router());
    }
    let http_server = crate::http::serve::serve(
        http_conns,
        http_routes,
        Duration::from_secs(config.http.header_read_timeout_secs),
        stopping_rx.clone(),
    );

    // The operations listener: plaintext, few connections (the kubelet and Prometheus).
    let admin_server = admin_listener.map(|listener| {
        let conns = net::accept_with(
            "admin",
            listener,
            None,
            net::Limits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                preface_timeout: Duration::from_secs(config.http.preface_timeout_secs),
            },
            stopping_rx.clone(),
        );
        crate::http::serve::serve(
            conns,
            crate::http::admin_router(Arc::clone(&service), Arc::clone(&health)),
            Duration::from_secs(config.http.header_read_timeout_secs),
            stopping_rx.clone(),
        )
    });

    let sweeper = tokio::spawn(crate::status::expiry::run(
        Arc::clone(&service),
        Duration::from_secs(config.session.sweep_interval_secs),
        stopping_rx.clone(),
    ));

    let webhooks = if webhook_endpoints.is_empty() {
        None
    } else {
        if config.store.database_url.is_empty() {
            // This process owns the SQLite file: a lease in it is a previous run's, whose attempt ended with it.
            match webhook_store.release_webhook_leases().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(messages = n, "webhook leases of the last run released"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release the last run's webhook leases")
                }
            }
        }
        let worker = crate::webhooks::deliver::Worker::new(
            webhook_store,
            &webhook_endpoints,
            &config.webhooks,
            Arc::clone(&webhook_wake),
        )
        .map_err(AppError::Startup)?;
        tracing::info!(endpoints = webhook_endpoints.len(), "webhooks: delivering");
        Some(tokio::spawn(worker.run(stopping_rx.clone())))
    };
    let webhook_timeout = Duration::from_secs(config.webhooks.timeout_secs.saturating_add(1));

    let grace = Duration::from_secs(config.grpc.shutdown_grace_secs);
    let mut grace_rx = stopping_rx;
    let task = tokio::spawn(async move {
        let servers = async {
            let admin = async {
                if let Some(server) = admin_server {
                    server.await;
                }
            };
            let (g, (), ()) = tokio::join!(grpc_server, http_server, admin);
            g.map_err(|e| AppError::Serve(format!("gRPC: {e}")))?;
            Ok::<(), AppError>(())
        };
        tokio::pin!(servers);
        let result = tokio::select! {
            r = &mut servers => r,
            _ = async {
                let _ = grace_rx.wait_for(|v| *v).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("shutdown grace period over; stopping with calls still open");
                Ok(())
            }
        };
        sweeper.abort();
        if let Some(worker) = webhooks {
            // The worker stops with `stopping` and gives attempts in flight their timeout.
            let abort = worker.abort_handle();
            if tokio::time::timeout(webhook_timeout, worker).await.is_err() {
                abort.abort();
            }
        }
        owned_store.release();
        result
    });

    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        admin = ?admin_addr,
        grpc_tls = config.grpc.tls.enabled(),
        http_tls = config.http.tls.enabled(),
        sandbox = sandbox_mode,
        "facegate serving"
    );
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_addr,
        health,
        #[cfg(feature = "sandbox")]
        sandbox,
        service,
        config,
        shutdown: shutdown_tx,
        task,
    })
}
