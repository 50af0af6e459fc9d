"""How far N ``torchrun`` processes end from one: weights after a few steps of a real ResNet.

For each method (``sl``, ``moco_v2``, ``kcl`` and KCL with ``method.selection=queue_order``) the
same global batch trains ``--steps`` optimiser
steps of ``balfeat pretrain`` on tiny synthetic data (16-px RGB, the method's augmentation on the
on-device path, resnet8 with BatchNorm, CPU, gloo, one thread per process):

- once in one process (MoCo/KCL with ``method.bn_splits`` = N, so the key encoder's one-process
  shuffle-BN groups are the N ranks' slices);
- under ``torchrun --nproc_per_node N``, with ``run.sync_bn=false`` (per-rank BatchNorm, the
  reference's choice) and ``run.sync_bn=true`` (the trained encoder's BatchNorm over the global
  batch).

The JSON gives, per method and ``sync_bn``, the largest absolute difference between the
N-process and the one-process checkpoint of the trained parameters (``params``), of the trained
encoder's BatchNorm running statistics (``bn_stats``), of the momentum key encoder's
(``bn_stats_k``: per rank under shuffle-BN by design) and of the queue (``queue``).

Usage: ``.venv/bin/python benchmarks/bench_world_size.py [--steps 9 --nproc 2 --methods sl kcl]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

#: name -> (method.name, extra overrides); kcl_queue_order: KCL without random positive choice
METHODS: dict[str, tuple[str, list[str]]] = {
    "sl": ("sl", []),
    "moco_v2": ("moco_v2", []),
    "kcl": ("kcl", []),
    "kcl_queue_order": ("kcl", ["method.selection=queue_order"]),
}


def overrides(method: str, steps: int, batch: int = 16) -> list[str]:
    """The tiny run: synthetic 16-px RGB images, resnet8, the method's recipe on the device path."""
    args = [
        "data.dataset=synthetic",
        "data.synthetic_size=64",
        "data.num_classes=4",
        "data.image_size=16",
        "data.channels=3",
        "data.loader=device",
        "data.augmentation=" + ("supervised" if method == "sl" else "moco_v2"),
        "model.backbone=resnet8",
        f"method.name={method}",
        f"optim.batch_size={batch}",
        "optim.epochs=3",
        "optim.base_lr=0.4",
        f"run.max_steps={steps}",
        "run.device=cpu",
        "run.progress=false",
        "run.log_every=1",
        "data.num_workers=0",
    ]
    if method != "sl":
        args += ["method.K=32", "method.dim=16"]
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pretrain(out: Path, args: list[str], nproc: int, timeout: float = 600.0) -> dict[str, Any]:
    """``balfeat pretrain`` into ``out`` in one process (``nproc`` 1) or under torchrun; the
    model state of its ``last.pth``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launch = [sys.executable]
    if nproc > 1:
        launch += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        launch += ["--master_port", str(_free_port())]
    cmd = [*launch, "-m", "balfeat", "pretrain", "--quiet", *args, f"run.output_dir={out}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    state = torch.load(out / "last.pth", map_location="cpu", weights_only=False)
    return {"model": state["model"], "world_size": state["world_size"], "step": state["step"]}


def differences(one: dict[str, torch.Tensor], many: dict[str, torch.Tensor]) -> dict[str, float]:
    """Largest absolute differences by group (see the module docstring); the momentum key
    encoder's parameters count as ``params``."""
    out = {"params": 0.0, "bn_stats": 0.0, "bn_stats_k": 0.0, "queue": 0.0}
    for key, a in one.items():
        b = many[key]
        if not a.is_floating_point():
            continue
        gap = float((a - b).abs().max()) if a.numel() else 0.0
        if "running_" in key:
            group = "bn_stats_k" if key.split(".")[0].endswith("_k") else "bn_stats"
        elif "queue" in key:
            group = "queue"
        else:
            group = "params"
        out[group] = max(out[group], gap)
    return out


def measure(name: str, steps: int, nproc: int, work: Path) -> dict[str, Any]:
    """One method: the one-process run and the N-process runs without and with sync_bn."""
    method, extra = METHODS[name]
    args = [*overrides(method, steps), *extra]
    splits = [] if method == "sl" else [f"method.bn_splits={nproc}"]
    one = pretrain(work / f"{name}-1", [*args, *splits], 1)
    result: dict[str, Any] = {"steps": one["step"]}
    for sync in (False, True):
        many = pretrain(work / f"{name}-{nproc}-{sync}", [*args, f"run.sync_bn={sync}"], nproc)
        assert many["world_size"] == nproc and many["step"] == one["step"]
        result[f"sync_bn={str(sync).lower()}"] = differences(one["model"], many["model"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=9, help="optimiser steps (default 9)")
    parser.add_argument("--nproc", type=int, default=2, help="torchrun processes (default 2)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            "nproc": opts.nproc,
            "torch": torch.__version__,
            "methods": {m: measure(m, opts.steps, opts.nproc, Path(tmp)) for m in opts.methods},
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
