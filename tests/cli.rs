//! The binary: `check-config` (validation, masking, exit codes) and how `serve --sandbox` is accepted or refused.

use std::process::Command;

/// The binary with no FACEGATE variable of this process, and a data key generated now.
fn facegate() -> Command {
    let mut c = facegate_without_key();
    c.env(
        "FACEGATE__STORE__ENCRYPTION_KEYS",
        format!(
            "k1:{}",
            facegate::store::seal::generate_key_base64().unwrap()
        ),
    );
    c
}

fn facegate_without_key() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facegate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FACEGATE") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_refuses_production_without_an_encryption_key_and_masks_keys() {
    let out = facegate_without_key()
        .args(["check-config"])
        .env("FACEGATE__AUTH__MODE", "none")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.encryption_keys"), "{err}");

    // A bad key is named by its setting and id, its bytes never shown.
    let short = "c2hvcnQta2V5LWJ5dGVz";
    let good = facegate::store::seal::generate_key_base64().unwrap();
    let out = facegate_without_key()
        .args(["check-config"])
        .env("FACEGATE__AUTH__MODE", "none")
        .env(
            "FACEGATE__STORE__ENCRYPTION_KEYS",
            format!("k2:{good},k1:{short}"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("store.encryption_keys[1]") && all.contains("\"k1\""),
        "{all}"
    );
    assert!(!all.contains(short) && !all.contains(&good), "{all}");

    // Valid keys are accepted and printed masked.
    let out = facegate_without_key()
        .args(["check-config"])
        .env("FACEGATE__AUTH__MODE", "none")
        .env("FACEGATE__STORE__ENCRYPTION_KEYS", format!("k2:{good}"))
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("encryption_keys = [\"***\"]"), "{all}");
    assert!(!all.contains(&good), "{all}");

    // The same from a key file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, format!("# rotated 2026-12\nk2:{good}\n")).unwrap();
    let out = facegate_without_key()
        .args(["check-config"])
        .env("FACEGATE__AUTH__MODE", "none")
        .env("FACEGATE__STORE__ENCRYPTION_KEYS_FILE", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
        .env("FACEGATE__AUTH__MODE", "none")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: auth.mode = \"none\""),
        "unauthenticated on purpose is warned about: {stderr}"
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

#[test]
fn check_config_refuses_plaintext_vendor_urls_unless_opted_in_and_then_warns() {
    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__JUHE__BASE_URL", "http://apis.juhe.cn")
        .env(
            "FACEGATE__BAIDU__PAGE_URL",
            "http://brain.baidu.com/face/print/",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: juhe.base_url must be https://"),
        "{err}"
    );
    assert!(
        err.contains("error: baidu.page_url must be https://"),
        "{err}"
    );

    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__JUHE__BASE_URL", "http://apis.juhe.cn")
        .env("FACEGATE__JUHE__ALLOW_PLAINTEXT_HTTP", "true")
        .env("FACEGATE__AUTH__MODE", "none")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: juhe.base_url is plaintext http://"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("base_url = \"http://apis.juhe.cn\""),
        "the effective value is printed"
    );

    // The defaults are https, Juhe's included.
    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__AUTH__MODE", "none")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("base_url = \"https://apis.juhe.cn\""));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("plaintext"));
}

#[test]
fn check_config_names_tls_keys_that_do_not_go_together() {
    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__GRPC__TLS__CERT_FILE", "/run/secrets/tls.crt")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpc.tls.key_file is required"), "{err}");
}

#[test]
fn check_config_refuses_serving_without_callers_and_accepts_callers() {
    let out = facegate().args(["check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.callers") && stderr.contains("auth.mode"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("orders-key");
    std::fs::write(&key, "orders-secret-key-0123\n").unwrap();
    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__AUTH__CALLERS__0__ID", "orders")
        .env("FACEGATE__AUTH__CALLERS__0__TENANT", "shop")
        .env(
            "FACEGATE__AUTH__CALLERS__0__SCOPES",
            "sessions:create,sessions:read",
        )
        .env("FACEGATE__AUTH__CALLERS__0__API_KEY_FILE", &key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("auth.mode"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("id = \"orders\""), "{stdout}");
    assert!(!stdout.contains("orders-secret-key-0123"), "{stdout}");
    let out = facegate()
        .args(["check-config"])
        .env("FACEGATE__AUTH__CALLERS__0__ID", "orders")
        .env("FACEGATE__AUTH__CALLERS__0__TENANT", "shop")
        .env("FACEGATE__AUTH__CALLERS__0__SCOPES", "sessions:write")
        .env("FACEGATE__AUTH__CALLERS__0__API_KEY_FILE", &key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.callers[0].scopes"));
}

#[test]
fn check_config_refuses_sandbox_settings_in_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("facegate.toml");
    std::fs::write(&file, "[sandbox]\nenabled = true\n").unwrap();
    let out = facegate()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sandbox.enabled")
            && err.contains(
                "sandbox mode is chosen by `facegate serve --sandbox`, never by configuration"
            ),
        "{err}"
    );
    let out = facegate()
        .args(["serve"])
        .env("FACEGATE__SANDBOX__ENABLED", "true")
        .env("FACEGATE__STORE__SQLITE_PATH", dir.path().join("f.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FACEGATE__SANDBOX__ENABLED") && err.contains("never by configuration"),
        "{err}"
    );
    assert!(!dir.path().join("f.db").exists(), "refused before start");
}

#[test]
fn sandbox_public_needs_sandbox() {
    let out = facegate()
        .args(["serve", "--sandbox-public"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sandbox"));
}

/// `serve --sandbox` with the loopback defaults starts and prints its help; the child is killed once it did.
#[cfg(feature = "sandbox")]
#[test]
fn serve_sandbox_starts_on_loopback() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = facegate()
        .args(["serve", "--sandbox"])
        .env("FACEGATE__GRPC__LISTEN", "127.0.0.1:0")
        .env("FACEGATE__HTTP__LISTEN", "127.0.0.1:0")
        .env("FACEGATE__STORE__SQLITE_PATH", dir.path().join("f.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let serving = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("facegate sandbox: gRPC on 127.0.0.1:"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(serving, "the sandbox did not start");
}

#[cfg(feature = "sandbox")]
#[test]
fn serve_sandbox_refuses_other_addresses_without_sandbox_public() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    let out = facegate()
        .args(["serve", "--sandbox"])
        .env("FACEGATE__GRPC__LISTEN", "0.0.0.0:0")
        .env("FACEGATE__HTTP__LISTEN", "127.0.0.1:0")
        .env("FACEGATE__STORE__SQLITE_PATH", &db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("grpc.listen = 0.0.0.0:0") && err.contains("--sandbox-public"),
        "{err}"
    );
    // --sandbox-public alone is not enough: a public sandbox needs callers (or auth.mode = "none").
    let out = facegate()
        .args(["serve", "--sandbox", "--sandbox-public"])
        .env("FACEGATE__GRPC__LISTEN", "0.0.0.0:0")
        .env("FACEGATE__HTTP__LISTEN", "127.0.0.1:0")
        .env("FACEGATE__STORE__SQLITE_PATH", &db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sandbox-public needs callers in auth.callers"),
        "{err}"
    );
    assert!(!db.exists(), "refused before the store was opened");
}

/// A build without the `sandbox` feature has no simulators and says so.
#[cfg(not(feature = "sandbox"))]
#[test]
fn a_build_without_the_sandbox_feature_refuses_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["serve", "--sandbox"][..],
        &["serve", "--sandbox", "--sandbox-public"],
        &["sandbox"],
    ] {
        let out = facegate()
            .args(args)
            .env("FACEGATE__STORE__SQLITE_PATH", dir.path().join("f.db"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("this facegate was built without the sandbox feature"),
            "{args:?}: {err}"
        );
    }
}

/// `facegate sandbox` lists every simulator (Juhe, Baidu, Megvii) with its endpoints and credentials, and what it
/// lists answers: each simulator accepts the listed credentials and refuses others.
#[cfg(feature = "sandbox")]
#[tokio::test]
async fn sandbox_lists_the_three_simulators_and_their_credentials_work() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = facegate()
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The pipe stays open (`lines` lives to the end): the child must not see its stdout closed.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listing: Vec<String> = lines
        .by_ref()
        .map_while(Result::ok)
        .take_while(|l| !l.contains("megvii.base_url"))
        .collect();
    let text = listing.join("\n");
    let url = |suffix: &str| {
        listing
            .iter()
            .find_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("http://") && w.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("no {suffix} in the listing:\n{text}"))
            .to_owned()
    };
    for credential in [
        facegate::sandbox::JUHE_KEY,
        facegate::sandbox::JUHE_OPENID,
        facegate::sandbox::BAIDU_API_KEY,
        facegate::sandbox::BAIDU_SECRET_KEY,
        facegate::sandbox::MEGVII_API_KEY,
        facegate::sandbox::MEGVII_API_SECRET,
    ] {
        assert!(text.contains(credential), "{credential} missing:\n{text}");
    }
    facegate::app::install_crypto_provider();
    let http = reqwest::Client::new();
    let post = |url: String, form: Vec<(&'static str, &'static str)>| {
        let http = http.clone();
        async move {
            let r = http.post(url).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // Juhe: a wrong key is 10001; the listed key passes the key check (then the missing fields are 226403).
    let juhe = url("/verifyface/verify");
    let (_, wrong) = post(juhe.clone(), vec![("key", "not-the-key")]).await;
    let (_, right) = post(juhe, vec![("key", facegate::sandbox::JUHE_KEY)]).await;
    assert!(wrong.contains("10001"), "{wrong}");
    assert!(right.contains("226403"), "{right}");

    // Baidu: the listed API Key and Secret Key get an access_token; another secret does not (Baidu's OAuth takes
    // them in the query string).
    let token = url("/oauth/2.0/token");
    let oauth = |secret: &'static str| {
        let request = http.post(token.clone()).query(&[
            ("grant_type", "client_credentials"),
            ("client_id", facegate::sandbox::BAIDU_API_KEY),
            ("client_secret", secret),
        ]);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = oauth(facegate::sandbox::BAIDU_SECRET_KEY).await;
    assert!(
        status == 200 && body.contains("access_token"),
        "{status} {body}"
    );
    let (status, body) = oauth("not-the-secret").await;
    assert!(
        status == 401 && !body.contains("access_token"),
        "{status} {body}"
    );

    // Megvii: the listed key and secret pass authentication (then a missing argument is 400); another is 403.
    let get_token = url("/faceid/lite/get_token");
    let (status, body) = post(
        get_token.clone(),
        vec![
            ("api_key", facegate::sandbox::MEGVII_API_KEY),
            ("api_secret", facegate::sandbox::MEGVII_API_SECRET),
        ],
    )
    .await;
    assert!(
        status == 400 && body.contains("MISSING_ARGUMENTS"),
        "{status} {body}"
    );
    let (status, body) = post(
        get_token,
        vec![
            ("api_key", facegate::sandbox::MEGVII_API_KEY),
            ("api_secret", "not-the-secret"),
        ],
    )
    .await;
    assert!(
        status == 403 && body.contains("AUTHENTICATION_ERROR"),
        "{status} {body}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    drop(lines);
}

#[test]
fn check_config_json_reports_ok_or_errors_with_key_and_source_and_never_secrets() {
    let json = |out: &std::process::Output| -> serde_json::Value {
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
        serde_json::from_str(&text).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("juhe-key");
    std::fs::write(&key, "juhe-secret-value\n").unwrap();
    let out = facegate()
        .args(["check-config", "--format", "json"])
        .env("FACEGATE__AUTH__MODE", "none")
        .env("FACEGATE__JUHE__KEY_FILE", &key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["errors"], serde_json::json!([]));
    let warnings = v["warnings"].as_array().unwrap();
    assert!(warnings
        .iter()
        .any(|w| w["key"] == "auth.mode"
            && w["source"] == "environment variable FACEGATE__AUTH__MODE"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("juhe-secret-value"));

    // An address that does not parse, set in a file: its key and the file.
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "[grpc]\nlisten = \"localhost\"\n").unwrap();
    let out = facegate()
        .args(["check-config", "--format", "json", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["key"], "grpc.listen");
    assert_eq!(
        errors[0]["source"],
        format!("config file {}", toml.display())
    );
    assert!(errors[0]["message"].as_str().unwrap().contains("address"));

    // A secret set twice, and the production rules: each error with its key; no secret value anywhere.
    let out = facegate_without_key()
        .args(["check-config", "--format", "json"])
        .env("FACEGATE__JUHE__KEY", "inline-juhe-secret")
        .env("FACEGATE__JUHE__KEY_FILE", &key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("juhe-secret-value") && !text.contains("inline-juhe-secret"));
    let v = json(&out);
    assert_eq!(v["errors"][0]["key"], "juhe.key");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("juhe.key_file"));
    let out = facegate_without_key()
        .args(["check-config", "--format", "json"])
        .env("FACEGATE__AUTH__MODE", "none")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert!(v["errors"].as_array().unwrap().iter().any(|e| e["message"]
        .as_str()
        .unwrap()
        .contains("store.encryption_keys")));

    // An OTEL_* variable the start would refuse.
    let out = facegate()
        .args(["check-config", "--format", "json"])
        .env("FACEGATE__AUTH__MODE", "none")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["errors"][0]["key"], "OTEL_EXPORTER_OTLP_PROTOCOL");
}

#[test]
fn a_secret_file_feeds_the_effective_configuration_masked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("megvii-secret");
    std::fs::write(&secret, "megvii-secret-value\n").unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(
        &toml,
        format!(
            "[auth]\nmode = \"none\"\n[megvii]\napi_key = \"k\"\napi_secret_file = {:?}\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let out = facegate()
        .args(["check-config", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("api_secret = \"***\""), "{stdout}");
    assert!(!stdout.contains("megvii-secret-value"));
    assert!(!stdout.contains("api_secret_file"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("megvii.api_key or megvii.api_secret is not set"),
        "{stderr}"
    );
}
