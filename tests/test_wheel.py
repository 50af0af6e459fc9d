"""The built wheel installs into a clean virtual environment and runs (``.ci/wheel-check``; CI
also runs ``balfeat demo --tiny`` from it)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_trains(tmp_path: Path) -> None:
    run = tmp_path / "run" / "pretrain"
    cmd = [
        "bash", str(ROOT / ".ci" / "wheel-check"), "balfeat", "pretrain", "--quiet",
        "data.dataset=synthetic", "data.synthetic_size=16", "data.image_size=16",
        "model.backbone=resnet8", "method.name=sl", "optim.batch_size=8", "run.max_steps=1",
        "run.device=cpu", f"run.output_dir={run}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "WHEEL_CHECK_DIR": str(tmp_path)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    venv = tmp_path / "venv"
    assert f"balfeat imported from {venv}" in done.stdout  # the wheel, not the source tree
    assert (run / "last.pth").is_file()

    (wheel,) = (tmp_path / "dist").glob("balfeat-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = Parser().parsestr(zf.read(next(n for n in names if n.endswith("METADATA"))).decode())
        entry = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {"balfeat/py.typed", "balfeat/study/published_results.yaml"} <= names
    assert not any(n.startswith("tests/") for n in names)
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("torch>=") for r in requires)
    assert set(meta.get_all("Provides-Extra") or []) >= {"timm", "lightning", "tensorboard"}
    assert "balfeat = balfeat.cli.main:main" in entry
