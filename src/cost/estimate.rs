//! Latency and energy of one operator on a device profile, from the work it
//! does. Latency is a roofline: the fixed per-operator overhead plus the
//! larger of compute time (MACs over the element type's peak) and memory time
//! (bytes read and written over the bandwidth). Energy counts the arithmetic
//! (a multiply and an add per MAC, an add per output element of other
//! operators), weights read from DRAM, and activations read and written on
//! chip when they fit there, else in DRAM — memory traffic, not arithmetic,
//! is what dominates.

use serde::Serialize;

use super::profile::DeviceProfile;
use crate::ir::{DataType, Shape};

/// What one operator does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub macs: u64,
    /// The element type the arithmetic runs in.
    pub dtype: Option<DataType>,
    pub weight_bytes: u64,
    /// Activation bytes read (graph values that are not weights).
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub output_elements: u64,
}

/// Estimated cost of some work on a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Estimate {
    pub latency_seconds: f64,
    pub energy_joules: f64,
}

impl std::ops::AddAssign for Estimate {
    fn add_assign(&mut self, other: Estimate) {
        self.latency_seconds += other.latency_seconds;
        self.energy_joules += other.energy_joules;
    }
}

/// The latency and energy of one operator.
pub fn estimate(profile: &DeviceProfile, work: &Work) -> Estimate {
    let compute = work.macs as f64 / profile.macs_per_second(work.dtype);
    let bytes = (work.weight_bytes + work.input_bytes + work.output_bytes) as f64;
    let memory = bytes / profile.memory_bandwidth;
    let latency_seconds = profile.node_overhead + compute.max(memory);

    let (add, mult) = profile.arithmetic_energy(work.dtype);
    let arithmetic = if work.macs > 0 { work.macs as f64 * (add + mult) } else { work.output_elements as f64 * add };
    let words = |bytes: u64| bytes as f64 / 4.0;
    let activation_bytes = work.input_bytes + work.output_bytes;
    let activation_read = if activation_bytes <= profile.on_chip_bytes {
        profile.energy.sram_read_32bit
    } else {
        profile.energy.dram_read_32bit
    };
    let memory_energy =
        words(work.weight_bytes) * profile.energy.dram_read_32bit + words(activation_bytes) * activation_read;
    Estimate { latency_seconds, energy_joules: (arithmetic + memory_energy) * 1e-12 }
}

/// A shape's dims with unknown and symbolic ones counted as 1, so a symbolic
/// batch estimates one sample.
pub fn dims_or_one(shape: &Shape) -> Vec<u64> {
    shape.0.iter().map(|d| d.known().unwrap_or(1).max(0) as u64).collect()
}

/// Elements of a tensor under that convention (an unknown rank counts as one element).
pub fn elements_or_one(shape: Option<&Shape>) -> u64 {
    shape.map_or(1, |s| dims_or_one(s).iter().product())
}

/// Bytes of a tensor under that convention (0 for an unknown element type).
pub fn bytes_or_one(dtype: Option<DataType>, shape: Option<&Shape>) -> u64 {
    dtype.and_then(|d| d.byte_size(elements_or_one(shape))).unwrap_or(0)
}

/// The estimated latency and energy of a whole graph: the sum over its nodes
/// (unknown dims count as 1).
pub fn graph_estimate(graph: &crate::ir::Graph, profile: &DeviceProfile) -> Estimate {
    use super::count::{node_cost, node_weights};
    let bytes_of = |id: crate::ir::ValueId| bytes_or_one(graph.value(id).dtype, graph.value(id).shape.as_ref());
    let mut total = Estimate::default();
    for index in graph.nodes.node_indices() {
        let node = graph.node(index);
        let cost = node_cost(graph, index);
        let weights: Vec<crate::ir::ValueId> = node_weights(graph, index).into_iter().map(|(id, _)| id).collect();
        let input_bytes = node.inputs.iter().flatten().filter(|id| !weights.contains(id)).map(|&id| bytes_of(id)).sum();
        let output_bytes: u64 = node.outputs.iter().flatten().map(|&id| bytes_of(id)).sum();
        let output_elements = elements_or_one(node.output(0).and_then(|id| graph.value(id).shape.as_ref()));
        let work = Work {
            macs: cost.macs.unwrap_or(0),
            dtype: node.input(0).and_then(|id| graph.value(id).dtype),
            weight_bytes: cost.weight_bytes,
            input_bytes,
            output_bytes,
            output_elements,
        };
        total += estimate(profile, &work);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roofline_takes_the_slower_of_compute_and_memory() {
        let profile = DeviceProfile::shipped("x86-avx2").unwrap();
        let compute_bound = Work { macs: 3_000_000_000, dtype: Some(DataType::Float), ..Default::default() };
        let estimate_compute = estimate(&profile, &compute_bound);
        assert!((estimate_compute.latency_seconds - (0.1 + profile.node_overhead)).abs() < 1e-9);
        let memory_bound =
            Work { macs: 1, weight_bytes: 1_500_000_000, dtype: Some(DataType::Float), ..Default::default() };
        assert!((estimate(&profile, &memory_bound).latency_seconds - (0.1 + profile.node_overhead)).abs() < 1e-6);
        // 1e6 fp32 MACs: 4.6 µJ of arithmetic; 4 MB of weights from DRAM: 640 µJ.
        let energy =
            estimate(&profile, &Work { macs: 1_000_000, weight_bytes: 4_000_000, ..compute_bound }).energy_joules;
        assert!((energy - (4.6e-6 + 640e-6)).abs() < 1e-9, "{energy}");
    }
}
