//! Fuzz target test_data_set: pare::fuzz_targets::test_data_set (see fuzz/README.md).
#![no_main]

pare_fuzz::target!(pare::fuzz_targets::test_data_set);
