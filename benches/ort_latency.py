"""ONNX Runtime latency of `pare optimize` beside onnxsim and onnxoptimizer, measured so that
run-to-run noise on a shared machine cannot decide the comparison.

For every model: build the four variants (original, pare, onnxsim, onnxoptimizer) exactly
as tests/oracle/optimize.py does, open one ONNX Runtime session per variant (ORT_ENABLE_ALL,
one intra-op thread, CPU), warm each up, then run `--rounds` rounds. In each round the
variants are timed back to back in a freshly shuffled order, `--batch` runs each (the
round's figure is the mean of the batch). Drift of the machine between rounds hits all
variants of a round alike, so the paired per-round ratio pare / tool is the statistic:
its median over rounds with a 95% bootstrap confidence interval (seeded).

Two sessions of one and the same file differ too (where the runtime's buffers land in
memory), so a control is timed alongside: a second session of the original model. Its
ratio to the first (an A/A comparison) shows the placement effect, and the verdict per
comparison is "faster" when pare's interval lies below 1, "slower" when it lies above
1 + margin, where margin is the larger of `--margin` and how far the control's interval
reaches from 1 (either side), and "same" otherwise. Exit status 1 when pare is "slower" than any tool
(or than the original) on any model.

    .venv/bin/python benches/ort_latency.py --pare target/release/pare [--only ppocr_det ...]
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "oracle"))
import optimize as oracle  # noqa: E402  (the oracle's variant builder and seeded input)

COMPARED = ("original", "onnxsim", "onnxoptimizer")
CONTROL = "original (second session)"


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
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()

    manifest = json.loads((Path(args.models) / "manifest.json").read_text())
    by_name = {m["name"]: m for m in manifest["models"]}
    work = Path(tempfile.mkdtemp(prefix="pare-latency-"))
    rows, slower = [], []
    print(f"ONNX Runtime {ort.__version__}, ORT_ENABLE_ALL, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.batch} runs, variants shuffled per round")
    for name in args.only:
        made = oracle.make_variants(args.pare, Path(args.models), by_name[name], work)
        feed = oracle.seeded_feed(made.paths["original"], made.fixed)
        sessions = {tool: open_session(made.paths[tool], args.threads) for tool in oracle.TOOLS}
        sessions[CONTROL] = open_session(made.paths["original"], args.threads)
        for session in sessions.values():
            for _ in range(3):
                session.run(None, feed)
        times = timed_rounds(sessions, feed, args.rounds, args.batch, args.seed)
        median_ms = {tool: float(np.median(values)) * 1e3 for tool, values in times.items()}
        control = median_interval(times[CONTROL] / times["original"], args.seed)
        margin = max(args.margin, control[2] - 1.0, 1.0 - control[1])
        ratios = {}
        for tool in COMPARED:
            middle, low, high = median_interval(times["pare"] / times[tool], args.seed)
            ratios[tool] = {"median": middle, "low": low, "high": high, "verdict": verdict(low, high, margin)}
            if ratios[tool]["verdict"] == "slower":
                slower.append(f"{name}: pare / {tool} = {middle:.3f} [{low:.3f}, {high:.3f}]")
        rows.append({"model": name, "median_ms": median_ms, "pare_over": ratios,
                     "control": {"median": control[0], "low": control[1], "high": control[2]}})
        print(f"{name:13} ms orig {median_ms['original']:7.2f} pare {median_ms['pare']:7.2f} "
              f"onnxsim {median_ms['onnxsim']:7.2f} onnxopt {median_ms['onnxoptimizer']:7.2f} | pare/ "
              + "  ".join(f"{tool} {r['median']:.3f} [{r['low']:.3f},{r['high']:.3f}] {r['verdict']}"
                          for tool, r in ratios.items())
              + f" | A/A {control[0]:.3f} [{control[1]:.3f},{control[2]:.3f}]", flush=True)
        del sessions
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    for line in slower:
        print("SLOWER", line)
    print(f"ort latency: {len(rows)} models, pare slower in {len(slower)} comparisons")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
