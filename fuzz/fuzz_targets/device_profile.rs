//! Fuzz target device_profile: pare::fuzz_targets::device_profile (see fuzz/README.md).
#![no_main]

pare_fuzz::target!(pare::fuzz_targets::device_profile);
