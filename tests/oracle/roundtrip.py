#!/usr/bin/env python3
"""ONNX Runtime oracle: pare's load+save must change nothing a runtime can observe.

For every golden model (golden/**/model.onnx with a test_data_set_0 beside it) and every
model in the fetched-model cache manifest (scripts/fetch_models.py), this script runs

    PARE optimize IN -o OUT --passes none

and checks
  (a) onnx.checker.check_model(OUT, full_check=True) passes wherever it passes on IN;
  (b) OUT loads in ONNX Runtime (CPU);
  (c) ORT outputs of OUT are bit-identical to those of IN on test_data_set_0 (same names,
      order, dtype, shape; NaN == NaN), both with ORT_DISABLE_ALL and ORT_ENABLE_ALL;
  (d) IN's ORT_DISABLE_ALL outputs match the stored output_N.pb (rtol = atol = 1e-5);
  (e) unless --no-inspect: `PARE inspect IN --json` parses and its "params" equals the
      number of numeric weight elements that feed a node (tests/oracle/params.py).

One line per model (PASS/FAIL with reasons), then exactly `N passed, N failed`.
Exit status 1 if anything failed.

Usage:
  python tests/oracle/roundtrip.py --pare target/release/pare [--models golden,zoo,ocr]
                                   [--work DIR] [--cache DIR] [--no-inspect] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from params import count_params  # noqa: E402  (the definition `pare inspect --json` must agree with)

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("golden", "zoo", "ocr")
# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


class Case:
    def __init__(self, group: str, name: str, model: Path):
        self.group, self.name, self.model = group, name, model
        self.test_dir = model.parent / "test_data_set_0"

    @property
    def label(self) -> str:
        return f"{self.group}/{self.name}"


def read_tensor(path: Path) -> TensorProto:
    t = TensorProto()
    t.ParseFromString(path.read_bytes())
    return t


def numbered(test_dir: Path, prefix: str) -> list[Path]:
    files = list(test_dir.glob(f"{prefix}_*.pb"))
    return sorted(files, key=lambda p: int(p.stem.split("_")[-1]))


def session(path: Path, level, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, feeds: dict) -> list[tuple[str, np.ndarray]]:
    names = [o.name for o in sess.get_outputs()]
    return list(zip(names, sess.run(names, feeds)))


def check_ok(path: Path) -> str | None:
    """None if the full checker passes, else the first line of its complaint."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return None
    except Exception as e:  # noqa: BLE001 - any checker failure is a verdict, not a crash
        return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def describe_diff(a: np.ndarray, b: np.ndarray) -> str:
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} vs {b.dtype}"
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    if a.dtype.kind in "fiu":
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        d = d[np.isfinite(d)]
        return f"max |diff| {d.max() if d.size else float('nan'):.3g}"
    return "values differ"


def same_outputs(ref, got, what: str) -> list[str]:
    errs = []
    if [n for n, _ in ref] != [n for n, _ in got]:
        return [f"{what}: output names {[n for n, _ in got]} != {[n for n, _ in ref]}"]
    for (name, a), (_, b) in zip(ref, got):
        if not identical(a, b):
            errs.append(f"{what}: output {name} not bit-identical ({describe_diff(a, b)})")
    return errs


def tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:400]


# --------------------------------------------------------------------------------------
# the check of one model
# --------------------------------------------------------------------------------------


def check_case(case: Case, pare: list[str], work: Path, args) -> list[str]:
    errs: list[str] = []
    if not case.model.exists():
        return [f"missing {case.model}"]
    if not case.test_dir.is_dir():
        return [f"missing {case.test_dir}"]

    in_model = onnx.load(str(case.model), load_external_data=False)
    graph_inputs = [i.name for i in in_model.graph.input
                    if i.name not in {t.name for t in in_model.graph.initializer}]
    feeds = {}
    for i, p in enumerate(numbered(case.test_dir, "input")):
        t = read_tensor(p)
        feeds[t.name or graph_inputs[i]] = numpy_helper.to_array(t)
    expected = [numpy_helper.to_array(read_tensor(p)) for p in numbered(case.test_dir, "output")]

    # (e) inspect
    if not args.no_inspect:
        try:
            r = subprocess.run(pare + ["inspect", str(case.model), "--json"], capture_output=True,
                               text=True, timeout=args.timeout)
            if r.returncode != 0:
                errs.append(f"inspect exit {r.returncode}: {tail(r.stderr)}")
            else:
                report = json.loads(r.stdout)
                want = count_params(in_model)
                got = report.get("params") if isinstance(report, dict) else None
                if got != want:
                    errs.append(f"inspect params {got!r} != {want}")
        except json.JSONDecodeError as e:
            errs.append(f"inspect --json output is not JSON ({e})")
        except subprocess.TimeoutExpired:
            errs.append(f"inspect timed out after {args.timeout}s")

    # optimize --passes none
    out_dir = work / case.group / case.name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    out_path = out_dir / "model.onnx"
    try:
        r = subprocess.run(pare + ["optimize", str(case.model), "-o", str(out_path), "--passes", "none"],
                           capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return errs + [f"optimize timed out after {args.timeout}s"]
    if r.returncode != 0:
        return errs + [f"optimize exit {r.returncode}: {tail(r.stderr or r.stdout)}"]
    if not out_path.exists():
        return errs + ["optimize wrote no output file"]

    # (a) checker
    in_check = check_ok(case.model)
    if in_check is None:
        out_check = check_ok(out_path)
        if out_check is not None:
            errs.append(f"checker fails on OUT (passes on IN): {out_check}")

    L = ort.GraphOptimizationLevel
    results = {}
    for level_name, level in (("ORT_DISABLE_ALL", L.ORT_DISABLE_ALL), ("ORT_ENABLE_ALL", L.ORT_ENABLE_ALL)):
        try:
            ref = run(session(case.model, level, args.threads), feeds)
        except Exception as e:  # noqa: BLE001
            errs.append(f"IN does not run in ORT ({level_name}): {tail(str(e), 1)}")
            continue
        results[level_name] = ref
        try:
            got = run(session(out_path, level, args.threads), feeds)   # (b)
        except Exception as e:  # noqa: BLE001
            errs.append(f"OUT does not load/run in ORT ({level_name}): {tail(str(e), 1)}")
            continue
        errs.extend(same_outputs(ref, got, level_name))                  # (c)

    # (d) stored golden outputs
    ref = results.get("ORT_DISABLE_ALL")
    if ref is not None:
        if len(expected) != len(ref):
            errs.append(f"{len(expected)} stored outputs, model has {len(ref)}")
        for (name, a), e in zip(ref, expected):
            if a.dtype != e.dtype or a.shape != e.shape:
                errs.append(f"stored output {name}: {e.dtype}{list(e.shape)} vs ORT {a.dtype}{list(a.shape)}")
            elif a.dtype.kind in "fc":
                if not np.allclose(a, e, rtol=1e-5, atol=1e-5, equal_nan=True):
                    errs.append(f"stored output {name} differs from ORT ({describe_diff(a, e)})")
            elif not np.array_equal(a, e):
                errs.append(f"stored output {name} differs from ORT")
    if not args.keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return errs


# --------------------------------------------------------------------------------------
# discovery and main
# --------------------------------------------------------------------------------------


def golden_cases() -> list[Case]:
    root = REPO / "golden"
    cases = []
    for model in sorted(root.rglob("model.onnx")):
        if (model.parent / "test_data_set_0").is_dir():
            cases.append(Case("golden", model.parent.relative_to(root).as_posix(), model))
    return cases


def cache_cases(cache: Path, group: str) -> list[Case] | None:
    manifest = cache / "manifest.json"
    if not manifest.exists():
        return None
    entries = json.loads(manifest.read_text())["models"]
    return [Case(group, e["name"], cache / e["path"]) for e in entries if e["group"] == group]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ONNX Runtime oracle for pare's lossless load+save.")
    ap.add_argument("--pare", required=True,
                    help="pare binary, or any command (split like a shell would), e.g. 'cargo run -q --'")
    ap.add_argument("--models", default=None,
                    help="comma-separated groups out of golden,zoo,ocr (default: all; zoo/ocr are "
                         "skipped with a note when the cache has no manifest)")
    ap.add_argument("--work", type=Path, help="work dir for OUT models (default: a temp dir, removed)")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("PARE_MODELS_DIR", REPO / ".cache" / "models")),
                    help="fetched-model cache (default $PARE_MODELS_DIR or .cache/models)")
    ap.add_argument("--no-inspect", action="store_true", help="skip the `pare inspect --json` check")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds allowed per pare command")
    ap.add_argument("--keep", action="store_true", help="keep OUT models in the work dir")
    ap.add_argument("--only", help="comma-separated model names (e.g. resnet50,ppocr_rec)")
    args = ap.parse_args(argv)

    pare = shlex.split(args.pare)
    explicit = args.models is not None
    groups = [g.strip() for g in (args.models or ",".join(GROUPS)).split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        ap.error(f"unknown model group(s) {bad}; choose from {list(GROUPS)}")

    cases: list[Case] = []
    failed_setup = 0
    for g in groups:
        if g == "golden":
            cases += golden_cases()
            continue
        found = cache_cases(args.cache, g)
        if found is None:
            msg = f"no {args.cache / 'manifest.json'} (run scripts/fetch_models.py)"
            if explicit:
                print(f"FAIL {g}: {msg}")
                failed_setup += 1
            else:
                print(f"SKIP {g}: {msg}")
            continue
        cases += found
    if args.only:
        only = set(args.only.split(","))
        cases = [c for c in cases if c.name in only or c.label in only]

    work = args.work or Path(tempfile.mkdtemp(prefix="pare-oracle-"))
    work.mkdir(parents=True, exist_ok=True)
    passed, failed = 0, failed_setup
    try:
        for case in cases:
            t0 = time.monotonic()
            try:
                errs = check_case(case, pare, work, args)
            except Exception as e:  # noqa: BLE001 - report and go on with the next model
                errs = [f"oracle error: {type(e).__name__}: {tail(str(e), 1)}"]
            dt = time.monotonic() - t0
            if errs:
                failed += 1
                print(f"FAIL {case.label} ({dt:.1f}s): " + "; ".join(errs), flush=True)
            else:
                passed += 1
                print(f"PASS {case.label} ({dt:.1f}s)", flush=True)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
