#!/usr/bin/env bash
# Run every benchmarks/bench_*.py with its default (short) settings and write one JSON file per
# benchmark into the folder given as the first argument (created if missing); stderr goes to
# <name>.log beside it. Per-benchmark options come from BENCH_ARGS_<name>, e.g.
#   BENCH_ARGS_bench_train="--device cuda --batch-size 256 --amp bf16 --channels-last" \
#     benchmarks/run_all.sh results/
# PYTHON overrides the interpreter (default: .venv/bin/python if present, else python).
# Exit status: 0 if every benchmark succeeded, 1 otherwise (the others still run).
set -u
if [ $# -lt 1 ]; then
    echo "usage: $0 OUTPUT_DIR" >&2
    exit 2
fi
out="$1"
mkdir -p "$out"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python; fi
fi
status=0
for script in "$here"/bench_*.py; do
    name="$(basename "$script" .py)"
    var="BENCH_ARGS_${name}"
    # shellcheck disable=SC2086
    extra=${!var:-}
    echo "== $name $extra" >&2
    start=$(date +%s)
    # shellcheck disable=SC2086
    if "$PYTHON" "$script" $extra >"$out/$name.json.tmp" 2>"$out/$name.log"; then
        mv "$out/$name.json.tmp" "$out/$name.json"
        echo "   ok in $(( $(date +%s) - start )) s -> $out/$name.json" >&2
    else
        echo "   FAILED (see $out/$name.log)" >&2
        rm -f "$out/$name.json.tmp"
        status=1
    fi
done
exit $status
