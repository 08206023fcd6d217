"""Parameter count of an ONNX model, the one definition pare's `inspect` must
match: every numeric weight element that feeds a node, each counted once.
Shared by scripts/fetch_models.py (its manifest) and tests/oracle/roundtrip.py."""

from __future__ import annotations

import math

import onnx

# Element types that are not numbers to count: undefined, string, bool, complex.
NOT_NUMERIC = {
    onnx.TensorProto.UNDEFINED,
    onnx.TensorProto.STRING,
    onnx.TensorProto.BOOL,
    onnx.TensorProto.COMPLEX64,
    onnx.TensorProto.COMPLEX128,
}


def _numel(dims) -> int:
    return math.prod(dims)


def _names_read(graph: onnx.GraphProto) -> set:
    """Names read by the graph's nodes, including reads inside their subgraphs."""
    read = set()
    for node in graph.node:
        read.update(i for i in node.input if i)
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                read |= _names_read(sub)
    return read


def count_params(model: onnx.ModelProto) -> int:
    """Elements of numeric weights that feed a node of the main graph (issue 2:
    "every float/int weight element that feeds a node"), each counted once.

    initializer: numeric tensors read by some node (external data counted by dims);
    sparse_initializer: the dense element count (prod of dims), not the non-zeros;
    Constant nodes (default domain) whose output is read: value / sparse_value
    tensors by dims, value_float / value_int = 1, value_floats / value_ints = length.
    Reads from inside If/Loop bodies count; weights defined inside subgraphs and
    function bodies do not.
    """
    g = model.graph
    read = _names_read(g)
    n = sum(_numel(t.dims) for t in g.initializer if t.data_type not in NOT_NUMERIC and t.name in read)
    n += sum(
        _numel(s.dims)
        for s in g.sparse_initializer
        if s.values.data_type not in NOT_NUMERIC and s.values.name in read
    )
    for node in g.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        if not any(o in read for o in node.output):
            continue
        for a in node.attribute:
            if a.name == "value" and a.t.data_type not in NOT_NUMERIC:
                n += _numel(a.t.dims)
            elif a.name == "sparse_value" and a.sparse_tensor.values.data_type not in NOT_NUMERIC:
                n += _numel(a.sparse_tensor.dims)
            elif a.name in ("value_float", "value_int"):
                n += 1
            elif a.name == "value_floats":
                n += len(a.floats)
            elif a.name == "value_ints":
                n += len(a.ints)
    return n
