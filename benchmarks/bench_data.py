"""Data pipeline throughput (images/s): PIL transforms vs batched on-device augmentation.

Cases, all producing two MoCo v2 views per image (``--recipe`` changes the recipe):

- ``jpeg224_workers{W}``: ``--jpegs`` synthetic 320x320 JPEGs (default 64; use 200+ on a quiet
  machine) written to a temp dir, read by
  ``SplitImageDataset`` + ``build_transform(recipe, 224, 3)`` + ``TwoViews`` through a
  ``DataLoader`` with ``num_workers`` 0 and 2 (the ImageNet path);
- ``array28_pil`` / ``array32_pil``: in-memory uint8 arrays shaped like Fashion-MNIST
  (28x28 gray) and CIFAR (32x32 RGB), ``ArrayDataset`` + the PIL transforms, ``num_workers`` 0;
- ``array28_device`` / ``array32_device``: the same arrays through ``DeviceArrayLoader`` +
  ``DeviceAugment.from_recipe`` on ``--device``.

Each array case is timed ``--repeats`` times over ``--images`` images after one warm-up batch
(JPEG cases: ``--jpeg-repeats`` passes over the files, minus a warm-up batch of 16); the median
is reported. Ratios device/PIL are taken in the same run. The main process uses one torch thread
by default (``--threads``), as DataLoader workers do.

Run: ``python benchmarks/bench_data.py [--device auto] [--images 512] [--repeats 3]``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from balfeat.data.datasets import ArrayDataset, SplitImageDataset
from balfeat.data.device_data import DeviceArrayLoader, DeviceAugment
from balfeat.data.splits import SplitEntry
from balfeat.data.transforms import TwoViews, build_transform
from balfeat.device import default_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loader(make: Any, images: int, repeats: int, device: torch.device) -> tuple[float, int]:
    """Median images/s of iterating ``make()`` until ``images`` images; returns (rate, n)."""
    rates = []
    n_seen = 0
    for _ in range(repeats):
        it: Iterable[Any] = make()
        iterator = iter(it)
        next(iterator)  # warm-up batch (worker start-up, first allocation)
        _sync(device)
        n_seen = 0
        t0 = time.perf_counter()
        for _views, labels in iterator:
            n_seen += len(labels)
            if n_seen >= images:
                break
        _sync(device)
        rates.append(n_seen / (time.perf_counter() - t0))
    return statistics.median(rates), n_seen


def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> list[SplitEntry]:
    """Write ``n`` random-ish ``size``-px JPEGs (smooth gradients + noise) and their entries."""
    rng = np.random.default_rng(seed)
    entries = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        base = np.stack(
            [np.sin(xx * rng.uniform(1, 9)), np.cos(yy * rng.uniform(1, 9)), xx * yy], axis=-1
        )
        img = (base * 100 + 120 + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8)
        cls = i % 10
        (folder / f"c{cls}").mkdir(exist_ok=True)
        path = f"c{cls}/img{i}.jpg"
        # stored larger than 224 so RandomResizedCrop has work, like ImageNet (~400x350)
        Image.fromarray(img).save(folder / path, quality=90)
        entries.append(SplitEntry(path, cls))
    return entries


def main() -> None:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda[:N] for the device path")
    parser.add_argument("--recipe", default="moco_v2", help="transform recipe of every case")
    parser.add_argument("--images", type=int, default=512, help="images timed per small-image case")
    parser.add_argument("--jpegs", type=int, default=64, help="synthetic JPEGs (224 cases)")
    parser.add_argument("--jpeg-side", type=int, default=320, help="stored side of the JPEGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="repeats per array case (median)")
    parser.add_argument("--jpeg-repeats", type=int, default=1, help="passes per JPEG case")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="JPEG loaders")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the main process (default 1, as in DataLoader workers; 0 keeps "
        "torch's default, which on a busy CPU makes small tensor ops spin)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device(args.device)
    bs = args.batch_size
    result: dict[str, Any] = {
        "recipe": args.recipe,
        "views": 2,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": bs,
        "timing": f"median images/s over {args.repeats} repeats (JPEG: {args.jpeg_repeats}) "
        "after one warm-up batch",
        "jpegs": args.jpegs,
        "images_per_s": {},
    }
    rates: dict[str, float] = result["images_per_s"]

    with tempfile.TemporaryDirectory() as tmp:
        entries = write_jpegs(Path(tmp), args.jpegs, args.jpeg_side)
        tf224 = TwoViews(build_transform(args.recipe, 224, 3))
        ds = SplitImageDataset(tmp, entries, transform=tf224)
        for w in args.workers:

            def make_jpeg(w: int = w) -> Iterable[Any]:
                return DataLoader(ds, batch_size=16, shuffle=True, num_workers=w, drop_last=False)

            # one pass over the JPEGs per repeat (minus the warm-up batch)
            rates[f"jpeg224_workers{w}"] = time_loader(
                make_jpeg, args.jpegs, args.jpeg_repeats, torch.device("cpu")
            )[0]

    rng = np.random.default_rng(0)
    n = max(args.images + bs, 1024)
    arrays = {
        "array28": (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 28, 1),
        "array32": (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), 32, 3),
    }
    labels = rng.integers(0, 10, n)
    for name, (imgs, size, ch) in arrays.items():
        pil_ds = ArrayDataset(
            imgs, labels, transform=TwoViews(build_transform(args.recipe, size, ch))
        )

        def make_pil(pil_ds: ArrayDataset = pil_ds) -> Iterable[Any]:
            return DataLoader(pil_ds, batch_size=bs, shuffle=True, num_workers=0)

        aug = DeviceAugment.from_recipe(args.recipe, size, ch)
        dev_loader = DeviceArrayLoader(imgs, labels, bs, transform=aug, views=2, device=device)

        def make_dev(loader: DeviceArrayLoader = dev_loader) -> Iterable[Any]:
            loader.set_epoch(loader.epoch + 1)
            return loader

        rates[f"{name}_pil"] = time_loader(
            make_pil, args.images, args.repeats, torch.device("cpu")
        )[0]
        rates[f"{name}_device"] = time_loader(make_dev, args.images, args.repeats, device)[0]
        result[f"ratio_{name}_device_over_pil"] = round(
            rates[f"{name}_device"] / rates[f"{name}_pil"], 2
        )
    if len(args.workers) > 1:
        w0, w1 = args.workers[0], args.workers[-1]
        result[f"ratio_jpeg224_workers{w1}_over_workers{w0}"] = round(
            rates[f"jpeg224_workers{w1}"] / rates[f"jpeg224_workers{w0}"], 2
        )
    result["images_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
