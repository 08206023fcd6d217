//! Fuzz target tensor_proto: pare::fuzz_targets::tensor_proto (see fuzz/README.md).
#![no_main]

pare_fuzz::target!(pare::fuzz_targets::tensor_proto);
