//! Compiles `proto/tts/v1/worker.proto`. Uses `$PROTOC` when set (e.g. Debian's protobuf-compiler),
//! otherwise the protoc bundled by `protoc-bin-vendored`, so a build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("tts/v1/worker.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure().compile_with_config(config, &[file], &[root])?;
    Ok(())
}
