//! Compiles proto/onnx.proto into Rust types with protox (a pure-Rust protobuf
//! compiler, so no protoc is needed) and prost-build. Every `bytes` field is
//! generated as `bytes::Bytes`, so tensor data decoded from a shared buffer is
//! sliced, not copied.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(descriptors)?;
    Ok(())
}
