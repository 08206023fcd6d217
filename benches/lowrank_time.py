"""Wall time and peak memory of `pare optimize --lowrank R` on ResNet-50 (zoo), against
issue 20's target: under 60 s on 2 cores, verification included.

Runs, one after the other (never side by side: the target is the wall time of one run):
- `--lowrank R` without samples: plain truncated SVD of every eligible layer;
- `--lowrank R --calib` the zoo's sample folder: data-aware factors (second moments of
  every layer's input measured on the sample, then the SVD of W·Σ^½).
Both verify the written model (pare's default). Prints the CPU flags beside the figures,
and exits 1 when a run fails or takes longer than the target.

    .venv/bin/python benches/lowrank_time.py --pare target/release/pare [--share 0.5] [--json FILE]
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / ".cache/models/zoo/resnet50/model.onnx"
TARGET_SECONDS = 60.0


def cpu_flags():
    found = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            found.update(re.findall(r"\b(avx2|avx512_vnni|avx_vnni)\b", line))
    return " ".join(sorted(found))


def run(pare, flags, output):
    """Wall seconds, the child's peak RSS in MiB (ru_maxrss of this run alone: the
    children's maximum so far, so runs go from the smallest expected), stderr tail."""
    started = time.perf_counter()
    done = subprocess.run(
        [pare, "optimize", str(MODEL), "-o", str(output), "--report", str(output) + ".json", *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "PARE_PYTHON": os.environ.get("PARE_PYTHON", sys.executable)},
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = {}
    if done.returncode == 0:
        report = json.loads(Path(str(output) + ".json").read_text())
    return done.returncode, seconds, peak, report, (done.stdout + done.stderr)[-2000:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pare", default=str(ROOT / "target/release/pare"))
    parser.add_argument("--share", default="0.5")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if not MODEL.exists():
        print(f"{MODEL} is missing: run scripts/fetch_models.py", file=sys.stderr)
        return 2
    print(f"CPU flags: {cpu_flags()}; {os.cpu_count()} cores; target < {TARGET_SECONDS:.0f} s per run")
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as scratch:
        for name, flags in [
            ("plain SVD", ["--lowrank", args.share]),
            ("data-aware", ["--lowrank", args.share, "--calib", str(MODEL.parent)]),
        ]:
            code, seconds, peak, report, tail = run(args.pare, flags, Path(scratch) / "out.onnx")
            layers = (report.get("engine") or {}).get("lowrank", {}).get("layers", [])
            macs = (report.get("before", {}).get("macs"), report.get("after", {}).get("macs"))
            ok = code == 0 and seconds < TARGET_SECONDS and len(layers) > 0
            failed |= not ok
            rows.append({"run": name, "flags": flags, "exit": code, "seconds": seconds, "peak_mib": peak,
                         "layers": len(layers), "macs": macs, "ok": ok})
            print(f"  {name:<11} exit {code}  {seconds:6.1f} s  peak RSS <= {peak:6.0f} MiB  "
                  f"{len(layers)} layers factorized  MACs {macs[0]} -> {macs[1]}  {'ok' if ok else 'FAILED'}")
            if code != 0:
                print(tail, file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_flags": cpu_flags(), "rows": rows}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
