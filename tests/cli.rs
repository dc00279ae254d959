//! The binary's `check-config` command: validation, masking, exit codes.

use std::process::Command;

fn facegate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facegate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FACEGATE") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_prints_effective_values_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("facegate.toml");
    std::fs::write(
        &file,
        "[grpc]\nlisten = \"127.0.0.1:6001\"\n[juhe]\nkey = \"key-from-file-0123\"\n",
    )
    .unwrap();
    let out = facegate()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("FACEGATE__JUHE__OPENID", "openid-from-env-4567")
        .env("FACEGATE__SESSION__TTL_SECS", "600")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = \"127.0.0.1:6001\""), "{text}");
    assert!(text.contains("ttl_secs = 600"), "{text}");
    assert!(
        !text.contains("key-from-file-0123") && !text.contains("openid-from-env-4567"),
        "{text}"
    );
    assert!(
        text.contains("key = \"***\"") && text.contains("openid = \"***\""),
        "{text}"
    );
}

#[test]
fn check_config_rejects_unknown_keys_and_bad_values() {
    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__GRPC__LISTN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listn"));
    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__JUHE__BASE_URL", "ftp://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("juhe.base_url"));
}
