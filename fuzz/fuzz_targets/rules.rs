//! Fuzz target rules: pare::fuzz_targets::rule_file (see fuzz/README.md).
#![no_main]

pare_fuzz::target!(pare::fuzz_targets::rule_file);
