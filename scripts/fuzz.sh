#!/usr/bin/env bash
# Smoke-fuzzes pare's readers: scripts/fuzz.sh [SECONDS] builds every target
# of fuzz/ with cargo-fuzz on stable Rust (installing cargo-fuzz if missing)
# and runs each for SECONDS (default 30) over a temporary copy of its
# committed corpus, one at a time in one process each (no -jobs: libFuzzer
# would then fork and log to files), with -rss_limit_mb=2048. Exits non-zero on
# the first crash, leaving the reproducer in fuzz/artifacts/<target>/.
# See fuzz/README.md for the targets and for long runs.
set -euo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS]  (a positive whole number, default 30)" >&2
    exit 2
fi
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes a few -Z flags; RUSTC_BOOTSTRAP lets stable rustc take
# them. -s none: no sanitizer (those need nightly); the fuzz targets' own
# allocator bounds single allocations instead (pare::fuzz_targets).
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    cp -r "corpus/$target" "$scratch/$target"
    echo "== fuzzing $target for ${seconds}s"
    if ! cargo fuzz run -s none "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1; then
        echo "fuzz target $target crashed; the reproducer is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "all fuzz targets ran ${seconds}s each without a crash"
