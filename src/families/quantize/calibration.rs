//! What quantization asks calibration to measure: the range of every float
//! value a quantized graph can carry in integers, and the mean input of each
//! layer whose bias it corrects.

use crate::ir::{self, DataType, Model};

/// The data inputs of the layers whose quantized form gets a corrected bias
/// (Conv and Gemm; see [`crate::families::quantize::bias_correction`]).
pub fn corrected_layer_inputs(model: &Model) -> std::collections::HashSet<String> {
    let graph = &model.graph;
    graph
        .nodes
        .node_weights()
        .filter(|node| node.domain.is_empty() && matches!(node.op_type.as_str(), "Conv" | "Gemm"))
        .filter_map(|node| node.inputs.first().copied().flatten())
        .filter(|&value| graph.value(value).dtype == Some(DataType::Float))
        .map(|value| graph.value(value).name.clone())
        .collect()
}

/// The float values a quantized graph can carry in integers, so calibration
/// captures them: all but those read only by BatchNormalization. ONNX has no
/// integer BatchNormalization; one after a linear layer folds into it exactly
/// (the fused layer computes the BatchNormalization's output), and any other
/// stays float and reads its input in float. Leaving those values out spares
/// the evaluator keeping them and lets it fuse the layer with its normalization
/// (half of ResNet-50's calibration time).
pub fn needs_range(model: &Model) -> std::collections::HashSet<ir::ValueId> {
    let graph = &model.graph;
    let mut read_outside_batch_norm = std::collections::HashSet::new();
    let mut read = std::collections::HashSet::new();
    for node in graph.nodes.node_weights() {
        for &value in node.inputs.iter().flatten().chain(&node.implicit_inputs) {
            read.insert(value);
            if node.op_type != "BatchNormalization" {
                read_outside_batch_norm.insert(value);
            }
        }
    }
    let outputs: Vec<ir::ValueId> = graph.outputs.iter().map(|io| io.value).collect();
    graph
        .nodes
        .node_weights()
        .flat_map(|node| node.outputs.iter().flatten().copied())
        .filter(|value| graph.value(*value).dtype == Some(DataType::Float))
        .filter(|value| read_outside_batch_norm.contains(value) || !read.contains(value) || outputs.contains(value))
        .collect()
}
