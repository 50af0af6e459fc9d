#!/usr/bin/env bash
# The GPU check in one call: bash benchmarks/gpu_check.sh [OUT.json] [gpu_check.py options]
# Runs the one-rank torchrun part (NCCL; NPROC=2 for two GPUs), then every other part of
# benchmarks/gpu_check.py, and writes one JSON (default docs/results/gpu/gpu_check.json; the path
# is printed). Without CUDA it runs the tiny CPU fallback (gloo). Exit status 1 when any part
# errors. BALFEAT_REFERENCE=/path/to/BalFeat adds the reference KCL step (never downloaded);
# PYTHON overrides the interpreter (default: .venv/bin/python if present, else python).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python; fi
fi
out="${1:-$root/docs/results/gpu/gpu_check.json}"
[ $# -gt 0 ] && shift
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "gpu_check: torchrun part (nproc_per_node ${NPROC:-1})" >&2
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "${NPROC:-1}" \
    "$here/gpu_check.py" --torchrun-part "$tmp/torchrun.json" >"$tmp/torchrun.log" 2>&1
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "gpu_check: torchrun exited with $rc; its log ends:" >&2
    tail -n 20 "$tmp/torchrun.log" >&2
fi
"$PYTHON" "$here/gpu_check.py" --out "$out" --torchrun-result "$tmp/torchrun.json" \
    --torchrun-rc "$rc" "$@"
status=$?
echo "gpu_check: JSON at $out (exit status $status)"
exit "$status"
