//! Device profiles: what a target computes per second and per joule. A
//! profile is TOML (see src/cost/devices/ for the shipped ones): peak
//! multiply-accumulates per second per element type, memory bandwidth, a
//! fixed overhead per operator, how many activation bytes stay on chip, and
//! the energy of each arithmetic operation and memory read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ir::DataType;

/// The profiles pare ships, by name.
pub const SHIPPED: &[(&str, &str)] = &[
    ("x86-avx2", include_str!("devices/x86-avx2.toml")),
    ("cortex-a", include_str!("devices/cortex-a.toml")),
    ("mcu", include_str!("devices/mcu.toml")),
];

/// The profile used when none is named.
pub const DEFAULT_DEVICE: &str = "x86-avx2";

/// Energy per operation, in picojoules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyTable {
    pub int8_add: f64,
    pub int8_mult: f64,
    pub fp16_add: f64,
    pub fp16_mult: f64,
    pub fp32_add: f64,
    pub fp32_mult: f64,
    pub sram_read_32bit: f64,
    pub dram_read_32bit: f64,
}

/// A target device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Bytes per second between memory and the compute units.
    pub memory_bandwidth: f64,
    /// Seconds every operator costs regardless of its size.
    pub node_overhead: f64,
    /// Activations up to this many bytes are read from on-chip memory.
    pub on_chip_bytes: u64,
    /// Peak MACs per second by element type name (`float`, `int8`, ...);
    /// `default` covers the rest.
    pub macs_per_second: BTreeMap<String, f64>,
    /// The int8 kernels add pairs of u8×s8 products in int16 before
    /// widening (x86 AVX2 without VNNI), so full-range weights can saturate.
    #[serde(default)]
    pub int8_pairs_saturate: bool,
    /// The newest default-domain opset the device's runtime loads: rewrites
    /// may raise a model's opset up to it (`--target-opset` overrides).
    #[serde(default = "default_max_opset")]
    pub max_opset: i64,
    /// Channel counts the device's kernels run fastest at a multiple of:
    /// compression families round the channels they choose (ranks, kept
    /// channels) to it, as odd counts leave vector lanes idle.
    #[serde(default = "default_channel_multiple")]
    pub channel_multiple: usize,
    pub energy: EnergyTable,
}

/// A profile without `channel_multiple`: 8 (eight float lanes of AVX2, two NEON registers).
fn default_channel_multiple() -> usize {
    8
}

/// A profile without `max_opset`: opset 22, which ONNX Runtime 1.21 and later load.
fn default_max_opset() -> i64 {
    22
}

/// A profile that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown device '{name}' (shipped: {known}; or give --device-file FILE.toml)")]
    Unknown { name: String, known: String },
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a device profile: {reason}")]
    Invalid { path: String, reason: String },
}

impl DeviceProfile {
    /// A shipped profile by name.
    pub fn shipped(name: &str) -> Result<DeviceProfile, ProfileError> {
        let (_, text) = SHIPPED.iter().find(|(n, _)| *n == name).ok_or_else(|| ProfileError::Unknown {
            name: name.to_string(),
            known: SHIPPED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        })?;
        DeviceProfile::parse(text, &format!("shipped profile {name}"))
    }

    /// Reads a profile from a TOML file.
    pub fn from_file(path: &Path) -> Result<DeviceProfile, ProfileError> {
        let label = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ProfileError::Read { path: label.clone(), source })?;
        DeviceProfile::parse(&text, &label)
    }

    /// Parses and checks a profile (every rate and energy positive and finite).
    pub fn parse(text: &str, label: &str) -> Result<DeviceProfile, ProfileError> {
        let invalid = |reason: String| ProfileError::Invalid { path: label.to_string(), reason };
        let profile: DeviceProfile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let e = &profile.energy;
        let mut numbers = vec![
            ("memory_bandwidth", profile.memory_bandwidth),
            ("energy.int8_add", e.int8_add),
            ("energy.int8_mult", e.int8_mult),
            ("energy.fp16_add", e.fp16_add),
            ("energy.fp16_mult", e.fp16_mult),
            ("energy.fp32_add", e.fp32_add),
            ("energy.fp32_mult", e.fp32_mult),
            ("energy.sram_read_32bit", e.sram_read_32bit),
            ("energy.dram_read_32bit", e.dram_read_32bit),
        ];
        numbers.extend(profile.macs_per_second.iter().map(|(k, v)| (k.as_str(), *v)));
        if let Some((name, value)) = numbers.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(invalid(format!("{name} must be a positive number, not {value}")));
        }
        if !(profile.node_overhead.is_finite() && profile.node_overhead >= 0.0) {
            return Err(invalid("node_overhead must be a number >= 0".into()));
        }
        if profile.channel_multiple == 0 {
            return Err(invalid("channel_multiple must be at least 1".into()));
        }
        if !profile.macs_per_second.contains_key("default") {
            return Err(invalid("macs_per_second needs a 'default' entry".into()));
        }
        Ok(profile)
    }

    /// Peak MACs per second for an element type.
    pub fn macs_per_second(&self, dtype: Option<DataType>) -> f64 {
        dtype
            .and_then(|d| self.macs_per_second.get(&d.name()))
            .or_else(|| self.macs_per_second.get("default"))
            .copied()
            .unwrap_or(1e9)
    }

    /// (add, mult) energy in pJ for arithmetic on an element type.
    pub fn arithmetic_energy(&self, dtype: Option<DataType>) -> (f64, f64) {
        let e = &self.energy;
        match dtype.and_then(|d| d.bits()) {
            Some(bits) if bits <= 8 => (e.int8_add, e.int8_mult),
            Some(16) => (e.fp16_add, e.fp16_mult),
            _ => (e.fp32_add, e.fp32_mult),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse() {
        for (name, _) in SHIPPED {
            let profile = DeviceProfile::shipped(name).unwrap();
            assert_eq!(profile.name, *name);
            assert!(profile.macs_per_second(Some(DataType::Int8)) >= profile.macs_per_second(Some(DataType::Float)));
        }
        assert!(matches!(DeviceProfile::shipped("gpu"), Err(ProfileError::Unknown { .. })));
    }

    #[test]
    fn bad_profiles_say_why() {
        let text = include_str!("devices/mcu.toml").replace("memory_bandwidth = 4.0e8", "memory_bandwidth = -1.0");
        let error = DeviceProfile::parse(&text, "bad.toml").unwrap_err().to_string();
        assert!(error.contains("bad.toml") && error.contains("memory_bandwidth"), "{error}");
        let error = DeviceProfile::parse("name = 3", "worse.toml").unwrap_err().to_string();
        assert!(error.starts_with("worse.toml: not a device profile"), "{error}");
        let mcu = include_str!("devices/mcu.toml");
        let text = mcu.replace("channel_multiple = 4", "channel_multiple = 0");
        let error = DeviceProfile::parse(&text, "zero.toml").unwrap_err().to_string();
        assert!(error.contains("channel_multiple must be at least 1"), "{error}");
    }

    #[test]
    fn channel_multiple_is_read_or_defaults_to_8() {
        let mcu = include_str!("devices/mcu.toml");
        assert_eq!(DeviceProfile::parse(mcu, "mcu.toml").unwrap().channel_multiple, 4);
        let unset: String = mcu.lines().filter(|l| !l.starts_with("channel_multiple")).collect::<Vec<_>>().join("\n");
        assert_eq!(DeviceProfile::parse(&unset, "old.toml").unwrap().channel_multiple, 8);
    }
}
