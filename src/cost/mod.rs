//! What a node costs: parameters, multiply-accumulates, weight and activation
//! bytes ([`count`]), and the latency and energy those mean on a device
//! ([`estimate`], with [`profile`]s of the targets), or latency measured in
//! ONNX Runtime ([`measure`]).

pub mod cache;
pub mod choose;
pub mod count;
pub mod estimate;
pub mod measure;
pub mod profile;

pub use count::{linear_macs, node_cost, node_weights, weight_size, LinearShapes, NodeCost, WeightSize};
pub use estimate::{estimate, graph_estimate, Estimate, Work};
pub use profile::{DeviceProfile, ProfileError};

use serde::{Deserialize, Serialize};

/// What optimization minimizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Estimated latency on the device.
    #[default]
    Latency,
    /// Estimated energy on the device.
    Energy,
    /// Bytes of weights stored.
    Size,
}
