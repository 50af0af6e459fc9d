#!/usr/bin/env bash
# One command on a GPU machine: the JPEG input path (PIL, torchvision CPU, nvJPEG GPU decode +
# on-device augmentation) as JSON on stdout. PYTHON overrides the interpreter.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" "$here/bench_decode.py" \
    --images "${IMAGES:-1000}" --batch "${BATCH:-128}" --rounds "${ROUNDS:-3}"
