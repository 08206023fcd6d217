#!/usr/bin/env python3
"""Build pare's golden models and their reference outputs.

Every model is small, built with onnx.helper from seeded weights, and written as

    golden/<NAME>/model.onnx
    golden/<NAME>/test_data_set_0/input_<i>.pb    (TensorProto named like the graph input)
    golden/<NAME>/test_data_set_0/output_<i>.pb   (TensorProto named like the graph output)

Outputs come from ONNX Runtime (CPU provider, ORT_DISABLE_ALL, one thread).
golden/manifest.json lists each model with its opset, inputs and what it covers.

Regeneration is byte-identical: each model draws from its own numpy RNG seeded by
its name, nothing records a time, and protobuf serialisation of the same message is
stable. (The *output* files come from ORT kernels and can differ in the last bits on
another CPU; the model and input files cannot.)

Usage:  .venv/bin/python golden/make_golden.py [--only NAME[,NAME...]] [--check-only]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

GOLDEN_DIR = Path(__file__).resolve().parent
PRODUCER = "pare-golden"
PRODUCER_VERSION = "1"
# IR version that the ONNX release introducing each opset used.
IR_FOR_OPSET = {9: 4, 11: 6, 12: 7, 13: 7, 17: 8, 21: 10}

F32 = TensorProto.FLOAT


# --------------------------------------------------------------------------------------
# A small graph builder
# --------------------------------------------------------------------------------------


class Builder:
    """Collects nodes, initializers and graph inputs/outputs of one model.

    Weight helpers return the *name* of the produced tensor; `as_const=True` puts the
    tensor in a Constant node instead of an initializer (PP-OCR style).
    """

    def __init__(self, name: str):
        self.name = name
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.sparse_initializers: list[onnx.SparseTensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[tuple[str, int, object]] = []
        self.test_inputs: dict[str, np.ndarray] = {}
        self.functions: list[onnx.FunctionProto] = []
        self.extra_opsets: list[tuple[str, int]] = []
        self.metadata: dict[str, str] = {}
        self.doc = ""
        self.graph_doc = ""
        self.keep_value_info = False
        self.full_check = True  # False only for models onnx's checker cannot type (documented)
        self._count = 0

    # names ---------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    # graph interface -----------------------------------------------------------------
    def input(self, name: str, shape, test: np.ndarray, elem_type: int = F32) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        self.test_inputs[name] = test
        return name

    def output(self, value: str, name: str, elem_type: int = F32, shape=None) -> str:
        """Make `value` a graph output called `name` (via the node that produces it).

        The output's shape comes from ONNX shape inference unless `shape` is given.
        """
        for node in self.nodes:
            for i, out in enumerate(node.output):
                if out == value:
                    node.output[i] = name
            # consumers that already use `value` are rewired too
            for i, inp in enumerate(node.input):
                if inp == value:
                    node.input[i] = name
        self.outputs.append((name, elem_type, shape))
        return name

    def op(self, op_type: str, inputs, n_out: int = 1, domain: str = "", doc: str = "",
           outputs=None, **attrs):
        outs = outputs or [self.fresh(op_type.lower()) for _ in range(n_out)]
        node = helper.make_node(op_type, list(inputs), outs, name=self.fresh("n_" + op_type),
                                domain=domain or None, **attrs)
        if doc:
            node.doc_string = doc
        self.nodes.append(node)
        return outs[0] if len(outs) == 1 else outs

    # constants -------------------------------------------------------------------------
    def tensor(self, base: str, arr: np.ndarray, as_const: bool = False) -> str:
        name = self.fresh(base)
        t = numpy_helper.from_array(np.asarray(arr), name)
        if as_const:
            t.name = ""
            self.nodes.append(helper.make_node("Constant", [], [name], name=self.fresh("n_Constant"),
                                               value=t))
        else:
            self.initializers.append(t)
        return name

    def i64(self, base: str, values, as_const: bool = False) -> str:
        return self.tensor(base, np.array(values, dtype=np.int64), as_const)

    def f32(self, base: str, values, as_const: bool = False) -> str:
        return self.tensor(base, np.array(values, dtype=np.float32), as_const)

    def he(self, shape, fan_in: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)

    def small(self, shape, scale: float = 0.05) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def randn(self, shape, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    # layers ----------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad=None,
             group: int = 1, bias: bool = True, as_const: bool = False, **attrs) -> str:
        pad = k // 2 if pad is None else pad
        w = self.tensor("conv_w", self.he((cout, cin // group, k, k), cin // group * k * k), as_const)
        ins = [x, w]
        if bias:
            ins.append(self.tensor("conv_b", self.small((cout,)), as_const))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4, group=group, **attrs)

    def bn(self, x: str, c: int, as_const: bool = False) -> str:
        scale = (1.0 + 0.1 * self.rng.standard_normal(c)).astype(np.float32)
        bias = self.small((c,), 0.1)
        mean = self.small((c,), 0.1)
        var = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        ins = [x] + [self.tensor(n, a, as_const) for n, a in
                     (("bn_scale", scale), ("bn_bias", bias), ("bn_mean", mean), ("bn_var", var))]
        return self.op("BatchNormalization", ins, epsilon=1e-5)

    def gemm(self, x: str, k: int, n: int, trans_b: bool = True) -> str:
        w = self.he((n, k) if trans_b else (k, n), k)
        return self.op("Gemm", [x, self.tensor("fc_w", w), self.tensor("fc_b", self.small((n,)))],
                       transB=1 if trans_b else 0)

    def matmul_bias(self, x: str, k: int, n: int) -> str:
        m = self.op("MatMul", [x, self.tensor("mm_w", self.he((k, n), k))])
        return self.op("Add", [m, self.tensor("mm_b", self.small((n,)))])

    # model -----------------------------------------------------------------------------
    def build(self, opset: int) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs,
            [helper.make_tensor_value_info(n, t, s) for n, t, s in self.outputs],
            initializer=self.initializers,
            sparse_initializer=self.sparse_initializers or None,
            doc_string=self.graph_doc or None,
        )
        opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in self.extra_opsets]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_FOR_OPSET[opset],
                                  producer_name=PRODUCER, producer_version=PRODUCER_VERSION,
                                  functions=self.functions or None)
        if self.doc:
            model.doc_string = self.doc
        if self.metadata:
            helper.set_model_props(model, self.metadata)
        # Type every graph output (and intermediate values, when asked) by ONNX shape inference.
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=self.full_check, data_prop=True)
        for out, inf, (_, _, shape) in zip(model.graph.output, inferred.graph.output, self.outputs):
            if shape is None:
                if not inf.type.tensor_type.HasField("shape"):
                    raise RuntimeError(f"{self.name}: shape inference left output {out.name} "
                                       "untyped; pass shape= to Builder.output")
                out.type.CopyFrom(inf.type)
        if self.keep_value_info:
            model.graph.value_info.extend(inferred.graph.value_info)
        return model


MODELS: list[tuple[str, int, str, object]] = []


def golden(name: str, opset: int, notes: str):
    def register(fn):
        MODELS.append((name, opset, notes, fn))
        return fn
    return register


def image(b: Builder, shape) -> np.ndarray:
    return b.randn(shape)


# --------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------


@golden("resnet_block_op9", 9,
        "ResNet stem + basic block + strided block with 1x1 projection shortcut; opset-9 BN, "
        "Sum for residuals, MaxPool, AveragePool, Reshape, Dropout(ratio attr), Gemm transB, Softmax.")
def resnet_block_op9(b: Builder):
    x = b.input("input", [1, 3, 32, 32], image(b, (1, 3, 32, 32)))
    h = b.op("Relu", [b.bn(b.conv(x, 3, 8, 3), 8)])
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    r = b.op("Relu", [b.bn(b.conv(h, 8, 8, 3, bias=False), 8)])
    r = b.bn(b.conv(r, 8, 8, 3, bias=False), 8)
    h = b.op("Relu", [b.op("Sum", [h, r])])
    r = b.op("Relu", [b.bn(b.conv(h, 8, 16, 3, stride=2, bias=False), 16)])
    r = b.bn(b.conv(r, 16, 16, 3, bias=False), 16)
    s = b.bn(b.conv(h, 8, 16, 1, stride=2, bias=False), 16)
    h = b.op("Relu", [b.op("Sum", [s, r])])
    h = b.op("AveragePool", [h], kernel_shape=[8, 8], strides=[8, 8])
    h = b.op("Reshape", [h, b.i64("shape", [0, -1])])
    h = b.op("Dropout", [h], ratio=0.5)
    h = b.op("Softmax", [b.gemm(h, 16, 10)], axis=1)
    b.output(h, "prob")


@golden("resnet_block_op13", 13,
        "ResNet basic blocks with symbolic batch 'N', value_info for every intermediate, "
        "metadata_props and doc strings; Add residuals, GlobalAveragePool, Flatten, Gemm; two outputs.")
def resnet_block_op13(b: Builder):
    b.keep_value_info = True
    b.doc = "Golden model: residual conv net with a symbolic batch dimension."
    b.graph_doc = "stem -> basic block -> strided block -> GAP -> Gemm"
    b.metadata = {"author": "pare golden", "license": "MIT OR Apache-2.0", "task": "classification"}
    x = b.input("images", ["N", 3, 32, 32], image(b, (2, 3, 32, 32)))
    h = b.op("Relu", [b.bn(b.conv(x, 3, 8, 3, bias=False), 8)], doc="stem activation")
    r = b.op("Relu", [b.bn(b.conv(h, 8, 8, 3, bias=False), 8)])
    r = b.bn(b.conv(r, 8, 8, 3, bias=False), 8)
    h = b.op("Relu", [b.op("Add", [h, r], doc="residual")])
    r = b.op("Relu", [b.bn(b.conv(h, 8, 16, 3, stride=2, bias=False), 16)])
    r = b.bn(b.conv(r, 16, 16, 3, bias=False), 16)
    s = b.bn(b.conv(h, 8, 16, 1, stride=2, bias=False), 16)
    h = b.op("Relu", [b.op("Add", [s, r])])
    f = b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1)
    logits = b.gemm(f, 16, 10)
    b.output(f, "features")
    b.output(logits, "logits")


@golden("inception_concat_op13", 13,
        "Inception-style 4-branch block (1x1, 1x1->3x3, 1x1->5x5, maxpool->1x1), Concat, LRN, "
        "Split with split input (opset 13), Max/Min/Sub, GlobalMaxPool, MatMul+Add head, Softmax.")
def inception_concat_op13(b: Builder):
    x = b.input("x", [1, 8, 16, 16], image(b, (1, 8, 16, 16)))
    stem = b.op("Relu", [b.conv(x, 8, 16, 3)])
    b1 = b.op("Relu", [b.conv(stem, 16, 8, 1)])
    b2 = b.op("Relu", [b.conv(b.op("Relu", [b.conv(stem, 16, 6, 1)]), 6, 8, 3)])
    b3 = b.op("Relu", [b.conv(b.op("Relu", [b.conv(stem, 16, 4, 1)]), 4, 8, 5)])
    p = b.op("MaxPool", [stem], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    b4 = b.op("Relu", [b.conv(p, 16, 8, 1)])
    cat = b.op("Concat", [b1, b2, b3, b4], axis=1)
    lrn = b.op("LRN", [cat], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    s1, s2 = b.op("Split", [lrn, b.i64("split", [16, 16])], n_out=2, axis=1)
    d = b.op("Sub", [b.op("Max", [s1, s2]), b.op("Min", [s1, s2])])
    g = b.op("Flatten", [b.op("GlobalMaxPool", [d])], axis=1)
    y = b.op("Softmax", [b.matmul_bias(g, 16, 10)], axis=-1)
    b.output(y, "probs")


@golden("se_hardsigmoid_op17", 17,
        "MobileNetV3-style inverted residual blocks: 1x1 expand, depthwise 3x3 and strided 5x5 "
        "(group=C), BN, HardSwish, Relu6 as Clip(min,max inputs), squeeze-excite with "
        "GlobalAveragePool->1x1->Relu->1x1->HardSigmoid->Mul, residual Add, Gemm head.")
def se_hardsigmoid_op17(b: Builder):
    x = b.input("input", [1, 3, 32, 32], image(b, (1, 3, 32, 32)))
    zero, six = b.f32("clip_min", 0.0), b.f32("clip_max", 6.0)

    def se(h, c, r):
        s = b.op("GlobalAveragePool", [h])
        s = b.op("Relu", [b.conv(s, c, r, 1)])
        s = b.op("HardSigmoid", [b.conv(s, r, c, 1)], alpha=1.0 / 6.0, beta=0.5)
        return b.op("Mul", [h, s])

    stem = b.op("HardSwish", [b.bn(b.conv(x, 3, 16, 3, stride=2, bias=False), 16)])
    h = b.op("HardSwish", [b.bn(b.conv(stem, 16, 32, 1, bias=False), 32)])
    h = b.op("Clip", [b.bn(b.conv(h, 32, 32, 3, group=32, bias=False), 32), zero, six])
    h = se(h, 32, 8)
    h = b.bn(b.conv(h, 32, 16, 1, bias=False), 16)
    h = b.op("Add", [stem, h])
    h = b.op("HardSwish", [b.bn(b.conv(h, 16, 48, 1, bias=False), 48)])
    h = b.op("HardSwish", [b.bn(b.conv(h, 48, 48, 5, stride=2, group=48, bias=False), 48)])
    h = se(h, 48, 12)
    h = b.bn(b.conv(h, 48, 24, 1, bias=False), 24)
    h = b.op("HardSwish", [b.conv(h, 24, 64, 1)])
    f = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    b.output(b.gemm(f, 64, 10), "logits")


@golden("ppocr_constants_op11", 11,
        "PP-OCR style: every weight is a Constant node (no initializers); manual hardswish "
        "x*Clip(x+3,0,6)/6 with Clip-11 min/max inputs, depthwise conv, SE with "
        "HardSigmoid(0.2,0.5), ConvTranspose x2, Resize-11 (roi/scales inputs, nearest "
        "asymmetric floor), Add, Sigmoid.")
def ppocr_constants_op11(b: Builder):
    b.doc = "Weights stored as Constant nodes, like Paddle2ONNX exports."
    x = b.input("x", [1, 3, 32, 32], b.rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    C = dict(as_const=True)

    def hswish(h):
        t = b.op("Add", [h, b.f32("three", 3.0, **C)])
        t = b.op("Clip", [t, b.f32("zero", 0.0, **C), b.f32("six", 6.0, **C)])
        return b.op("Mul", [h, b.op("Div", [t, b.f32("six", 6.0, **C)])])

    h = hswish(b.bn(b.conv(x, 3, 8, 3, stride=2, bias=False, **C), 8, **C))      # 8x16x16
    h = b.op("Relu", [b.bn(b.conv(h, 8, 8, 3, group=8, bias=False, **C), 8, **C)])
    s = b.op("GlobalAveragePool", [h])
    s = b.op("Relu", [b.conv(s, 8, 4, 1, **C)])
    s = b.op("HardSigmoid", [b.conv(s, 4, 8, 1, **C)], alpha=0.2, beta=0.5)
    h = b.op("Mul", [h, s])
    h = hswish(b.conv(h, 8, 16, 1, **C))                                          # 16x16x16
    up = b.op("ConvTranspose", [h, b.tensor("convT_w", b.he((16, 8, 2, 2), 16), True),
                                b.tensor("convT_b", b.small((8,)), True)],
              kernel_shape=[2, 2], strides=[2, 2])                                # 8x32x32
    up = b.op("Relu", [b.bn(up, 8, **C)])
    lat = b.conv(h, 16, 8, 1, **C)
    rs = b.op("Resize", [lat, b.f32("roi", np.zeros((0,), np.float32), **C),
                         b.f32("scales", [1, 1, 2, 2], **C)],
              mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    h = b.op("Add", [up, rs])
    b.output(b.op("Sigmoid", [b.conv(h, 8, 1, 3, **C)]), "maps")


@golden("unet_instnorm_op13", 13,
        "Small U-Net: Conv+InstanceNormalization+LeakyRelu, MaxPool down, Conv+PRelu(per-channel "
        "slope), ConvTranspose(k4,s2,p1) and Resize-13 linear half_pixel (scales input, empty roi) "
        "up, Concat skip, AveragePool(count_include_pad=0), Sigmoid.")
def unet_instnorm_op13(b: Builder):
    x = b.input("image", [1, 3, 32, 32], image(b, (1, 3, 32, 32)))
    e1 = b.op("InstanceNormalization", [b.conv(x, 3, 8, 3), b.f32("in_scale", 1 + b.small((8,), 0.1)),
                                        b.f32("in_bias", b.small((8,), 0.1))], epsilon=1e-5)
    e1 = b.op("LeakyRelu", [e1], alpha=0.1)
    d = b.op("MaxPool", [e1], kernel_shape=[2, 2], strides=[2, 2])
    e2 = b.op("PRelu", [b.conv(d, 8, 16, 3), b.f32("slope", b.rng.uniform(0.05, 0.3, (16, 1, 1)))])
    up = b.op("ConvTranspose", [e2, b.tensor("convT_w", b.he((16, 8, 4, 4), 16 * 4)),
                                b.tensor("convT_b", b.small((8,)))],
              kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1])
    up2 = b.op("Resize", [b.conv(e2, 16, 8, 1), "", b.f32("scales", [1, 1, 2, 2])],
               mode="linear", coordinate_transformation_mode="half_pixel")
    cat = b.op("Concat", [e1, up, up2], axis=1)
    cat = b.op("AveragePool", [cat], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
               count_include_pad=0)
    b.output(b.op("Sigmoid", [b.conv(cat, 24, 2, 1)]), "mask")


@golden("legacy_attrs_op9", 9,
        "Opset-9 forms whose attributes later became inputs: Upsample-9 (scales input), Pad-2 "
        "(pads attr, reflect and constant value), Clip-6 (min/max attrs), Slice-1 (attrs), "
        "Split-2 (split attr), Squeeze/Unsqueeze-1 (axes attrs), ReduceMean-1 (axes attr); "
        "Transpose, Flatten, LeakyRelu, Tanh.")
def legacy_attrs_op9(b: Builder):
    x = b.input("x", [1, 4, 8, 8], image(b, (1, 4, 8, 8)))
    u = b.op("Upsample", [x, b.f32("scales", [1, 1, 2, 2])], mode="nearest")          # 1x4x16x16
    p = b.op("Pad", [u], pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect")               # 1x4x18x18
    p = b.op("Pad", [p], pads=[0, 0, 0, 1, 0, 0, 1, 0], mode="constant", value=0.25)  # 1x4x19x19
    c = b.op("Clip", [p], min=-0.5, max=0.5)
    s = b.op("Slice", [c], starts=[1, 2], ends=[17, 18], axes=[2, 3])                 # 1x4x16x16
    a, rest = b.op("Split", [s], n_out=2, axis=1, split=[1, 3])
    sq = b.op("Squeeze", [a], axes=[1])
    un = b.op("Unsqueeze", [sq], axes=[1])
    attrs_pipeline_tail(b, un, rest)                                                  # 1x3x16x16


def attrs_pipeline_tail(b: "Builder", un: str, rest: str) -> None:
    """The shared end of the attribute-vs-input pipelines (ops whose form did not change)."""
    m = b.op("Mul", [un, rest])
    mean = b.op("ReduceMean", [m], axes=[2, 3], keepdims=1)
    t = b.op("Transpose", [m], perm=[0, 2, 3, 1])
    f = b.op("Tanh", [b.op("LeakyRelu", [b.op("Flatten", [t], axis=1)], alpha=0.2)])
    b.output(f, "flat")
    b.output(mean, "mean")


@golden("attrs_as_inputs_op13", 13,
        "The same pipeline with opset-13 input forms: Resize-13 (sizes input, nearest "
        "round_prefer_ceil), Pad-13 (pads + constant_value inputs), Clip-13 (min/max inputs), "
        "Slice-13 (starts/ends/axes/steps inputs), Split-13 (split input), Squeeze/Unsqueeze-13 "
        "(axes inputs), ReduceMean-13 (axes still an attribute).")
def attrs_as_inputs_op13(b: Builder):
    x = b.input("x", [1, 4, 8, 8], image(b, (1, 4, 8, 8)))
    u = b.op("Resize", [x, "", "", b.i64("sizes", [1, 4, 16, 16])], mode="nearest",
             coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")
    p = b.op("Pad", [u, b.i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]), b.f32("pad_value", 0.25)],
             mode="constant")                                                          # 1x4x18x18
    c = b.op("Clip", [p, b.f32("lo", -0.5), b.f32("hi", 0.5)])
    s = b.op("Slice", [c, b.i64("starts", [1, 1]), b.i64("ends", [17, 17]), b.i64("axes", [2, 3]),
                       b.i64("steps", [1, 2])])                                        # 1x4x16x8
    a, rest = b.op("Split", [s, b.i64("split", [1, 3])], n_out=2, axis=1)
    sq = b.op("Squeeze", [a, b.i64("sq_axes", [1])])
    un = b.op("Unsqueeze", [sq, b.i64("unsq_axes", [1])])
    attrs_pipeline_tail(b, un, rest)


@golden("attrs_as_inputs_op21", 21,
        "Opset-21 forms: Resize-19 with axes attr + 2-element scales (linear), Pad-21 with axes "
        "input (edge), Clip inputs, Slice inputs, Split-18 num_outputs, Squeeze/Unsqueeze inputs, "
        "ReduceMean-18 axes input, Shape-21 start/end, ConstantOfShape, Cast to fp16 and back, "
        "Identity, Gather.")
def attrs_as_inputs_op21(b: Builder):
    x = b.input("x", [1, 4, 8, 8], image(b, (1, 4, 8, 8)))
    u = b.op("Resize", [x, "", b.f32("scales", [2, 2])], axes=[2, 3], mode="linear",
             coordinate_transformation_mode="pytorch_half_pixel")                     # 1x4x16x16
    p = b.op("Pad", [u, b.i64("pads", [1, 1, 1, 1]), "", b.i64("pad_axes", [2, 3])], mode="edge")
    c = b.op("Clip", [p, b.f32("lo", -0.5), b.f32("hi", 0.5)])
    s = b.op("Slice", [c, b.i64("starts", [1, 1]), b.i64("ends", [17, 17]), b.i64("axes", [2, 3])])
    a, rest = b.op("Split", [s], n_out=2, axis=1, num_outputs=2)                      # 2 + 2 ch
    sq = b.op("Squeeze", [a, b.i64("sq_axes", [0])])                                  # 2x16x16
    un = b.op("Unsqueeze", [sq, b.i64("unsq_axes", [0])])
    m = b.op("Mul", [un, rest])
    half = b.op("Cast", [b.op("Cast", [m], to=TensorProto.FLOAT16)], to=F32)
    mean = b.op("ReduceMean", [half, b.i64("rm_axes", [2, 3])], keepdims=0)           # 1x2
    hw = b.op("Shape", [m], start=2, end=4)                                           # [16,16]
    ones = b.op("ConstantOfShape", [hw], value=numpy_helper.from_array(np.array([1.5], np.float32), ""))
    plane = b.op("Add", [b.op("Identity", [half]), ones])
    row = b.op("Gather", [plane, b.i64("rows", [0, 5, 15])], axis=2)                  # 1x2x3x16
    b.output(row, "rows")
    b.output(mean, "mean")


@golden("transformer_block_op17", 17,
        "Attention block on [N,16,32] tokens (symbolic batch, value_info kept): "
        "LayerNormalization-17, MatMul+Add projections, Reshape/Transpose to heads, "
        "scaled MatMul, Softmax(-1); PP-OCR-rec-style manual layer norm "
        "(ReduceMean, Sub, Pow, Sqrt, Div); swish MLP (Sigmoid*x).")
def transformer_block_op17(b: Builder):
    b.keep_value_info = True
    b.metadata = {"source": "pare golden", "layout": "NLC"}
    d, heads = 32, 4
    x = b.input("tokens", ["N", 16, d], image(b, (2, 16, d)))
    ln = b.op("LayerNormalization", [x, b.f32("ln_g", 1 + b.small((d,), 0.1)), b.f32("ln_b", b.small((d,), 0.1))],
              axis=-1, epsilon=1e-5)
    hd = b.i64("heads_shape", [0, 0, heads, d // heads])
    q = b.op("Transpose", [b.op("Reshape", [b.matmul_bias(ln, d, d), hd])], perm=[0, 2, 1, 3])
    k = b.op("Transpose", [b.op("Reshape", [b.matmul_bias(ln, d, d), hd])], perm=[0, 2, 3, 1])
    v = b.op("Transpose", [b.op("Reshape", [b.matmul_bias(ln, d, d), hd])], perm=[0, 2, 1, 3])
    sc = b.op("Div", [b.op("MatMul", [q, k]), b.f32("sqrt_dk", math.sqrt(d // heads))])
    att = b.op("Softmax", [sc], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [att, v])], perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.i64("merge_shape", [0, 0, d])])
    res = b.op("Add", [x, b.matmul_bias(ctx, d, d)])
    mu = b.op("ReduceMean", [res], axes=[-1])
    dev = b.op("Sub", [res, mu])
    var = b.op("ReduceMean", [b.op("Pow", [dev, b.f32("two", 2.0)])], axes=[-1])
    n = b.op("Div", [dev, b.op("Sqrt", [b.op("Add", [var, b.f32("eps", 1e-5)])])])
    n = b.op("Add", [b.op("Mul", [n, b.f32("g2", 1 + b.small((d,), 0.1))]), b.f32("b2", b.small((d,), 0.1))])
    h = b.matmul_bias(n, d, 2 * d)
    h = b.op("Mul", [h, b.op("Sigmoid", [h])])
    out = b.op("Add", [res, b.matmul_bias(h, 2 * d, d)])
    b.output(out, "hidden")


@golden("gemm_mlp_op21", 21,
        "MLP head at opset 21 with symbolic batch: Flatten, Gemm transB / alpha,beta / transA, "
        "Tanh, variadic broadcasting Max/Min/Sum, HardSigmoid, Softmax; two outputs.")
def gemm_mlp_op21(b: Builder):
    b.keep_value_info = True
    x = b.input("x", ["N", 1, 8, 8], image(b, (3, 1, 8, 8)))
    f = b.op("Flatten", [x], axis=1)                                                  # Nx64
    h = b.op("Tanh", [b.gemm(f, 64, 32, trans_b=True)])
    h2 = b.op("Gemm", [h, b.tensor("w2", b.he((32, 16), 32)), b.tensor("b2", b.small((16,)))],
              alpha=0.5, beta=2.0)
    mx = b.op("Max", [h2, b.f32("floor", b.small((16,), 0.2))])
    mn = b.op("Min", [h2, b.f32("ceil", 0.5 + b.small((1, 16), 0.2)), b.f32("cap", 0.8)])
    s = b.op("Sum", [mx, mn, h2])
    y = b.op("Softmax", [b.op("HardSigmoid", [s], alpha=0.3, beta=0.4)], axis=1)
    aux = b.op("Gemm", [b.op("Transpose", [f], perm=[1, 0]), b.tensor("w3", b.he((64, 8), 64))], transA=1)
    b.output(y, "probs")
    b.output(aux, "aux")


@golden("shape_ops_op13", 13,
        "Dynamic-shape plumbing with symbolic batch and value_info: Shape, Gather(scalar index), "
        "Unsqueeze, Concat of int64, Reshape from a computed shape, ConstantOfShape, Cast "
        "int64->float, Gather on axis 1, ReduceMean keepdims=0; int64-derived float output.")
def shape_ops_op13(b: Builder):
    b.keep_value_info = True
    x = b.input("feat", ["N", 4, 8, 8], image(b, (2, 4, 8, 8)))
    sh = b.op("Shape", [x])
    n = b.op("Unsqueeze", [b.op("Gather", [sh, b.i64("zero", 0)], axis=0), b.i64("ax0", [0])])
    flat = b.op("Reshape", [x, b.op("Concat", [n, b.i64("minus1", [-1])], axis=0)])   # Nx256
    cos = b.op("ConstantOfShape", [b.op("Concat", [n, b.i64("c256", [256])], axis=0)],
               value=numpy_helper.from_array(np.array([0.5], np.float32), ""))
    y = b.op("Add", [flat, cos])
    shf = b.op("Cast", [sh], to=F32)
    g = b.op("ReduceMean", [b.op("Gather", [x, b.i64("chans", [3, 0])], axis=1)], axes=[1], keepdims=0)
    b.output(y, "flat_plus", shape=["N", 256])  # inference cannot see through the computed shape
    b.output(shf, "shape_f")
    b.output(g, "gathered")


@golden("local_function_op17", 17,
        "Model-local FunctionProto 'pare.local::ConvAct' (Conv + LeakyRelu, alpha is an "
        "attribute reference) called twice with different alpha; custom domain in opset_import.")
def local_function_op17(b: Builder):
    fn = helper.make_function(
        "pare.local", "ConvAct", ["X", "W", "B"], ["Y"],
        [helper.make_node("Conv", ["X", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
         onnx.NodeProto(op_type="LeakyRelu", input=["c"], output=["Y"],
                        attribute=[onnx.AttributeProto(name="alpha", ref_attr_name="alpha",
                                                       type=onnx.AttributeProto.FLOAT)])],
        opset_imports=[helper.make_opsetid("", 17)], attributes=["alpha"],
        doc_string="3x3 same-padding convolution followed by LeakyRelu(alpha).")
    b.functions.append(fn)
    b.extra_opsets.append(("pare.local", 1))
    x = b.input("x", [1, 3, 16, 16], image(b, (1, 3, 16, 16)))
    h = b.op("ConvAct", [x, b.tensor("w1", b.he((8, 3, 3, 3), 27)), b.tensor("b1", b.small((8,)))],
             domain="pare.local", alpha=0.1)
    h = b.op("ConvAct", [h, b.tensor("w2", b.he((8, 8, 3, 3), 72)), b.tensor("b2", b.small((8,)))],
             domain="pare.local", alpha=0.3)
    b.output(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), "y")


@golden("control_flow_op13", 13,
        "If (cond = mean(x) > 0; then Relu(x*w), else Sigmoid(x+b)) and Loop (3 trips, "
        "loop-carried [1,4] state and a scan output); subgraphs read main-graph tensors "
        "from the outer scope and have no constants of their own.")
def control_flow_op13(b: Builder):
    x = b.input("x", [1, 4, 8, 8], image(b, (1, 4, 8, 8)))
    w = b.f32("w_outer", b.rng.uniform(0.5, 1.5, (1, 4, 1, 1)))
    bias = b.f32("b_outer", b.small((1, 4, 1, 1), 0.5))
    scale = b.f32("loop_scale", b.rng.uniform(0.5, 1.0, (1, 4)))
    cond = b.op("Greater", [b.op("ReduceMean", [x], keepdims=0), b.f32("zero", 0.0)])
    then_g = helper.make_graph(
        [helper.make_node("Mul", [x, w], ["then_m"]), helper.make_node("Relu", ["then_m"], ["then_y"])],
        "then_branch", [], [helper.make_tensor_value_info("then_y", F32, [1, 4, 8, 8])])
    else_g = helper.make_graph(
        [helper.make_node("Add", [x, bias], ["else_a"]), helper.make_node("Sigmoid", ["else_a"], ["else_y"])],
        "else_branch", [], [helper.make_tensor_value_info("else_y", F32, [1, 4, 8, 8])])
    y_if = b.op("If", [cond], then_branch=then_g, else_branch=else_g)
    v0 = b.op("ReduceMean", [x], axes=[2, 3], keepdims=0)                               # 1x4
    body = helper.make_graph(
        [helper.make_node("Cast", ["iter"], ["iter_f"], to=F32),
         helper.make_node("Mul", ["v_in", scale], ["v_scaled"]),
         helper.make_node("Add", ["v_scaled", "iter_f"], ["v_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Tanh", ["v_out"], ["scan_out"])],
        "loop_body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", F32, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F32, [1, 4]),
         helper.make_tensor_value_info("scan_out", F32, [1, 4])])
    trips = b.i64("trips", 3)
    keep_going = b.tensor("keep_going", np.array(True))
    v_final, scan = b.op("Loop", [trips, keep_going, v0], n_out=2, body=body)
    b.output(y_if, "if_out", shape=[1, 4, 8, 8])
    b.output(v_final, "loop_final", shape=[1, 4])
    b.output(scan, "loop_scan", shape=[3, 1, 4])


@golden("sparse_initializer_op13", 13,
        "MatMul whose weight is a graph sparse_initializer (COO, linear indices) and a second "
        "MatMul whose weight is a Constant node with sparse_value. ORT runs it; "
        "onnx.checker full_check FAILS (ONNX shape inference types a sparse initializer as "
        "sparse_tensor, which MatMul rejects) - only the plain check_model passes.")
def sparse_initializer_op13(b: Builder):
    b.full_check = False
    x = b.input("x", [2, 16], image(b, (2, 16)))

    def sparse(name, shape, density):
        dense = b.he(shape, shape[0])
        mask = b.rng.uniform(0, 1, shape) < density
        flat = np.flatnonzero(mask).astype(np.int64)
        vals = numpy_helper.from_array(dense.reshape(-1)[flat], name)
        return helper.make_sparse_tensor(vals, numpy_helper.from_array(flat, ""), list(shape))

    b.sparse_initializers.append(sparse("w_sparse", (16, 8), 0.25))
    h = b.op("Relu", [b.op("MatMul", [x, "w_sparse"])])
    b.nodes.append(helper.make_node("Constant", [], ["w_sparse_const"], name="n_sparse_const",
                                    sparse_value=sparse("w_sparse_const", (8, 4), 0.5)))
    y = b.op("MatMul", [h, "w_sparse_const"])
    b.output(y, "y", shape=[2, 4])


@golden("com_microsoft_op17", 17,
        "opset_import includes com.microsoft v1: com.microsoft::FusedConv(activation=Relu) and "
        "com.microsoft::Gelu (ORT contrib ops, unknown to the onnx checker, which skips them).")
def com_microsoft_op17(b: Builder):
    b.extra_opsets.append(("com.microsoft", 1))
    x = b.input("x", [1, 3, 16, 16], image(b, (1, 3, 16, 16)))
    h = b.op("FusedConv", [x, b.tensor("w1", b.he((8, 3, 3, 3), 27)), b.tensor("b1", b.small((8,)))],
             domain="com.microsoft", activation="Relu", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    h = b.op("Gelu", [b.conv(h, 8, 8, 3)], domain="com.microsoft")
    f = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    b.output(b.gemm(f, 8, 4), "y", shape=[1, 4])  # onnx cannot infer through contrib ops


@golden("dropout_identity_op13", 13,
        "Dropout-13 with ratio and training_mode(false) inputs and its bool mask output, "
        "Dropout with no optional inputs, chained Identity nodes; a bool graph output.")
def dropout_identity_op13(b: Builder):
    x = b.input("x", [1, 4, 8, 8], image(b, (1, 4, 8, 8)))
    c = b.conv(x, 4, 4, 3)
    d, mask = b.op("Dropout", [c, b.f32("ratio", 0.3), b.tensor("training", np.array(False))], n_out=2)
    h = b.op("Relu", [b.op("Identity", [d])])
    h = b.op("Identity", [b.op("Dropout", [h])])
    b.output(h, "y")
    b.output(mask, "mask", TensorProto.BOOL)


def _qdq_weights(b: Builder, w: np.ndarray, axis: int = 0):
    """Symmetric per-channel int8 quantization of w along axis -> (q, scales)."""
    red = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=red) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


@golden("qdq_conv_op13", 13,
        "Hand-built QDQ conv net: QuantizeLinear/DequantizeLinear u8 activations (per-tensor), "
        "s8 per-channel weights (DequantizeLinear axis=0), int32 bias DQ with scale = "
        "s_in*s_w, Conv, Relu, MaxPool, 1x1 Conv, GlobalAveragePool, Flatten.")
def qdq_conv_op13(b: Builder):
    x = b.input("x", [1, 3, 16, 16], image(b, (1, 3, 16, 16)))

    def qdq(v, scale, zp):
        s, z = b.f32("a_scale", scale), b.tensor("a_zp", np.array(zp, np.uint8))
        return b.op("DequantizeLinear", [b.op("QuantizeLinear", [v, s, z]), s, z]), scale

    def qconv(v, s_in, cin, cout, k):
        w, bias = b.he((cout, cin, k, k), cin * k * k), b.small((cout,))
        q, s_w = _qdq_weights(b, w)
        wd = b.op("DequantizeLinear", [b.tensor("w_q", q), b.f32("w_scale", s_w),
                                       b.tensor("w_zp", np.zeros(cout, np.int8))], axis=0)
        s_b = (s_in * s_w).astype(np.float32)
        bq = np.round(bias / s_b).astype(np.int32)
        bd = b.op("DequantizeLinear", [b.tensor("b_q", bq), b.f32("b_scale", s_b),
                                       b.tensor("b_zp", np.zeros(cout, np.int32))], axis=0)
        return b.op("Conv", [v, wd, bd], kernel_shape=[k, k], pads=[k // 2] * 4)

    h, s = qdq(x, 0.03, 128)
    h = b.op("Relu", [qconv(h, s, 3, 8, 3)])
    h, s = qdq(h, 0.02, 0)
    h, s = qdq(b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2]), s, 0)
    h = b.op("Relu", [qconv(h, s, 8, 4, 1)])
    h, _ = qdq(h, 0.02, 0)
    b.output(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), "y")


@golden("qdq_matmul_op21", 21,
        "Opset-21 QDQ: int8 symmetric activation Q/DQ, int4 weights with blocked "
        "DequantizeLinear-21 (axis=0, block_size=8, int4 zero points), MatMul + Add, "
        "and an int8 per-axis DequantizeLinear(axis=1) second layer.")
def qdq_matmul_op21(b: Builder):
    x = b.input("x", [4, 32], image(b, (4, 32)))
    s_a, z_a = b.f32("a_scale", 0.04), b.tensor("a_zp", np.array(0, np.int8))
    xd = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, s_a, z_a]), s_a, z_a])
    w = b.he((32, 16), 32)
    blocks = w.reshape(4, 8, 16)
    s_w = (np.abs(blocks).max(axis=1) / 7.0).astype(np.float32)                        # 4x16
    q = np.clip(np.round(blocks / s_w[:, None, :]), -8, 7).reshape(32, 16)
    wq = helper.make_tensor(b.fresh("w_int4"), TensorProto.INT4, [32, 16], q.astype(np.int8).reshape(-1).tolist())
    zq = helper.make_tensor(b.fresh("w_zp_int4"), TensorProto.INT4, [4, 16], [0] * 64)
    b.initializers.extend([wq, zq])
    wd = b.op("DequantizeLinear", [wq.name, b.f32("w_scale", s_w), zq.name], axis=0, block_size=8)
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", [xd, wd]), b.f32("bias", b.small((16,)))])])
    w2 = b.he((16, 8), 16)
    q2, s2 = _qdq_weights(b, w2, axis=1)
    wd2 = b.op("DequantizeLinear", [b.tensor("w2_q", q2), b.f32("w2_scale", s2)], axis=1)
    b.output(b.op("MatMul", [h, wd2]), "y")


@golden("mixed_elementwise_op9", 9,
        "Opset-9 elementwise zoo after a conv: LeakyRelu, PRelu, Sub, Mul, Div, Sqrt, Pow, "
        "3-input Max, Min, 3-input Sum, Sigmoid, Tanh, HardSigmoid, Concat, GlobalMaxPool, "
        "AveragePool, Cast to double (a float64 output), Flatten, Gemm.")
def mixed_elementwise_op9(b: Builder):
    x = b.input("a", [1, 3, 16, 16], image(b, (1, 3, 16, 16)))
    c = b.conv(x, 3, 6, 3)
    lr = b.op("LeakyRelu", [c], alpha=0.01)
    pr = b.op("PRelu", [c, b.f32("slope", b.rng.uniform(0.1, 0.3, (6, 1, 1)))])
    s = b.op("Sub", [lr, pr])
    m = b.op("Mul", [s, c])
    mag = b.op("Sqrt", [b.op("Add", [b.op("Mul", [c, c]), b.f32("eps", 1e-3)])])
    d = b.op("Div", [c, mag])
    p = b.op("Pow", [mag, b.f32("exponent", 1.5)])
    mx = b.op("Max", [d, m, p])
    mn = b.op("Min", [d, m])
    sm = b.op("Sum", [mx, mn, s])
    cat = b.op("Concat", [b.op("Sigmoid", [sm]), b.op("Tanh", [sm]),
                          b.op("HardSigmoid", [sm], alpha=0.2, beta=0.5)], axis=1)       # 18 ch
    gmp = b.op("Flatten", [b.op("GlobalMaxPool", [cat])])
    avg = b.op("Cast", [b.op("AveragePool", [cat], kernel_shape=[16, 16])], to=TensorProto.DOUBLE)
    b.output(b.gemm(gmp, 18, 5), "out")
    b.output(avg, "mean64", TensorProto.DOUBLE)


@golden("vgg_bn_op21", 21,
        "VGG-style net at opset 21 with symbolic batch and metadata: Conv+BN+Relu stacks, "
        "MaxPool ceil_mode, AveragePool(pads, ceil_mode, count_include_pad), Reshape [0,-1], "
        "Gemm, Dropout, Softmax.")
def vgg_bn_op21(b: Builder):
    b.metadata = {"author": "pare golden", "opset_note": "opset 21, IR 10"}
    b.doc = "Tiny VGG with batch norm."
    x = b.input("input", ["batch", 3, 32, 32], image(b, (2, 3, 32, 32)))
    h = b.op("Relu", [b.bn(b.conv(x, 3, 8, 3), 8)])
    h = b.op("Relu", [b.bn(b.conv(h, 8, 8, 3), 8)])
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)          # 16x16
    h = b.op("Relu", [b.bn(b.conv(h, 8, 16, 3), 16)])
    h = b.op("AveragePool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
             ceil_mode=1, count_include_pad=1)                                          # 9x9
    h = b.op("MaxPool", [h], kernel_shape=[9, 9])
    h = b.op("Reshape", [h, b.i64("shape", [0, -1])])
    h = b.op("Dropout", [b.op("Relu", [b.gemm(h, 16, 32)])])
    b.output(b.op("Softmax", [b.gemm(h, 32, 10)], axis=-1), "probs")


@golden("ext_data", 13,
        "Small conv net saved with ALL tensors in external data (model.onnx.data beside "
        "model.onnx, size_threshold=0): Conv, BN, Relu, Conv, GlobalAveragePool, Flatten, Gemm.")
def ext_data(b: Builder):
    x = b.input("input", [1, 3, 16, 16], image(b, (1, 3, 16, 16)))
    h = b.op("Relu", [b.bn(b.conv(x, 3, 8, 3, bias=False), 8)])
    h = b.op("Relu", [b.conv(h, 8, 8, 3)])
    f = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    b.output(b.gemm(f, 8, 4), "logits")


EXTERNAL_DATA = {"ext_data"}


# --------------------------------------------------------------------------------------
# Running and writing
# --------------------------------------------------------------------------------------


def ort_session(model_bytes_or_path, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes_or_path, so, providers=["CPUExecutionProvider"])


def write_tensor(path: Path, arr: np.ndarray, name: str):
    path.write_bytes(numpy_helper.from_array(np.ascontiguousarray(arr), name).SerializeToString())


def write_test_data(dirpath: Path, inputs: dict, input_names, outputs, output_names):
    ds = dirpath / "test_data_set_0"
    ds.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(input_names):
        write_tensor(ds / f"input_{i}.pb", inputs[name], name)
    for i, (name, arr) in enumerate(zip(output_names, outputs)):
        write_tensor(ds / f"output_{i}.pb", arr, name)


def shape_of(vi: onnx.ValueInfoProto):
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in vi.type.tensor_type.shape.dim]


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def make_one(name: str, opset: int, notes: str, fn) -> dict:
    b = Builder(name)
    fn(b)
    model = b.build(opset)
    onnx.checker.check_model(model, full_check=b.full_check)
    if not b.full_check:
        onnx.checker.check_model(model)

    out_dir = GOLDEN_DIR / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model_path = out_dir / "model.onnx"
    if name in EXTERNAL_DATA:
        onnx.save(model, model_path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=0)
        onnx.checker.check_model(str(model_path), full_check=True)
    else:
        model_path.write_bytes(model.SerializeToString())

    input_names = [i.name for i in model.graph.input]
    output_names = [o.name for o in model.graph.output]
    sess = ort_session(str(model_path))
    outputs = sess.run(output_names, {n: b.test_inputs[n] for n in input_names})
    for n, o in zip(output_names, outputs):
        if o.dtype.kind == "f" and not np.all(np.isfinite(o)):
            raise RuntimeError(f"{name}: output {n} is not finite")
    write_test_data(out_dir, b.test_inputs, input_names, outputs, output_names)

    ops = sorted({(n.domain or "ai.onnx") + "::" + n.op_type for n in model.graph.node})
    return {
        "name": name,
        "opset": opset,
        "ir_version": model.ir_version,
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [{"name": i.name, "shape": shape_of(i),
                    "test_shape": list(b.test_inputs[i.name].shape),
                    "dtype": str(b.test_inputs[i.name].dtype)} for i in model.graph.input],
        "outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype)}
                    for n, o in zip(output_names, outputs)],
        "ops": ops,
        "external_data": name in EXTERNAL_DATA,
        "full_check": b.full_check,
        "bytes": dir_size(out_dir),
        "notes": notes,
    }


def make_qdq_saturation(out_dir: Path) -> dict:
    """Regression pair for int8 saturation on AVX2/AVX-512 without VNNI.

    A small fp32 conv net whose weights use the full s8 range in every channel and whose
    input sits near the top of its u8 range is quantized by onnxruntime.quantization
    (QDQ, per-channel s8 weights, u8 activations). With ORT_DISABLE_ALL the QDQ model runs
    reference Q/DQ semantics; with ORT_ENABLE_ALL ORT fuses it into QLinearConv, whose
    u8 x s8 kernel sums pairs of products in saturating int16 (vpmaddubsw), so adjacent
    products of 255*127 overflow and the outputs diverge visibly.
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    import logging
    import tempfile

    name = "qdq_saturation"
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    c1, c2 = 16, 16
    sign1 = np.sign(rng.standard_normal((c1, 1, 1, 1))).astype(np.float32)
    w1 = rng.uniform(0.2, 1.0, (c1, 3, 3, 3)).astype(np.float32) * sign1
    sign2 = np.sign(rng.standard_normal((c2, 1, 1, 1))).astype(np.float32)
    w2 = rng.uniform(0.02, 0.1, (c2, c1, 3, 3)).astype(np.float32) * sign2
    wf = (rng.standard_normal((10, c2)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for n, a in
             (("w1", w1), ("b1", np.zeros(c1, np.float32)), ("w2", w2),
              ("b2", np.zeros(c2, np.float32)), ("wf", wf), ("bf", np.zeros(10, np.float32)))]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", F32, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", F32, [1, 10])], initializer=inits)
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7,
                             producer_name=PRODUCER, producer_version=PRODUCER_VERSION)
    onnx.checker.check_model(fp32, full_check=True)

    x = rng.uniform(0.9, 1.0, (1, 3, 16, 16)).astype(np.float32)
    calib = [x] + [rng.uniform(0.0, 1.0, (1, 3, 16, 16)).astype(np.float32) for _ in range(3)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"input": c} for c in calib])

        def get_next(self):
            return next(self._it, None)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "fp32").mkdir(parents=True)
    fp32_path = out_dir / "fp32" / "model.onnx"
    fp32_path.write_bytes(fp32.SerializeToString())
    qdq_path = out_dir / "model.onnx"
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # quiet the "consider pre-processing" advice
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_out = Path(tmp) / "qdq.onnx"
            quantize_static(str(fp32_path), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
            qdq = onnx.load(str(tmp_out))
    finally:
        root_logger.setLevel(level)
    onnx.checker.check_model(qdq, full_check=True)
    qdq_path.write_bytes(qdq.SerializeToString())

    L = ort.GraphOptimizationLevel
    y_fp32 = ort_session(str(fp32_path)).run(["logits"], {"input": x})[0]
    y_ref = ort_session(str(qdq_path)).run(["logits"], {"input": x})[0]
    y_all = ort_session(str(qdq_path), L.ORT_ENABLE_ALL).run(["logits"], {"input": x})[0]
    write_test_data(out_dir / "fp32", {"input": x}, ["input"], [y_fp32], ["logits"])
    write_test_data(out_dir, {"input": x}, ["input"], [y_ref], ["logits"])
    (out_dir / "ort_enable_all").mkdir()
    write_tensor(out_dir / "ort_enable_all" / "output_0.pb", y_all, "logits")

    scale = float(np.abs(y_ref).max())
    div = {
        "max_abs_qdq_disable_vs_fp32": float(np.abs(y_ref - y_fp32).max()),
        "max_abs_qdq_enable_all_vs_disable": float(np.abs(y_all - y_ref).max()),
        "max_rel_qdq_enable_all_vs_disable": float(np.abs(y_all - y_ref).max() / scale),
    }
    return {
        "name": name,
        "opset": 13,
        "ir_version": qdq.ir_version,
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in qdq.opset_import},
        "inputs": [{"name": "input", "shape": [1, 3, 16, 16], "test_shape": [1, 3, 16, 16],
                    "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
        "ops": sorted({"ai.onnx::" + n.op_type for n in qdq.graph.node}),
        "external_data": False,
        "full_check": True,
        "bytes": dir_size(out_dir),
        "divergence": div,
        "notes": ("Regression pair: fp32/model.onnx and its onnxruntime.quantization quantize_static "
                  "(QDQ, per_channel, u8 activations, s8 weights) version model.onnx. "
                  "test_data_set_0/output_0.pb is the QDQ model under ORT_DISABLE_ALL; "
                  "ort_enable_all/output_0.pb is the same model under ORT_ENABLE_ALL, which fuses "
                  "to QLinearConv whose u8 x s8 int16 pair sums saturate on AVX2/AVX-512 without "
                  "VNNI; fp32/test_data_set_0 holds the fp32 model's outputs. "
                  "On a VNNI machine the ENABLE_ALL output may not diverge."),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated model names to (re)build; manifest keeps the others")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    manifest_path = GOLDEN_DIR / "manifest.json"
    old = {}
    if only and manifest_path.exists():
        old = {m["name"]: m for m in json.loads(manifest_path.read_text())["models"]}

    entries = []
    for name, opset, notes, fn in MODELS:
        if only is not None and name not in only:
            if name in old:
                entries.append(old[name])
            continue
        entry = make_one(name, opset, notes, fn)
        entries.append(entry)
        print(f"{name:28s} opset {opset:2d}  {entry['bytes']:8d} B  {len(entry['ops'])} op types")

    if only is None or "qdq_saturation" in only:
        entry = make_qdq_saturation(GOLDEN_DIR / "qdq_saturation")
        entries.append(entry)
        print(f"{'qdq_saturation':28s} opset {entry['opset']:2d}  {entry['bytes']:8d} B  {entry['divergence']}")
    elif "qdq_saturation" in old:
        entries.append(old["qdq_saturation"])

    manifest = {
        "generator": "golden/make_golden.py",
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "reference": "ONNX Runtime CPUExecutionProvider, ORT_DISABLE_ALL, 1 thread",
        "models": entries,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(e["bytes"] for e in entries)
    print(f"{len(entries)} models, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
