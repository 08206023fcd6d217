"""The "hand-fused" reference for pare's HardSwish fusion: a model whose decomposed
HardSwish subgraphs are each replaced by one `HardSwish` node, written by hand so that
benches/ort_latency.py can time pare's output against what the fusion should reach.

paddle2onnx (opset 11/12) spells every HardSwish of the PP-OCR models as

    Add(x, 3) -> Clip(., 0, 6) -> Mul(x, .) -> Div(., 6)

The steps:

1. If step 2 finds any decomposition in the model as it is (else the model is returned
   unchanged), raise the default-domain opset to 14, the first with HardSwish, with
   onnx.version_converter (models at 14 or above are left as they are). The converter is
   exact on the PP-OCR models: the upgraded det, rec and cls give bit-identical outputs in
   ONNX Runtime with graph optimizations off. Where shape inference cannot tell the rank of
   a Softmax input (rec: 3 Softmax, cls: 1) it keeps Softmax-11's semantics with a
   Shape -> Flatten -> Softmax -> Reshape adapter: three extra small nodes per Softmax.
2. Match every decomposition: Add of x and a constant 3 (either operand order), Clip of
   that with constant min 0 and max 6, Mul of x and the Clip (either order), then Div by a
   constant 6 or Mul by a constant 1/6 (either order). Constants come from Constant nodes
   or initializers (not graph inputs), hold one float element (shape [] or [1]) and must
   equal their value within 1e-6 relative. The Add, Clip and first Mul outputs must have no
   other reader (nor be graph outputs).
3. Replace the four nodes by `HardSwish(x)`, written to the last node's output and named
   after it, at its place in the node order; drop the Constant nodes and initializers only
   they read, and the value_info of the removed intermediates.

As a script it also checks the result (onnx.checker, full check where the input passes
it) and that ONNX Runtime gives the same outputs as the original on one seeded input: the
worst relative L2 over the outputs, with graph optimizations off and on, each against the
original under the same setting, must be at most max(--tolerance, 1.5 x the deviation ONNX
Runtime's own optimizations cause on the original), tests/oracle/optimize.py's bound. The
floor matters for det only: on random noise its output is a sigmoid saturated near 0 (at
most 6e-5), where ONNX Runtime's Sigmoid resolves steps of ~6e-8, so optimizations on vs
off alone differ by 2e-2 there. Input shapes: --input-shape, else the model's entry in
.cache/models/manifest.json, else dynamic dims set to 1. Exit 1 when a check fails, 2 when
the input cannot be read.

    .venv/bin/python benches/hand_fuse.py IN OUT [--input-shape x=1,3,48,320]

As a module: `hand_fuse(model) -> (model, count)`.
"""

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, version_converter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "oracle"))
import optimize as oracle  # noqa: E402  (seeded input, ORT sessions, relative L2)

HARDSWISH_OPSET = 14
DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model):
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 1)


def upgrade(model):
    """The model at default-domain opset 14 or above (onnx.version_converter when older)."""
    if default_opset(model) >= HARDSWISH_OPSET:
        return model
    return version_converter.convert_version(model, HARDSWISH_OPSET)


def constant_values(graph):
    """Name -> numpy value of every Constant node output and initializer (not those that are
    also graph inputs, which a caller may override)."""
    overridable = {value.name for value in graph.input}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name not in overridable}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS or len(node.attribute) != 1:
            continue
        attribute = node.attribute[0]
        if attribute.name == "value":
            values[node.output[0]] = numpy_helper.to_array(attribute.t)
        elif attribute.name == "value_float":
            values[node.output[0]] = np.array(attribute.f, dtype=np.float32)
        elif attribute.name == "value_floats":
            values[node.output[0]] = np.array(attribute.floats, dtype=np.float32)
    return values


def names_read(graph):
    """How many times each name is read: node inputs (subgraph reads included) and graph outputs."""
    counts = collections.Counter(output.name for output in graph.output)
    for node in graph.node:
        counts.update(name for name in node.input if name)
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                counts.update(names_read(subgraph))
    return counts


def fuse_hardswish(graph):
    """Replace every decomposed HardSwish in `graph` (in place); returns how many."""
    values = constant_values(graph)
    reads = names_read(graph)
    readers = collections.defaultdict(list)
    for node in graph.node:
        for name in set(node.input):
            readers[name].append(node)

    def equals(name, target):
        value = values.get(name)
        return (value is not None and value.size == 1 and value.ndim <= 1
                and np.issubdtype(value.dtype, np.floating)
                and bool(np.isclose(float(value.reshape(())), target, rtol=1e-6, atol=0.0)))

    def other_operand(node, target):
        """The input of binary `node` beside a constant equal to `target` (None if neither is)."""
        a, b = node.input
        return a if equals(b, target) else b if equals(a, target) else None

    def sole_reader(name, op_type):
        """The one node reading `name`, if it is a default-domain `op_type` and nothing else reads it."""
        nodes = readers.get(name, [])
        if reads[name] != 1 or len(nodes) != 1:
            return None
        node = nodes[0]
        return node if node.op_type == op_type and node.domain in DEFAULT_DOMAINS else None

    matches = []  # (x, the four nodes)
    for add in graph.node:
        if add.op_type != "Add" or add.domain not in DEFAULT_DOMAINS or len(add.input) != 2:
            continue
        x = other_operand(add, 3.0)
        clip = sole_reader(add.output[0], "Clip")
        if x is None or clip is None or len(clip.input) != 3 or clip.input[0] != add.output[0]:
            continue
        if not (equals(clip.input[1], 0.0) and equals(clip.input[2], 6.0)):
            continue
        mul = sole_reader(clip.output[0], "Mul")
        if mul is None or sorted(mul.input) != sorted([x, clip.output[0]]):
            continue
        last = sole_reader(mul.output[0], "Div") or sole_reader(mul.output[0], "Mul")
        if last is None or len(last.input) != 2:
            continue
        if last.op_type == "Div" and not (last.input[0] == mul.output[0] and equals(last.input[1], 6.0)):
            continue
        if last.op_type == "Mul" and other_operand(last, 1.0 / 6.0) != mul.output[0]:
            continue
        matches.append((x, (add, clip, mul, last)))

    if not matches:
        return 0
    removed = {id(node) for _, nodes in matches for node in nodes}
    replacement = {id(nodes[-1]): onnx.helper.make_node("HardSwish", [x], [nodes[-1].output[0]],
                                                         name=nodes[-1].name or nodes[-1].output[0])
                   for x, nodes in matches}
    kept = [replacement.get(id(node), node) for node in graph.node
            if id(node) not in removed or id(node) in replacement]
    # Constants only the removed nodes read, and the removed intermediates' value_info.
    candidates = {name for _, nodes in matches for node in nodes for name in node.input}
    dropped = {name for _, nodes in matches for node in nodes[:-1] for name in node.output}
    del graph.node[:]
    graph.node.extend(kept)
    still_read = names_read(graph)
    dead = {name for name in candidates if name in values and still_read[name] == 0}
    kept = [node for node in graph.node if not (node.op_type == "Constant" and node.output[0] in dead)]
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [t for t in graph.initializer if t.name not in dead]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [v for v in graph.value_info if v.name not in dropped | dead]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    return len(matches)


def hand_fuse(model):
    """A copy of `model` with every decomposed HardSwish fused, at opset >= 14, and the
    count; a model without any is copied unchanged (not upgraded)."""
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    if fuse_hardswish(fused.graph) == 0:
        fused.CopyFrom(model)
        return fused, 0
    fused = upgrade(model)
    return fused, fuse_hardswish(fused.graph)


def manifest_shapes(path):
    """Fixed input shapes of the cached model at `path`, from .cache/models/manifest.json ({} if none)."""
    manifest = ROOT / ".cache" / "models" / "manifest.json"
    if not manifest.is_file():
        return {}
    for entry in json.loads(manifest.read_text())["models"]:
        if (manifest.parent / entry["path"]).resolve() == Path(path).resolve():
            shapes = entry["input_shape_arg"]
            return parse_shapes(shapes if isinstance(shapes, list) else [shapes])
    return {}


def parse_shapes(texts):
    return {text.split("=")[0]: [int(d) for d in text.split("=")[1].split(",")] for text in texts}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=D,D,...",
                        help="a fixed input shape for the check (repeatable)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest relative L2 to the original (raised to 1.5x ORT's own off vs on deviation)")
    args = parser.parse_args()
    if not Path(args.input).is_file():
        print(f"hand_fuse: {args.input}: no such model", file=sys.stderr)
        return 2

    original = onnx.load(args.input)
    fused, count = hand_fuse(original)
    print(f"{args.input}: opset {default_opset(original)} -> {default_opset(fused)}, "
          f"replaced {count} decomposed HardSwish, {len(original.graph.node)} -> {len(fused.graph.node)} nodes")
    onnx.save(fused, args.output)

    complaint = oracle.checker_failure(original, fused)
    failures = [complaint] if complaint else []
    fixed = parse_shapes(args.input_shape) or manifest_shapes(args.input)
    feed = oracle.seeded_feed(args.input, fixed)
    shapes = ", ".join(f"{name} {'x'.join(map(str, value.shape))}" for name, value in feed.items())
    levels = {"off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "on": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    reference = {label: oracle.outputs(args.input, level, feed) for label, level in levels.items()}
    floor = max(oracle.rel_l2(a, b) for a, b in zip(reference["off"], reference["on"]))
    bound = max(args.tolerance, 1.5 * floor)
    for label, level in levels.items():
        worst = max(oracle.rel_l2(a, b) for a, b in zip(reference[label], oracle.outputs(args.output, level, feed)))
        print(f"  ORT optimizations {label:3}: rel L2 to the original {worst:.2e}, bound {bound:.1e} "
              f"(ORT's own off vs on {floor:.1e}; seeded input {shapes})")
        if worst > bound:
            failures.append(f"rel L2 {worst:.2e} with ORT optimizations {label}, above {bound:.1e}")
    for failure in failures:
        print("FAIL", failure)
    print(f"wrote {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
