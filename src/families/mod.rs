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

/// The shipped family called `name`.
pub fn by_name(name: &str) -> Option<&'static dyn Family> {
    REGISTRY.iter().copied().find(|family| family.name() == name)
}
