//! The compression families pare ships, one folder each behind the
//! engine's [`Family`] interface ([`crate::egraph::family`]). Adding a family
//! is a folder here and one line in [`REGISTRY`].

pub mod lowrank;
pub mod quantize;

pub use crate::egraph::family::{
    CheckError, Enabled, Extracted, Family, Section, Settings, StatisticsRequest, Written,
};

/// Every compression family pare ships, in the order their rules run.
pub const REGISTRY: &[&dyn Family] = &[&quantize::Quantize, &lowrank::LowRank];
