//! What a node costs: parameters, multiply-accumulates, weight and activation
//! bytes. (Latency and energy per device profile build on these counts.)

pub mod count;

pub use count::{node_cost, node_weights, weight_size, NodeCost, WeightSize};
