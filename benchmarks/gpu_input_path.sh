#!/usr/bin/env bash
# One command on a GPU machine: the ImageNet-scale JPEG input path through the engine's own
# builders (data.decode=pil and cpu per CPU core; data.decode=gpu: nvJPEG decode + on-device
# augmentation, images/s on the GPU) as JSON on stdout. Without CUDA it still prints the CPU rows
# and says why the gpu path was skipped.
# Settings: IMAGES (default 1024), BATCH (256, the reference's batch), ROUNDS (3),
# RECIPES (moco_v2,supervised), VIEWS (1; 2 = MoCo/KCL query and key); PYTHON overrides the
# interpreter (default: .venv/bin/python if present, else python).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" "$here/bench_decode.py" \
    --images "${IMAGES:-1024}" --batch "${BATCH:-256}" --rounds "${ROUNDS:-3}" \
    --recipes "${RECIPES:-moco_v2,supervised}" --views "${VIEWS:-1}"
