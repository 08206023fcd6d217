"""ONNX Runtime latency of `pare optimize` beside onnxsim, onnxoptimizer and a hand-fused
reference, measured so that run-to-run noise on a shared machine cannot decide the
comparison, plus an exactness check of pare's output on realistic inputs.

For every model: build the four variants (original, pare, onnxsim, onnxoptimizer) exactly
as tests/oracle/optimize.py does, and a fifth, "hand-fused", where benches/hand_fuse.py
replaces at least one decomposed HardSwish (Add 3, Clip 0..6, Mul, Div 6) by a `HardSwish`
node (PP-OCR det, rec, cls), with the same fixed input shapes pare is given so that ONNX
Runtime can fold the same shape computations in both. Open one ONNX Runtime session per
variant (ORT_ENABLE_ALL, one intra-op thread, CPU), warm each up, then run `--rounds`
rounds. In each round the variants are timed back to back in a freshly shuffled order,
`--batch` runs each (the round's figure is the mean of the batch). Drift of the machine
between rounds hits all variants of a round alike, so the paired per-round ratio
pare / other is the statistic: its median over rounds with a 95% bootstrap confidence
interval (seeded). hand-fused / original is reported too (what the fusion can gain).

Two sessions of one and the same file differ too (where the runtime's buffers land in
memory), so a control is timed alongside: a second session of the original model. Its
ratio to the first (an A/A comparison) shows the placement effect, and the verdict per
comparison is "faster" when pare's interval lies below 1, "slower" when it lies above
1 + margin, where margin is the larger of `--margin` and how far the control's interval
reaches from 1 (either side), and "same" otherwise. The gate against hand-fused is the
same: pare must not be reliably slower than it.

Exactness. Before timing, pare's output is run against the original in ONNX Runtime with
graph optimizations off (ORT_DISABLE_ALL) and on (ORT_ENABLE_ALL), each against the
original under the same setting, and the worst relative L2 over the inputs is printed per
output and setting. The OCR models get inputs rendered and preprocessed by
benches/ocr_accuracy.py (seed `--render-seed`): 4 rec lines at their natural widths, 4 cls
lines (half turned by 180 degrees), 2 det pages (736-960 px a side) and 2 orientation
pages; the zoo models get the seeded input they are timed on. pare's timed output has the
fixed input shapes it was given, so it is checked where the inputs fit them (cls,
orientation, zoo); for models with open input dims pare is also run as an OCR user would,
without --input-shape (open dims stay open) and with the rendered inputs as --calib, and
that output ("pare (open dims)") is checked on all of them. An output fails above
max(`--tolerance`, 1.5 x the deviation ONNX Runtime's own optimizations cause on the
original for that output), tests/oracle/optimize.py's bound.

Exit status 1 when pare is "slower" than any variant (or than the original) on any model,
fails the exactness check, or cannot optimize a model. A model missing from the fetched
ones (scripts/fetch_models.py) is skipped with a message.

    .venv/bin/python benches/ort_latency.py --pare target/release/pare [--only ppocr_det ...] [--json FILE]
"""

import argparse
import functools
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "oracle"))
sys.path.insert(0, str(ROOT / "benches"))
import optimize as oracle  # noqa: E402  (the oracle's variant builder and seeded input)
from hand_fuse import hand_fuse  # noqa: E402

HAND_FUSED = "hand-fused"
COMPARED = ("original", "onnxsim", "onnxoptimizer", HAND_FUSED)
CONTROL = "original (second session)"
LEVELS = {"off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "on": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
# Model name -> benches/ocr_accuracy.py's kind, and how many rendered inputs the exactness check feeds.
OCR_KINDS = {"ppocr_rec": ("rec", 4), "ppocr_cls": ("cls", 4), "ppocr_det": ("det", 2), "orientation": ("orient", 2)}


def open_session(path, threads):
    """A session of the model at `path` (or of its serialized bytes) as deployed."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def timed_rounds(sessions, feed, rounds, batch, seed):
    """Per variant, one mean run time (seconds) per round; variants shuffled every round."""
    order = list(sessions)
    shuffle = random.Random(seed)
    times = {name: [] for name in sessions}
    for _ in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            run = sessions[name].run
            start = time.perf_counter()
            for _ in range(batch):
                run(None, feed)
            times[name].append((time.perf_counter() - start) / batch)
    return {name: np.array(values) for name, values in times.items()}


def median_interval(values, seed, resamples=2000):
    """Median of `values` and its 95% percentile-bootstrap confidence interval."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    medians = np.median(values[picks], axis=1)
    return float(np.median(values)), float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))


def verdict(low, high, margin):
    if high < 1.0:
        return "faster"
    if low > 1.0 + margin:
        return "slower"
    return "same"


@functools.cache
def ocr_bench():
    """benches/ocr_accuracy.py (renderers, preprocessing, cpu_flags), or None when its
    packages (opencv, pyclipper) are missing; imported late, since it imports this file."""
    try:
        import ocr_accuracy
    except (ImportError, SystemExit):
        return None
    return ocr_accuracy


def cpu_flags():
    bench = ocr_bench()
    return bench.cpu_flags() if bench else "unknown (benches/ocr_accuracy.py cannot be imported)"


def rendered_inputs(kind, count, seed):
    """`count` rendered lines (rec, cls) or pages (det, orient) as the OCR packages feed them,
    or None (with a message) when benches/ocr_accuracy.py or its fonts are missing."""
    bench = ocr_bench()
    try:
        fonts = [bench.font_dir(None) / name for name in bench.FONT_FILES] if bench else None
    except SystemExit:
        fonts = None
    if fonts is None:
        print(f"  no rendered inputs (benches/ocr_accuracy.py, opencv, pyclipper or the DejaVu fonts "
              f"missing): {kind} is checked on the seeded input")
        return None
    items = (bench.make_lines(count, seed, fonts) if kind in ("rec", "cls")
             else bench.make_pages(count, seed, fonts))
    return bench.model_inputs(kind, items, types.SimpleNamespace(rec_min_width=0))


def fixed_inputs(model, fixed):
    """A copy of `model` whose graph inputs named in `fixed` declare those shapes."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        if value.name in fixed:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for size in fixed[value.name]:
                dims.add().dim_value = size
    return copy


def pare_open_dims(pare, source, feeds, work, name, tolerance):
    """pare's output without --input-shape (open dims stay open), verified by pare on `feeds`
    (one-input dicts, given as --calib in ONNX's test_data_set layout) at --max-rel-l2
    `tolerance`; raises oracle.VariantError when pare fails."""
    calib = work / f"{name}.calib"
    for index, feed in enumerate(feeds):
        case = calib / f"test_data_set_{index}"
        case.mkdir(parents=True, exist_ok=True)
        (input_name, value), = feed.items()
        (case / "input_0.pb").write_bytes(numpy_helper.from_array(value, input_name).SerializeToString())
    output = work / f"{name}.pare-open.onnx"
    run = subprocess.run([pare, "optimize", str(source), "-o", str(output), "--calib", str(calib),
                          "--max-rel-l2", str(tolerance)], capture_output=True, text=True)
    if run.returncode != 0:
        raise oracle.VariantError(f"pare optimize (open dims) exited {run.returncode}: {run.stderr.strip()}")
    return output


def fits(declared, shape):
    """Whether an array of `shape` fits the `declared` input shape (open dims match any size)."""
    return len(declared) == len(shape) and all(not isinstance(d, int) or d == s for d, s in zip(declared, shape))


def declared_shapes(path):
    return {value.name: value.shape for value in oracle.session(path, LEVELS["off"]).get_inputs()}


def exactness(name, source, candidates, feeds, what, tolerance):
    """Per candidate (label -> path), the worst relative L2 to the original per output and
    ORT setting over `feeds` (dicts), against max(tolerance, 1.5 x ORT's own off-vs-on)."""
    def run_all(path, level):
        session = oracle.session(path, level)
        return [session.run(None, feed) for feed in feeds]

    output_names = [value.name for value in oracle.session(source, LEVELS["off"]).get_outputs()]
    reference = {label: run_all(source, level) for label, level in LEVELS.items()}
    floor = [max(oracle.rel_l2(a[k], b[k]) for a, b in zip(reference["off"], reference["on"]))
             for k in range(len(output_names))]
    shapes = sorted({"x".join(map(str, value.shape)) for feed in feeds for value in feed.values()})
    results = []
    for label, path in candidates.items():
        declared = declared_shapes(path)
        if not all(fits(declared[name], value.shape) for feed in feeds for name, value in feed.items()):
            print(f"  exact {label:16} not run: its input shapes {declared} do not fit the {what}")
            continue
        runs = {setting: run_all(path, level) for setting, level in LEVELS.items()}
        outputs = []
        for k, output in enumerate(output_names):
            worst = {setting: max(oracle.rel_l2(a[k], b[k]) for a, b in zip(reference[setting], runs[setting]))
                     for setting in LEVELS}
            bound = max(tolerance, 1.5 * floor[k])
            outputs.append({"output": output, **worst, "ort_own": floor[k], "bound": bound,
                            "ok": max(worst.values()) <= bound})
        results.append({"model": name, "variant": label, "inputs": what, "shapes": shapes, "outputs": outputs})
        for row in outputs:
            print(f"  exact {label:16} {what} ({', '.join(shapes)}): {row['output']} rel L2 off {row['off']:.1e} "
                  f"on {row['on']:.1e}, bound {row['bound']:.1e} (ORT's own {row['ort_own']:.1e}) "
                  f"{'ok' if row['ok'] else 'FAIL'}", flush=True)
    return results


def check_exactness(name, made, work, args):
    """The exactness rows of one model (rendered inputs for the OCR models, the seeded one
    otherwise) and its failures."""
    source = made.paths["original"]
    candidates, failures = {"pare": made.paths["pare"]}, []
    kind, count = OCR_KINDS.get(name, (None, 0))
    rendered = rendered_inputs(kind, count, args.render_seed) if kind else None
    if rendered is None:
        feeds, what = [oracle.seeded_feed(source, made.fixed)], "seeded input"
    else:
        (input_name, declared), = declared_shapes(source).items()
        feeds = [{input_name: feed} for feed in rendered]
        what = f"{len(rendered)} rendered {'lines' if kind in ('rec', 'cls') else 'pages'}"
        if not all(isinstance(d, int) for d in declared):
            try:
                candidates["pare (open dims)"] = pare_open_dims(args.pare, source, feeds, work, name, args.tolerance)
            except oracle.VariantError as error:
                print(f"  FAIL {error}")
                failures.append(f"{name}: {error}")
    results = exactness(name, source, candidates, feeds, what, args.tolerance)
    failures += [f"{name}: {r['variant']} off by rel L2 {max(o['off'], o['on']):.1e} on {r['inputs']} "
                 f"(output {o['output']}, bound {o['bound']:.1e})"
                 for r in results for o in r["outputs"] if not o["ok"]]
    return results, failures


def time_variants(name, paths, feed, args):
    """Median ms per variant, pare / other ratios with verdicts, hand-fused / original and the A/A control."""
    sessions = {tool: open_session(path, args.threads) for tool, path in paths.items()}
    sessions[CONTROL] = open_session(paths["original"], args.threads)
    for session in sessions.values():
        for _ in range(3):
            session.run(None, feed)
    times = timed_rounds(sessions, feed, args.rounds, args.batch, args.seed)
    median_ms = {tool: float(np.median(values)) * 1e3 for tool, values in times.items()}
    control = median_interval(times[CONTROL] / times["original"], args.seed)
    margin = max(args.margin, control[2] - 1.0, 1.0 - control[1])

    def ratio(numerator, denominator, judged=True):
        middle, low, high = median_interval(times[numerator] / times[denominator], args.seed)
        return {"median": middle, "low": low, "high": high, "verdict": verdict(low, high, margin) if judged else None}

    pare_over = {tool: ratio("pare", tool) for tool in COMPARED if tool in paths}
    over_original = {tool: ratio(tool, "original", judged=False) for tool in ("pare", HAND_FUSED) if tool in paths}
    return {"model": name, "timing_shape": {k: list(v.shape) for k, v in feed.items()}, "median_ms": median_ms,
            "pare_over": pare_over, "over_original": over_original, "margin": margin,
            "control": {"median": control[0], "low": control[1], "high": control[2]}}


def interval(r):
    return f"{r['median']:.3f} [{r['low']:.3f},{r['high']:.3f}]" + (f" {r['verdict']}" if r.get("verdict") else "")


def report(row):
    print("  median ms  " + "  ".join(f"{tool} {ms:.2f}" for tool, ms in row["median_ms"].items() if tool != CONTROL))
    print("  pare /     " + "  ".join(f"{tool} {interval(r)}" for tool, r in row["pare_over"].items()))
    print("  / original " + "  ".join(f"{tool} {interval(r)}" for tool, r in row["over_original"].items())
          + f"  | A/A {interval(row['control'])}, margin {row['margin']:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pare", required=True)
    parser.add_argument("--models", default=str(ROOT / ".cache/models"))
    parser.add_argument("--only", nargs="*", default=oracle.MODELS, help="a subset of the models")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=3, help="runs per variant per round")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="an interval must clear 1 + margin to count as slower")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-5,
                        help="largest relative L2 of pare's output to the original (exactness check)")
    parser.add_argument("--render-seed", type=int, default=1, help="seed of the rendered OCR inputs")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()

    started = time.perf_counter()
    manifest_path = Path(args.models) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": []}
    by_name = {m["name"]: m for m in manifest["models"]}
    work = Path(tempfile.mkdtemp(prefix="pare-latency-"))
    rows, checks, failures, skipped = [], [], [], []
    flags = cpu_flags()
    print(f"CPU flags: {flags}")
    print(f"ONNX Runtime {ort.__version__}, ORT_ENABLE_ALL, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.batch} runs, variants shuffled per round")
    for name in args.only:
        entry = by_name.get(name)
        if entry is None or not (Path(args.models) / entry["path"]).is_file():
            print(f"{name}: skipped, not among the fetched models in {args.models} (scripts/fetch_models.py)")
            skipped.append(name)
            continue
        print(name, flush=True)
        try:
            made = oracle.make_variants(args.pare, Path(args.models), entry, work)
        except oracle.VariantError as error:
            print(f"  FAIL {error}")
            failures.append(f"{name}: {error}")
            continue
        results, wrong = check_exactness(name, made, work, args)
        checks.extend(results)
        failures.extend(wrong)
        paths = dict(made.paths)
        fused, count = hand_fuse(made.original)
        if count:
            paths[HAND_FUSED] = work / f"{name}.hand-fused.onnx"
            onnx.save(fixed_inputs(fused, made.fixed), str(paths[HAND_FUSED]))
            print(f"  hand-fused: {count} HardSwish, input shapes fixed as pare's")
        feed = oracle.seeded_feed(made.paths["original"], made.fixed)
        row = time_variants(name, paths, feed, args)
        row["hand_fused_hardswish"] = count
        rows.append(row)
        report(row)
        failures.extend(f"{name}: pare / {tool} = {interval(r)}" for tool, r in row["pare_over"].items()
                        if r["verdict"] == "slower")
    shutil.rmtree(work, ignore_errors=True)  # the variants of all models take about 2 GB
    seconds = time.perf_counter() - started
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        Path(args.json).write_text(json.dumps({"settings": settings, "onnxruntime": ort.__version__,
                                               "cpu_flags": flags, "seconds": seconds, "models": rows,
                                               "exactness": checks, "skipped": skipped,
                                               "failures": failures}, indent=1))
    for line in failures:
        print("FAIL", line)
    print(f"ort latency: {len(rows)} models in {seconds:.0f} s ({len(skipped)} skipped), {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
