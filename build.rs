//! Compiles `proto/` with protox (a pure-Rust protobuf compiler: no system `protoc`) and tonic-prost-build, and
//! writes the encoded file descriptor set to OUT_DIR for gRPC server reflection; also the descriptor set of the
//! `google.rpc` status and error detail types (vendored in proto/google/rpc, no code generated: tonic-types has
//! the messages), so reflection clients (grpcurl, buf curl) decode ErrorInfo, BadRequest, RetryInfo, QuotaFailure.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/facegate/v1/common.proto",
        "proto/facegate/v1/vendor_options.proto",
        "proto/facegate/v1/session.proto",
        "proto/facegate/v1/events.proto",
        "proto/facegate/v1/webhooks.proto",
        "proto/facegate/v1/verification_service.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    git_commit();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection of a production server lists these files only; a sandbox server's lists the sandbox's service too.
    let production = protox::compile(files, ["proto"])?;
    std::fs::write(
        out_dir.join("facegate_descriptor.bin"),
        production.encode_to_vec(),
    )?;
    let mut with_sandbox = files.to_vec();
    with_sandbox.push("proto/facegate/v1/sandbox_service.proto");
    let fds = protox::compile(&with_sandbox, ["proto"])?;
    std::fs::write(
        out_dir.join("facegate_sandbox_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    let google_rpc = protox::compile(
        [
            "proto/google/rpc/status.proto",
            "proto/google/rpc/error_details.proto",
            "proto/google/rpc/code.proto",
        ],
        ["proto"],
    )?;
    std::fs::write(
        out_dir.join("google_rpc_descriptor.bin"),
        google_rpc.encode_to_vec(),
    )?;
    // Messages and the server. The server decodes requests with facegate's codec, so a request that does not decode
    // (or is too large) is answered with an ErrorInfo like every other refusal (src/grpc/codec.rs).
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::grpc::codec::Codec")
        // Deterministic encoding of metadata maps (the idempotency fingerprint hashes the encoded request).
        .btree_map(".")
        .compile_fds(fds.clone())?;
    // The client, over the same messages (extern: not generated again) and tonic's own codec: a reply that does not
    // decode is the client's INTERNAL error, not an invalid request.
    let client_dir = out_dir.join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .extern_path(".facegate.v1", "crate::proto::v1")
        .out_dir(&client_dir)
        .compile_fds(fds)?;
    Ok(())
}

/// The commit `facegate_build_info` names: `FACEGATE_GIT_COMMIT` when the build sets it (an image built without the
/// .git directory), else `git rev-parse HEAD`, else `unknown`. Never fails the build.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=FACEGATE_GIT_COMMIT");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let is_commit =
        |s: &String| (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
    let commit = std::env::var("FACEGATE_GIT_COMMIT")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(is_commit)
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]).filter(is_commit))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FACEGATE_GIT_COMMIT={commit}");
    // Build again when HEAD moves: HEAD itself, the branch it points at, and packed refs (only files that exist,
    // since a missing one would make every build run this again).
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
