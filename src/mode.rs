//! How the service runs: production, or sandbox (vendor simulators). Only the command line chooses it
//! (`facegate serve --sandbox`), never the configuration, and only a build with the `sandbox` cargo feature has the
//! simulators at all.

use std::net::SocketAddr;
#[cfg(feature = "sandbox")]
use std::sync::Arc;

use crate::config::{AuthMode, Config};
#[cfg(feature = "sandbox")]
use crate::sandbox::Sandbox;

/// The message a build without the `sandbox` feature answers `serve --sandbox` and `sandbox` with.
pub const SANDBOX_NOT_BUILT: &str =
    "this facegate was built without the sandbox feature; it has no vendor \
     simulators and serves real vendors only. To try the sandbox, build with the default features \
     (`cargo run --release -- serve --sandbox`)";

/// How [`crate::app::start`] runs the service.
pub enum Mode {
    /// Real vendors, with the credentials and URLs of the configuration.
    Production,
    /// The built-in vendor simulators on the HTTP listener, every adapter pointed at them with sandbox credentials.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxOptions),
}

/// Sandbox settings, all from the command line.
#[cfg(feature = "sandbox")]
#[derive(Default)]
pub struct SandboxOptions {
    /// Simulators to reuse (they keep their state across a restart of the service, as a vendor would); new ones
    /// when `None`.
    pub simulators: Option<Arc<Sandbox>>,
    /// `--sandbox-public`: listen on addresses other than loopback.
    pub public: bool,
}

impl Mode {
    /// Sandbox mode with new simulators, on loopback only.
    #[cfg(feature = "sandbox")]
    pub fn sandbox() -> Self {
        Mode::Sandbox(SandboxOptions::default())
    }

    /// Whether sessions are served by simulators (the opposite of a session's `live_mode`).
    pub fn is_sandbox(&self) -> bool {
        match self {
            Mode::Production => false,
            #[cfg(feature = "sandbox")]
            Mode::Sandbox(_) => true,
        }
    }
}

/// The sandbox's exposure rule: it binds loopback unless `--sandbox-public` is given, and a public sandbox must
/// not be an open door: it needs callers in `auth.callers`, or `auth.mode = "none"` set on purpose.
pub fn check_sandbox_exposure(config: &Config, public: bool) -> Result<(), String> {
    let exposed: Vec<String> = [
        ("grpc.listen", config.grpc.listen),
        ("http.listen", config.http.listen),
    ]
    .into_iter()
    .chain(config.http.admin_listen.map(|a| ("http.admin_listen", a)))
    .filter(|(_, addr): &(&str, SocketAddr)| !addr.ip().is_loopback())
    .map(|(name, addr)| format!("{name} = {addr}"))
    .collect();
    if public {
        if config.auth.callers.is_empty() && config.auth.mode != AuthMode::None {
            return Err(
                "--sandbox-public needs callers in auth.callers (or auth.mode = \"none\" set on purpose): a \
                 sandbox reachable from other machines must not accept every request"
                    .to_owned(),
            );
        }
        Ok(())
    } else if exposed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "sandbox mode listens on loopback only, but {} is not a loopback address; pass --sandbox-public to \
             listen there",
            exposed.join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CallerConfig;

    fn config(grpc: &str, http: &str) -> Config {
        let mut c = Config::default();
        c.grpc.listen = grpc.parse().unwrap();
        c.http.listen = http.parse().unwrap();
        c
    }

    #[test]
    fn loopback_is_accepted_without_the_flag() {
        for (g, h) in [
            ("127.0.0.1:50051", "127.0.0.1:8080"),
            ("127.0.0.2:0", "[::1]:0"),
        ] {
            assert_eq!(check_sandbox_exposure(&config(g, h), false), Ok(()));
        }
    }

    #[test]
    fn other_addresses_need_sandbox_public() {
        let e =
            check_sandbox_exposure(&config("0.0.0.0:50051", "127.0.0.1:8080"), false).unwrap_err();
        assert!(
            e.contains("--sandbox-public") && e.contains("grpc.listen = 0.0.0.0:50051"),
            "{e}"
        );
        assert!(!e.contains("http.listen"), "{e}");
        let e = check_sandbox_exposure(&config("127.0.0.1:0", "[::]:8080"), false).unwrap_err();
        assert!(e.contains("http.listen = [::]:8080"), "{e}");
        let mut admin = config("127.0.0.1:0", "127.0.0.1:0");
        admin.http.admin_listen = Some("0.0.0.0:9090".parse().unwrap());
        let e = check_sandbox_exposure(&admin, false).unwrap_err();
        assert!(e.contains("http.admin_listen = 0.0.0.0:9090"), "{e}");
        admin.http.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        assert_eq!(check_sandbox_exposure(&admin, false), Ok(()));
        let e = check_sandbox_exposure(&config("10.0.0.5:1", "192.168.1.2:2"), false).unwrap_err();
        assert!(
            e.contains("grpc.listen") && e.contains("http.listen"),
            "{e}"
        );
    }

    #[test]
    fn a_public_sandbox_needs_callers_or_auth_none() {
        let mut c = config("0.0.0.0:50051", "0.0.0.0:8080");
        let e = check_sandbox_exposure(&c, true).unwrap_err();
        assert!(
            e.contains("--sandbox-public") && e.contains("auth.callers"),
            "{e}"
        );
        // Also on loopback: the flag asks for exposure, so it is held to the same rule.
        assert!(check_sandbox_exposure(&config("127.0.0.1:0", "127.0.0.1:0"), true).is_err());
        c.auth.mode = AuthMode::None;
        assert_eq!(check_sandbox_exposure(&c, true), Ok(()));
        c.auth.mode = AuthMode::Keys;
        c.auth.callers.push(CallerConfig {
            id: "tester".into(),
            tenant: "default".into(),
            ..Default::default()
        });
        assert_eq!(check_sandbox_exposure(&c, true), Ok(()));
    }

    #[test]
    fn production_is_not_a_sandbox() {
        assert!(!Mode::Production.is_sandbox());
        #[cfg(feature = "sandbox")]
        assert!(Mode::sandbox().is_sandbox());
    }
}
