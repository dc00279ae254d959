//! The `facegate` command: `serve [--sandbox [--sandbox-public]]`, `sandbox` (simulators alone), `check-config`,
//! `rotate-keys`.
//! A build without the `sandbox` cargo feature keeps the flags and the subcommand only to refuse them clearly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use facegate::app::Mode;
use facegate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "facegate",
    version,
    about = "One typed gRPC API for face real-name verification"
)]
struct Cli {
    /// TOML configuration file (defaults, then this file, then FACEGATE__SECTION__KEY variables).
    #[arg(long, global = true, env = "FACEGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Use the built-in vendor simulators and sandbox credentials (no vendor account needed). Only the
        /// command line turns the sandbox on; it listens on loopback unless --sandbox-public is given.
        #[arg(long)]
        sandbox: bool,
        /// With --sandbox: allow grpc.listen / http.listen addresses other than loopback (needs auth.callers, or
        /// auth.mode = "none" set on purpose).
        #[arg(long, requires = "sandbox")]
        sandbox_public: bool,
    },
    /// Run only the vendor simulators (for pointing another facegate, or a test, at them).
    Sandbox {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
    /// Validate the configuration and print the effective values, secrets masked.
    CheckConfig {
        /// `text`: the effective configuration (secrets masked) on stdout, findings on stderr. `json`: one object on
        /// stdout, `{"ok": bool, "errors": [..], "warnings": [..]}`, each finding with `key`, `source` and `message`
        /// (never a secret's value).
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
    },
    /// Re-seal, online, every stored record not sealed with the first key of store.encryption_keys (run after
    /// every replica has restarted with the new key first), printing how many it re-sealed.
    RotateKeys,
}

/// The process allocator: jemalloc with its background purging thread, so memory freed when streams and calls end
/// goes back to the OS (dirty pages decay after 10 s) instead of staying in glibc's arenas. Measured with 10k idle
/// StatusStreams opened and closed three times: glibc kept every page (RSS 29 MB -> 629 MB with 0 streams open),
/// mimalloc kept 3x its pre-stream RSS, jemalloc about 2x (1.4x with 100 watched sessions) and flat across rounds.
/// What jemalloc still kept was mostly the tracing registry's slots of the streams' RPC spans, which it never frees:
/// since those spans end when their stream opens, 30 s after 10k streams close RSS is 0.97x its pre-stream level
/// (one stream per session) and 1.13x (100 per session). Smaller thread caches (`tcache_max:1024`) measured about
/// the same (0.93x, 1.06x), so jemalloc runs with its defaults.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A 1x1 synthetic JPEG (not a face): enough for the sandbox, which checks the image format only.
#[cfg(feature = "sandbox")]
const DEMO_JPEG_B64: &str = "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=";

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(not(feature = "sandbox"))]
    if matches!(
        cli.command,
        Command::Serve { sandbox: true, .. } | Command::Sandbox { .. }
    ) {
        eprintln!("facegate: {}", facegate::mode::SANDBOX_NOT_BUILT);
        return ExitCode::from(2);
    }
    if let Command::CheckConfig { format } = &cli.command {
        return check_config(cli.config.as_deref(), format == "json");
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("facegate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(f) = &cli.log_format {
        config.log.format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    // An OTEL_* variable facegate cannot honour refuses the start (naming it) rather than export nothing quietly.
    let telemetry =
        match facegate::telemetry::TelemetryConfig::from_env(config.log.format, &config.log.filter)
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("facegate: {e}");
                return ExitCode::from(2);
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("facegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Inside the runtime: the span exporter runs on it.
        let telemetry = facegate::telemetry::init(&telemetry);
        let result = match cli.command {
            Command::Serve {
                sandbox,
                sandbox_public,
            } => serve(config, sandbox, sandbox_public).await,
            Command::Sandbox { listen } => simulators(listen).await,
            Command::CheckConfig { .. } => Ok(()),
            Command::RotateKeys => rotate_keys(&config).await,
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "facegate stopped with an error");
        }
        // The servers are down: export the spans still buffered.
        telemetry.shutdown().await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: loads and judges the configuration for a production start (sandbox mode is only ever chosen by
/// `serve --sandbox`), and the `OTEL_*` variables the start would read.
fn check_config(file: Option<&std::path::Path>, json: bool) -> ExitCode {
    use facegate::config::ConfigIssue;
    let report = |errors: &[ConfigIssue], warnings: &[ConfigIssue]| {
        let out = serde_json::json!({
            "ok": errors.is_empty(),
            "errors": errors,
            "warnings": warnings,
        });
        println!("{out}");
    };
    let (config, sources) = match Config::load_with_sources(file, std::env::vars()) {
        Ok(loaded) => loaded,
        Err(e) => {
            if json {
                report(&e.issues(), &[]);
            } else {
                eprintln!("facegate: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let problems = config.start_problems(false);
    let mut errors = sources.issues(&problems.errors);
    if let Err(e) =
        facegate::telemetry::TelemetryConfig::from_env(config.log.format, &config.log.filter)
    {
        let variable = e.variable().unwrap_or_default();
        errors.push(ConfigIssue {
            key: variable.to_owned(),
            source: format!("environment variable {variable}"),
            message: e.to_string(),
        });
    }
    let warnings: Vec<String> = config
        .warnings()
        .into_iter()
        .chain(problems.warnings)
        .collect();
    if json {
        report(&errors, &sources.issues(&warnings));
    } else {
        print!("{}", config.to_masked_toml());
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        for e in &errors {
            eprintln!("error: {e}");
        }
        if errors.is_empty() {
            eprintln!("configuration is valid");
        } else {
            eprintln!("facegate: the configuration is refused for production");
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

async fn rotate_keys(config: &Config) -> Result<(), String> {
    let store = facegate::app::open_store(config, false, false)
        .await
        .map_err(|e| format!("cannot open the session store: {e}"))?;
    let n = store.reseal().await.map_err(|e| e.to_string())?;
    println!("re-sealed {n} records");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The mode the flags ask for.
#[cfg(feature = "sandbox")]
fn mode(sandbox: bool, public: bool) -> Result<Mode, String> {
    Ok(if sandbox {
        Mode::Sandbox(facegate::app::SandboxOptions {
            simulators: None,
            public,
        })
    } else {
        Mode::Production
    })
}

/// Without the feature, only production (`main` refused `--sandbox` before the runtime started).
#[cfg(not(feature = "sandbox"))]
fn mode(sandbox: bool, _public: bool) -> Result<Mode, String> {
    if sandbox {
        Err(facegate::mode::SANDBOX_NOT_BUILT.to_owned())
    } else {
        Ok(Mode::Production)
    }
}

async fn serve(mut config: Config, sandbox: bool, sandbox_public: bool) -> Result<(), String> {
    let mode = mode(sandbox, sandbox_public)?;
    if mode.is_sandbox() {
        if config.store.sqlite_path == Config::default().store.sqlite_path {
            config.store.sqlite_path = PathBuf::from("facegate-sandbox.db");
        }
    } else {
        // The vendor warnings concern real vendors; in sandbox mode every adapter points at a simulator.
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
    }
    let running = facegate::app::start(config, mode)
        .await
        .map_err(|e| e.to_string())?;
    #[cfg(feature = "sandbox")]
    if running.is_sandbox() {
        print_sandbox_help(&running);
    }
    let handle = running.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = handle.send(true);
    });
    running.wait().await.map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(feature = "sandbox")]
fn print_sandbox_help(running: &facegate::app::Running) {
    let id = facegate::sandbox::test_id_number(1).unwrap_or_default();
    let request_id = format!("demo-{}", facegate::domain::now_ms());
    println!(
        "\nfacegate sandbox: gRPC on {grpc}, HTTP on {http} (simulators under /sandbox/). Try:\n\n\
         grpcurl -plaintext -d '{{\"request_id\":\"{request_id}\",\"vendor\":\"VENDOR_JUHE\",\
         \"identity\":{{\"name\":\"测试用户\",\"id_number\":\"{id}\"}},\
         \"images\":[{{\"data\":\"{DEMO_JPEG_B64}\",\"role\":\"IMAGE_ROLE_PROBE\"}}]}}' \
         {grpc} facegate.v1.VerificationService/StartSession\n\n\
         Scenarios: the ID number's sequence digits (characters 15-17) choose the outcome; see README.md.\n\n\
         Baidu H5 (prints the session id and its user_url: open the URL in a browser and pick an outcome on the \
         sandbox page; jq prints the URL as is, where grpcurl's JSON escapes its & as \\u0026):\n\n\
         grpcurl -plaintext -d '{{\"request_id\":\"{request_id}-baidu\",\"vendor\":\"VENDOR_BAIDU\",\
         \"identity\":{{\"name\":\"测试用户\",\"id_number\":\"{id}\"}}}}' \
         {grpc} facegate.v1.VerificationService/StartSession | jq -r '.session.id, .session.userUrl'\n\n\
         Megvii FaceID Lite (open the user_url; the simulator signs and sends the callback to this server):\n\n\
         grpcurl -plaintext -d '{{\"request_id\":\"{request_id}-megvii\",\"vendor\":\"VENDOR_MEGVII\",\
         \"identity\":{{\"name\":\"测试用户\",\"id_number\":\"{id}\"}}}}' \
         {grpc} facegate.v1.VerificationService/StartSession | jq -r '.session.id, .session.userUrl'\n",
        grpc = running.grpc_addr,
        http = running.http_addr,
    );
}

#[cfg(feature = "sandbox")]
async fn simulators(listen: SocketAddr) -> Result<(), String> {
    let sandbox = facegate::sandbox::Sandbox::new();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address of {listen}: {e}"))?;
    print!("{}", simulator_listing(&format!("http://{local}")));
    tracing::info!(listen = %local, "vendor simulators serving under /sandbox/");
    axum::serve(listener, sandbox.router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// What `facegate sandbox` serves under `base` (`http://host:port`): every simulator's endpoints and the sandbox
/// credentials it accepts, with the settings `serve --sandbox` gives its adapters (taken from
/// `facegate::sandbox::configure`, so the listing and the adapters cannot disagree).
#[cfg(feature = "sandbox")]
fn simulator_listing(base: &str) -> String {
    use facegate::sandbox as sb;
    let mut cfg = Config::default();
    sb::configure(&mut cfg, base);
    let plans = sb::BAIDU_PLANS
        .iter()
        .map(|p| format!("{} (plan_id {})", p.name, p.plan_id))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "facegate sandbox: vendor simulators on {base}\n\n\
         Juhe verifyface: key {juhe_key}, openid {juhe_openid}\n\
         \x20 POST {juhe}/verifyface/verify\n\
         \x20 POST {juhe}/verifyface/verifyEncry\n\
         \x20 juhe.base_url = {juhe}\n\n\
         Baidu H5 faceprint: api_key {baidu_key}, secret_key {baidu_secret}, app id {baidu_app}; plans {plans}\n\
         \x20 GET/POST {baidu}/oauth/2.0/token\n\
         \x20 POST {baidu}/rpc/2.0/brain/solution/faceprint/... (verifyToken/generate, idcard/submit, \
         uploadMatchImage, result/getall, result/detail, result/stat, ...)\n\
         \x20 GET  {baidu_page} (the H5 page)\n\
         \x20 baidu.base_url = {baidu}, baidu.page_url = {baidu_page}\n\n\
         Megvii FaceID Lite: api_key {megvii_key}, api_secret {megvii_secret} (it signs the notify callbacks)\n\
         \x20 POST {megvii}/faceid/lite/get_token\n\
         \x20 GET  {megvii_page}?token=... (the H5 page)\n\
         \x20 GET  {megvii}/faceid/lite/get_result\n\
         \x20 megvii.base_url = {megvii}, megvii.page_url = {megvii_page}\n",
        juhe_key = sb::JUHE_KEY,
        juhe_openid = sb::JUHE_OPENID,
        juhe = cfg.juhe.base_url,
        baidu_key = sb::BAIDU_API_KEY,
        baidu_secret = sb::BAIDU_SECRET_KEY,
        baidu_app = sb::BAIDU_APP_ID,
        baidu = cfg.baidu.base_url,
        baidu_page = cfg.baidu.page_url,
        megvii_key = sb::MEGVII_API_KEY,
        megvii_secret = sb::MEGVII_API_SECRET,
        megvii = cfg.megvii.base_url,
        megvii_page = cfg.megvii.page_url,
    )
}

#[cfg(not(feature = "sandbox"))]
async fn simulators(_listen: SocketAddr) -> Result<(), String> {
    Err(facegate::mode::SANDBOX_NOT_BUILT.to_owned())
}
