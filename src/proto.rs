//! Generated protobuf and gRPC code for `facegate.v1`, and the descriptor set for server reflection.

/// `facegate.v1` messages, the `VerificationService` and `SandboxService` clients and servers.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("facegate.v1");

    pub use client::{sandbox_service_client, verification_service_client};

    /// The client, generated apart from the server so that it keeps tonic's own codec (see build.rs).
    mod client {
        include!(concat!(env!("OUT_DIR"), "/client/facegate.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of `proto/facegate/v1` but `sandbox_service.proto`, for the reflection of a
/// production server.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/facegate_descriptor.bin"));

/// The encoded `FileDescriptorSet` of every file in `proto/facegate/v1`, `facegate.v1.SandboxService` included, for
/// the reflection of a sandbox server.
pub const SANDBOX_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/facegate_sandbox_descriptor.bin"));

/// The encoded `FileDescriptorSet` of `google/rpc/{status,error_details,code}.proto` (vendored in
/// `proto/google/rpc/`), for reflection: clients decode the error details facegate sends.
pub const GOOGLE_RPC_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/google_rpc_descriptor.bin"));
