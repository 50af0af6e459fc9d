#!/usr/bin/env bash
# Set up balfeat on a fresh Debian/Ubuntu machine: a project virtual environment (.venv) with pinned
# dependencies (constraints.txt) and balfeat installed in editable mode. Safe to run again: it only
# installs what is missing. Needs python3, pip and apt; uses sudo for apt when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_lists_empty() { [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial -e auxfiles)" ]; }

# Debian splits venv/ensurepip out of python3 itself.
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: python3 has no venv module; installing python3-venv with apt" >&2
  apt_lists_empty && as_root apt-get update -q
  as_root apt-get install -y -q python3-venv
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi

# torch and torchvision come from PyPI as a matching pair (see DEVELOPERS.md): the machine's local
# CPU-only torch wheel has no torchvision build that imports against it.
echo "setup: installing pinned dependencies into .venv (first time: ~5.5 GB, about a minute)" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 \
  | grep -v -e 'is ignored: it is neither a file nor a directory' >&2 || true
.venv/bin/python -c 'import torch, torchvision, balfeat' || { echo "setup: install failed" >&2; exit 1; }

# Fashion-MNIST (the embedded data) comes from Debian's package dataset-fashion-mnist. balfeat finds
# it installed, or downloads the .deb with `apt-get download` (no root) into its cache; that needs
# apt's package lists, which are empty on a fresh machine until `apt-get update` has run once.
if [ ! -d /usr/share/datasets/fashion-mnist ] && apt_lists_empty; then
  echo "setup: apt package lists are empty; running apt-get update so Fashion-MNIST can be fetched" >&2
  as_root apt-get update -q >/dev/null || echo "setup: apt-get update failed; 'balfeat data fetch' may not find the package" >&2
fi
# Fetch it now (a few seconds; idempotent), so the demo and the tests that read the real data
# (the README's library example among them) find it instead of skipping.
.venv/bin/balfeat data fetch fashion-mnist >/dev/null \
  || echo "setup: Fashion-MNIST not fetched; the demo will try again, tests that need it skip" >&2
echo "setup: done. Activate with: source .venv/bin/activate" >&2
