//! Compiles `proto/` with protox (a pure-Rust protobuf compiler: no system `protoc`) and tonic-prost-build, and
//! writes the encoded file descriptor set to OUT_DIR for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/facegate/v1/common.proto",
        "proto/facegate/v1/vendor_options.proto",
        "proto/facegate/v1/session.proto",
        "proto/facegate/v1/events.proto",
        "proto/facegate/v1/verification_service.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("facegate_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Deterministic encoding of metadata maps (the idempotency fingerprint hashes the encoded request).
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
