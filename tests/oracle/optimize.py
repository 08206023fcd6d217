"""ONNX Runtime oracle for `pare optimize` (exact families) on the fetched zoo
and PP-OCR models, beside onnxsim and onnxoptimizer on the same inputs.

For every model: optimize with pare (default passes), onnxsim and
onnxoptimizer; check pare's output with onnx.checker (full check where the
input passes it); run all of them in ONNX Runtime with optimizations off and
on, on one seeded input, and compare each with the original under the same
setting (relative L2). pare's deviation must stay within max(1e-5, 1.5x the
deviation ONNX Runtime's own graph optimizations cause on the original),
which is the float32 rounding floor of folding weights. Reports node counts,
what each tool removed (by operator), and ONNX Runtime latency (ORT_ENABLE_ALL,
one thread, median of repeated runs, all variants timed side by side).

Exit status 1 when a check fails: pare's output invalid or off tolerance, or
pare's node count above either tool's. Latency is reported, not asserted:
on a shared 2-core VM run-to-run noise reaches 10%, more than the exact
passes change. benches/ort_latency.py compares latency properly: interleaved
rounds, paired ratios with confidence intervals and an A/A control.
"""

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["resnet50", "densenet121", "inception_v2", "shufflenet", "squeezenet", "vgg19",
          "ppocr_det", "ppocr_rec", "ppocr_cls", "orientation"]


TOOLS = ("original", "pare", "onnxsim", "onnxoptimizer")


class VariantError(Exception):
    """pare could not optimize a model (its exit status and message)."""


class Variants:
    """One model and its optimized forms: `paths[tool]` for every tool in TOOLS, the loaded
    original / onnxsim / onnxoptimizer models, and the fixed input shapes used."""

    def __init__(self, paths, original, simplified, optimized, fixed):
        self.paths, self.original, self.simplified, self.optimized, self.fixed = (
            paths, original, simplified, optimized, fixed)


def make_variants(pare, models, entry, work):
    """Optimize one manifest entry with pare (default passes), onnxsim (fixed input shapes)
    and onnxoptimizer (default passes), writing the results into `work`."""
    import onnxoptimizer
    import onnxsim

    name = entry["name"]
    source = models / entry["path"]
    shapes = entry["input_shape_arg"]
    shapes = shapes if isinstance(shapes, list) else [shapes]
    shape_args = [a for s in shapes for a in ("--input-shape", s)]
    ours = work / f"{name}.pare.onnx"
    run = subprocess.run([pare, "optimize", str(source), "-o", str(ours), "--samples", "1", *shape_args],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise VariantError(f"pare optimize exited {run.returncode}: {run.stderr.strip()}")
    original = onnx.load(str(source))
    fixed = {s.split("=")[0]: [int(d) for d in s.split("=")[1].split(",")] for s in shapes}
    simplified, _ = onnxsim.simplify(original, overwrite_input_shapes=fixed)
    sim_path = work / f"{name}.onnxsim.onnx"
    onnx.save(simplified, str(sim_path))
    optimized = onnxoptimizer.optimize(original)
    opt_path = work / f"{name}.onnxoptimizer.onnx"
    onnx.save(optimized, str(opt_path))
    paths = dict(zip(TOOLS, (source, ours, sim_path, opt_path)))
    return Variants(paths, original, simplified, optimized, fixed)


def seeded_feed(path, fixed):
    """One standard-normal input per graph input (seed 0); symbolic dims not in `fixed` are 1."""
    rng = np.random.default_rng(0)
    feed = {}
    for value in session(path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL).get_inputs():
        dims = fixed.get(value.name) or [d if isinstance(d, int) else 1 for d in value.shape]
        feed[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feed


def session(path, level):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def rel_l2(reference, candidate):
    num = float(np.linalg.norm(candidate.astype(np.float64) - reference.astype(np.float64)))
    den = float(np.linalg.norm(reference.astype(np.float64)))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def outputs(path, level, feed):
    return session(path, level).run(None, feed)


def latency(path, feed, repeats):
    s = session(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    for _ in range(3):
        s.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def checker_failure(original, candidate):
    """onnx.checker's complaint about `candidate`, or None: a full check where the original
    passes one (models that only pass the plain check are held to that)."""
    try:
        onnx.checker.check_model(original, full_check=True)
        full = True
    except Exception:
        full = False
    try:
        onnx.checker.check_model(candidate, full_check=full)
    except Exception as error:
        return f"onnx.checker{' (full)' if full else ''}: {error}"
    return None


def op_counts(model):
    return collections.Counter(n.op_type for n in model.graph.node)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pare", required=True)
    parser.add_argument("--models", default=str(ROOT / ".cache/models"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--only", nargs="*", default=MODELS, help="a subset of the models")
    args = parser.parse_args()

    manifest = json.loads((Path(args.models) / "manifest.json").read_text())
    by_name = {m["name"]: m for m in manifest["models"]}
    # The variants of all models take about 2 GB; the folder goes when the run ends.
    with tempfile.TemporaryDirectory(prefix="pare-oracle-") as folder:
        failures, rows = compare_models(args, by_name, Path(folder))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    for failure in failures:
        print("FAIL", failure)
    print(f"optimize oracle: {len(rows)} models, {len(failures)} failures")
    return 1 if failures else 0


def compare_models(args, by_name, work):
    """Makes every variant of each model in `work`, and returns the failures and measured rows."""
    failures, rows = [], []
    for name in args.only:
        entry = by_name.get(name)
        if entry is None:
            failures.append(f"{name}: not in the fetched models")
            continue
        try:
            made = make_variants(args.pare, Path(args.models), entry, work)
        except VariantError as error:
            failures.append(f"{name}: {error}")
            continue
        source, ours, sim_path, opt_path = (made.paths[k] for k in TOOLS)
        original, simplified, optimized = made.original, made.simplified, made.optimized
        pare_model = onnx.load(str(ours))
        complaint = checker_failure(original, pare_model)
        if complaint:
            failures.append(f"{name}: pare's output fails {complaint}")

        feed = seeded_feed(source, made.fixed)
        deviation = {}
        for label, level in [("none", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                             ("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)]:
            reference = outputs(source, level, feed)
            candidate = outputs(ours, level, feed)
            deviation[label] = max(rel_l2(r, c) for r, c in zip(reference, candidate))
        floor = max(rel_l2(r, c) for r, c in zip(outputs(source, ort.GraphOptimizationLevel.ORT_DISABLE_ALL, feed),
                                                  outputs(source, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, feed)))
        bound = max(1e-5, 1.5 * floor)
        for label in ("none", "all"):
            if deviation[label] > bound:
                failures.append(f"{name}: rel L2 {deviation[label]:.2e} with ORT {label} above {bound:.2e}")

        counts = {"original": op_counts(original), "pare": op_counts(pare_model),
                  "onnxsim": op_counts(simplified), "onnxoptimizer": op_counts(optimized)}
        nodes = {k: sum(v.values()) for k, v in counts.items()}
        removed = {k: dict(sorted((counts["original"] - v).items())) for k, v in counts.items() if k != "original"}
        times = {k: latency(made.paths[k], feed, args.repeats) for k in TOOLS}
        for tool in ("onnxsim", "onnxoptimizer"):
            if nodes["pare"] > nodes[tool]:
                failures.append(f"{name}: pare leaves {nodes['pare']} nodes, {tool} {nodes[tool]}")
        row = {"model": name, "nodes": nodes, "removed": removed, "latency_ms": {k: v * 1e3 for k, v in times.items()},
               "rel_l2": deviation, "ort_own_rel_l2": floor}
        rows.append(row)
        print(f"{name:13} nodes {nodes['original']:4} -> pare {nodes['pare']:4} onnxsim {nodes['onnxsim']:4} "
              f"onnxoptimizer {nodes['onnxoptimizer']:4} | ms orig {times['original']*1e3:7.2f} pare {times['pare']*1e3:7.2f} "
              f"onnxsim {times['onnxsim']*1e3:7.2f} onnxopt {times['onnxoptimizer']*1e3:7.2f} | rel L2 none "
              f"{deviation['none']:.1e} all {deviation['all']:.1e} (ORT's own {floor:.1e})", flush=True)
        for tool, gone in removed.items():
            print(f"    {tool:13} removed {gone}")
    return failures, rows


if __name__ == "__main__":
    sys.exit(main())
