//! Compiles the .proto files with protox (a protobuf compiler in pure Rust), so a
//! fresh machine needs no `protoc` install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["common.proto", "gcs.proto", "autoscaler.proto", "node_manager.proto", "core_worker.proto"];
    let paths: Vec<String> = files.iter().map(|f| format!("proto/{f}")).collect();
    let fds = protox::compile(&paths, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Object chunks between raylets decode as slices of the received buffer
        // (no copy) and are written straight into the store.
        .bytes(".ray.rpc.ReadObjectChunkReply.data")
        .compile_fds(fds)?;
    for p in &paths {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
