"""End-to-end training throughput (images/s) of SL, MoCo v2 and KCL on 32x32 inputs.

Two data paths, each timed for every method on the same backbone (``resnet20`` by default):

- ``trainer``: the real :class:`balfeat.engine.trainer.Trainer` on the ``synthetic`` dataset
  (``ArrayDataset`` + PIL transforms through a ``DataLoader``; ``supervised`` augmentation for
  SL, ``moco_v2`` for MoCo/KCL), with ``run.log_every=1`` so that every step logs its own
  images/s (data loading included);
- ``device``: the same method/optimizer step (autocast, zero_grad, backward, SGD step,
  ``after_step``) fed by :class:`balfeat.data.device_data.DeviceArrayLoader` with
  :class:`~balfeat.data.device_data.DeviceAugment` on ``--device`` (augmentation on the device,
  no PIL, no worker processes).

Reported per path and method: the median images/s over the steps after ``--warmup`` steps (an
image counts once, whatever the number of views), and the ratios MoCo/SL, KCL/SL and KCL/MoCo
measured in the same run. KCL runs ``posk=6``, ``loss_type=v1``, random selection.

Results are under ``trainer_path`` and ``device_path``.

Run: ``python benchmarks/bench_train.py [--device auto] [--steps 8] [--batch-size 32]
[--amp bf16] [--channels-last] [--paths trainer device]``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from typing import Any

import torch

from balfeat.data.device_data import DeviceArrayLoader, DeviceAugment
from balfeat.device import default_device
from balfeat.engine import build
from balfeat.engine.config import load_config

METHODS = ("sl", "moco_v2", "kcl")


def make_config(method: str, args: argparse.Namespace, output_dir: str, steps: int) -> Any:
    """The config of one timed run of ``method`` (synthetic 32x32 RGB, 10 classes)."""
    return load_config(
        overrides=[
            "data.dataset=synthetic",
            "data.image_size=32",
            "data.channels=3",
            "data.num_classes=10",
            f"data.synthetic_size={args.batch_size * steps}",
            f"data.num_workers={args.workers}",
            f"data.augmentation={'supervised' if method == 'sl' else 'moco_v2'}",
            f"model.backbone={args.backbone}",
            "model.small_images=true",
            f"method.name={method}",
            f"method.K={args.K}",
            "optim.epochs=1",
            f"optim.batch_size={args.batch_size}",
            f"run.output_dir={output_dir}",
            f"run.device={args.device}",
            f"run.amp={args.amp}",
            f"run.channels_last={str(args.channels_last).lower()}",
            f"run.max_steps={steps}",
            "run.log_every=1",
            "run.progress=false",
            "run.keep_last=1",
        ]
    )


def run_trainer(method: str, args: argparse.Namespace) -> list[float]:
    """Per-step images/s of the real Trainer (after warm-up)."""
    from balfeat.engine.trainer import Trainer

    steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(method, args, tmp, steps)
        trainer = Trainer(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit()
        return [float(r["images_per_s"]) for r in trainer.history[args.warmup :]]


def run_device(method: str, args: argparse.Namespace, device: torch.device) -> list[float]:
    """Per-step images/s of the training step fed by DeviceArrayLoader (after warm-up)."""
    steps = args.warmup + args.steps
    cfg = make_config(method, args, "unused", steps)
    images, labels = build.synthetic_arrays(cfg.data.synthetic_size, 10, 32, 3, cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    model = build.build_method(cfg, 10).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = build.build_optimizer(cfg, model)
    recipe = "supervised" if method == "sl" else "moco_v2"
    loader = DeviceArrayLoader(
        images,
        labels,
        args.batch_size,
        transform=DeviceAugment.from_recipe(recipe, 32, 3),
        views=1 if method == "sl" else 2,
        device=device,
        seed=cfg.run.seed,
        drop_last=True,
    )
    amp = args.amp != "none" and device.type == "cuda"
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)
    rates: list[float] = []
    model.train()
    it = iter(loader)
    for step in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        x, y = next(it)
        if args.channels_last:
            x = (
                [v.contiguous(memory_format=torch.channels_last) for v in x]
                if isinstance(x, list)
                else x.contiguous(memory_format=torch.channels_last)
            )
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = model(x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        after_step = getattr(model, "after_step", None)
        if after_step is not None:
            after_step()
        float(loss.item())  # the trainer reads the loss every step too
        _sync(device)
        if step >= args.warmup:
            rates.append(args.batch_size / (time.perf_counter() - t0))
    return rates


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda[:N]")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method and path")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=32, help="use 256 on a GPU")
    parser.add_argument("--backbone", default="resnet20", help="resnet20 or resnet18 (small stem)")
    parser.add_argument("--K", type=int, default=4096, help="MoCo/KCL queue length")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="GPU only")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model/inputs")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (trainer)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--paths", nargs="+", default=["trainer", "device"],
                        choices=["trainer", "device"])  # fmt: skip
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a busy CPU torch's default thread pool spins and "
        "runs ~10x slower; use 0 for torch's default on a quiet machine)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("balfeat").setLevel(logging.WARNING)
    device = default_device(args.device)
    result: dict[str, Any] = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "backbone": args.backbone,
        "image_size": 32,
        "batch_size": args.batch_size,
        "K": args.K,
        "amp": args.amp if device.type == "cuda" else "none",
        "channels_last": args.channels_last,
        "timing": f"median per-step images/s over {args.steps} steps after {args.warmup} warm-up",
    }
    for path in args.paths:
        rates: dict[str, float] = {}
        for m in args.methods:
            samples = run_trainer(m, args) if path == "trainer" else run_device(m, args, device)
            rates[m] = statistics.median(samples)
        entry: dict[str, Any] = {"images_per_s": {m: round(v, 1) for m, v in rates.items()}}
        for a, b in (("moco_v2", "sl"), ("kcl", "sl"), ("kcl", "moco_v2")):
            if a in rates and b in rates:
                entry[f"ratio_{a}_over_{b}"] = round(rates[a] / rates[b], 3)
        result[f"{path}_path"] = entry
    if {"trainer", "device"} <= set(args.paths):
        dev, tr = result["device_path"]["images_per_s"], result["trainer_path"]["images_per_s"]
        result["ratio_device_over_trainer"] = {m: round(dev[m] / tr[m], 2) for m in args.methods}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
