//! Fuzz target external_data: pare::fuzz_targets::external_data (see fuzz/README.md).
#![no_main]

pare_fuzz::target!(pare::fuzz_targets::external_data);
