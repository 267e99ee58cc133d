#!/usr/bin/env bash
# The GPU suite on a lent H200 in one command (benchmarks/README.md says how to prepare it).
#
#   benchmarks/h200.sh [gpu_suite.py options]    # writes $OUT/gpu_suite.json and $OUT/gpu_suite.log
#
# Installs the wheels in .whl/ (det's dependencies the device image lacks) when there are any,
# then runs every family, the backbones and the assigner checks with 10 timed runs after 3
# warm-ups, stopped after SUITE_TIMEOUT seconds (default 480); the JSON is rewritten after
# every family, so a run cut short keeps what it measured ("complete": false).
set -u
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
out=${OUT:-.}
timeout "${SUITE_TIMEOUT:-480}" "${PYTHON:-python3}" benchmarks/gpu_suite.py --iters 10 \
    --warmup 3 --out "$out/gpu_suite.json" "$@" 2>&1 | tee "$out/gpu_suite.log"
exit "${PIPESTATUS[0]}"
