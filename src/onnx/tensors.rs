//! Visits every tensor stored in a model — initializers, sparse initializers,
//! Constant and other tensor attributes, inside subgraphs, functions and
//! training graphs — so external data can be loaded and stored in one place.

use super::proto::{AttributeProto, GraphProto, ModelProto, SparseTensorProto, TensorProto};

/// Calls `visit` on every tensor of the model, depth first, in file order.
pub fn for_each_tensor_mut<E>(
    model: &mut ModelProto,
    visit: &mut impl FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(graph) = model.graph.as_mut() {
        graph_tensors(graph, visit)?;
    }
    for function in &mut model.functions {
        for node in &mut function.node {
            node.attribute.iter_mut().try_for_each(|a| attribute_tensors(a, visit))?;
        }
        function.attribute_proto.iter_mut().try_for_each(|a| attribute_tensors(a, visit))?;
    }
    for training in &mut model.training_info {
        for graph in training.initialization.iter_mut().chain(training.algorithm.iter_mut()) {
            graph_tensors(graph, visit)?;
        }
    }
    Ok(())
}

fn graph_tensors<E>(
    graph: &mut GraphProto,
    visit: &mut impl FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    graph.initializer.iter_mut().try_for_each(&mut *visit)?;
    graph.sparse_initializer.iter_mut().try_for_each(|s| sparse_tensors(s, visit))?;
    for node in &mut graph.node {
        node.attribute.iter_mut().try_for_each(|a| attribute_tensors(a, visit))?;
    }
    Ok(())
}

fn sparse_tensors<E>(
    sparse: &mut SparseTensorProto,
    visit: &mut impl FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    sparse.values.iter_mut().chain(sparse.indices.iter_mut()).try_for_each(&mut *visit)
}

fn attribute_tensors<E>(
    attribute: &mut AttributeProto,
    visit: &mut impl FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    attribute.t.iter_mut().chain(attribute.tensors.iter_mut()).try_for_each(&mut *visit)?;
    attribute
        .sparse_tensor
        .iter_mut()
        .chain(attribute.sparse_tensors.iter_mut())
        .try_for_each(|s| sparse_tensors(s, visit))?;
    attribute.g.iter_mut().chain(attribute.graphs.iter_mut()).try_for_each(|g| graph_tensors(g, visit))
}
