//! Compiles proto/insync.proto with the pure-Rust protox compiler (no system protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile([root.join("insync.proto")], [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Record payloads stay `bytes::Bytes` end to end: no copy from the request
        // buffer into a Vec, and fetch responses can hand out slices of the read.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
