//! Fuzz target onnx_model: pare::fuzz_targets::onnx_model (see fuzz/README.md).
#![no_main]

pare_fuzz::target!(pare::fuzz_targets::onnx_model);
