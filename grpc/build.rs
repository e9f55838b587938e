//! Compiles the gRPC interface (Fulcio's `fulcio.proto` and the standard health protocol) with
//! protox, a protobuf compiler in Rust, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The CA service is served by hand (`crate::ca`), so that a request that does not decode is
    // recorded as a refusal: only its messages are generated.
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(protox::compile(["fulcio.proto"], ["proto"])?)?;
    // Health is the standard service: its generated server is used as it is.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .build_transport(false)
        .compile_fds(protox::compile(["grpc/health/v1/health.proto"], ["proto"])?)?;
    Ok(())
}
