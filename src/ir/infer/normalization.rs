//! Normalizations with more than one output: BatchNormalization (training
//! outputs are per-channel, shaped like the running mean) and
//! LayerNormalization (Mean and InvStdDev keep the leading dims, 1 from
//! `axis` on, in `stash_type`). The single-output ones (InstanceNormalization,
//! LRN, LpNormalization, ...) are plain "like the input" rules.

use super::context::{NodeView, OutputFacts};
use super::dims::normalize_axis;
use crate::ir::dtype::DataType;
use crate::ir::shape::{Dim, Shape};

/// BatchNormalization: Y like X; running/saved mean and variance like input 3 (mean).
pub(super) fn batch_normalization(view: &NodeView) -> Vec<OutputFacts> {
    let statistics = OutputFacts::new(
        view.input_dtype(3).or_else(|| view.input_dtype(1)),
        view.input_shape(3).or_else(|| view.input_shape(1)).cloned(),
    );
    let mut outputs = vec![view.like_input(0)];
    outputs.extend(std::iter::repeat_n(statistics, view.output_count().saturating_sub(1)));
    outputs
}

/// LayerNormalization: Y like X; Mean and InvStdDev are X's dims before `axis`, then ones.
pub(super) fn layer_normalization(view: &NodeView) -> Vec<OutputFacts> {
    let statistics_dtype = DataType::from_code(view.attr_int_or("stash_type", 1) as i32);
    let statistics_shape = view.input_shape(0).and_then(|data| {
        let axis = normalize_axis(view.attr_int_or("axis", -1), data.rank())?;
        let mut dims = data.0[..axis].to_vec();
        dims.resize(data.rank(), Dim::Known(1));
        Some(Shape(dims))
    });
    let statistics = OutputFacts::new(statistics_dtype, statistics_shape);
    vec![view.like_input(0), statistics.clone(), statistics]
}
