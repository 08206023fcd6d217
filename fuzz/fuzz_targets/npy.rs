//! Fuzz target npy: pare::fuzz_targets::npy (see fuzz/README.md).
#![no_main]

pare_fuzz::target!(pare::fuzz_targets::npy);
