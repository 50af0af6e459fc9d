"""ImageNet-scale input path: JPEG decode + augmentation, images/s per CPU core (and on a GPU).

The benchmark writes its own image folder of ImageNet-sized JPEGs (``--images`` files in 4 class
folders, ~500x375, quality 90, textured synthetic content: smooth colour fields plus noise and
edges, so the files are about as large as photographs of that size) and feeds it through the
engine's own builders (``balfeat.engine.build``: ``build_train_dataset`` with
``data.dataset=imagenet``, ``BatchSource.host_loader``, ``build_batch_decoder``), so what is
timed is what training runs:

- ``pil``: ``data.decode=pil``: PIL open + the PIL recipe (today's default), per image;
- ``cpu``: ``data.decode=cpu``: ``torchvision.io.decode_jpeg`` + the same recipe on uint8
  tensors (``build_tensor_transform``), per image;
- ``gpu``: ``data.decode=gpu``: the loader only reads the files; each batch is decoded by nvJPEG
  (``decode_jpeg(device="cuda")``) and augmented on the GPU by ``EncodedBatchAugment``. Only with
  CUDA; otherwise the JSON states why it was skipped (``benchmarks/gpu_input_path.sh`` runs it on
  a GPU machine).

``pil`` and ``cpu`` run in the main process on one thread (``num_workers=0``,
``torch.set_num_threads(1)``): images/s per CPU core. ``gpu`` reports the device's images/s and
the CPU's per-core rate for its part (reading the files). Files are read through the page cache
(written just before), i.e. the rates exclude disk I/O. Rounds alternate the paths; medians.

Usage: ``python benchmarks/bench_decode.py [--images 300 --batch 64 --rounds 3
--recipes moco_v2,supervised --views 1]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def make_jpegs(folder: Path, n: int, classes: int = 4, seed: int = 0) -> list[Path]:
    """Write ``n`` textured ~500x375 JPEGs (quality 90) into ``classes`` sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(450, 551)), int(rng.integers(330, 421))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            fx, fy, ph = [*rng.uniform(0.005, 0.05, 2).tolist(), rng.uniform(0, 6.3)]
            img[..., c] = 128 + 80 * np.sin(fx * xx + fy * yy + ph)
        img += rng.normal(0, 18, img.shape)  # texture
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(40, 150)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] *= 0.5  # a hard edge
        sub = folder / f"n{i % classes:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"img_{i:05d}.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def engine_config(root: Path, decode: str, recipe: str, batch: int, views: int) -> Any:
    """The pretraining config whose data section the engine builders read."""
    from balfeat.engine.config import load_config

    method = ["method.name=moco_v2"] if views == 2 else ["method.name=sl"]
    return load_config(
        None,
        [
            "data.dataset=imagenet",
            f"data.root={root}",
            f"data.decode={decode}",
            f"data.augmentation={recipe}",
            "data.image_size=224",
            "data.channels=3",
            "data.num_workers=0",
            f"optim.batch_size={batch}",
            *method,
            "run.device=auto" if decode == "gpu" else "run.device=cpu",
        ],
    )


def _loader(cfg: Any, device: torch.device) -> tuple[Any, Any]:
    from balfeat.data.batches import BatchSource
    from balfeat.engine import build

    ds = build.build_train_dataset(cfg)
    sampler = build.build_sampler(cfg, ds)
    source = BatchSource(
        ds, sampler, batch_size=cfg.optim.batch_size, device=device, seed=0,
        num_workers=cfg.data.num_workers,
    )  # fmt: skip
    return ds, source.host_loader()


def bench_cpu_path(cfg: Any) -> float:
    """images/s of the loader (decode + augmentation + collate) in this process."""
    _, loader = _loader(cfg, torch.device("cpu"))
    n = 0
    start = time.perf_counter()
    for images, _labels in loader:
        n += len(images[0] if isinstance(images, list) else images)
    return n / (time.perf_counter() - start)


def bench_gpu_path(cfg: Any) -> dict[str, float]:
    """The gpu path: CPU images/s of the loader (reading files) and device images/s of
    nvJPEG decode + on-device augmentation, timed apart."""
    from balfeat.engine import build
    from balfeat.seeding import derive_seed

    device = torch.device("cuda")
    ds, loader = _loader(cfg, device)
    decoder = build.build_batch_decoder(cfg, ds)
    assert decoder is not None, "data.decode=gpu did not select the gpu path"
    start = time.perf_counter()
    batches = list(loader)
    read_s = time.perf_counter() - start
    n = sum(len(b) for b, _ in batches)
    decoder(batches[0][0], device, torch.Generator().manual_seed(0))  # warm up nvJPEG
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i, (batch, labels) in enumerate(batches):
        decoder(batch, device, torch.Generator().manual_seed(derive_seed(0, 0, i)))
        labels.to(device, non_blocking=True)
    torch.cuda.synchronize()
    gpu_s = time.perf_counter() - start
    return {"read_images_per_s_per_core": n / read_s, "device_images_per_s": n / gpu_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="JPEGs generated (default 300)")
    ap.add_argument("--batch", type=int, default=64, help="loader batch (default 64)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds; medians reported")
    ap.add_argument(
        "--recipes",
        default="moco_v2,supervised",
        help="data.augmentation recipes, comma-separated (default moco_v2,supervised: MoCo's "
        "aug-plus and the supervised crop + flip)",
    )
    ap.add_argument("--views", type=int, choices=(1, 2), default=1,
                    help="crops per image (2: MoCo/KCL query and key; default 1)")  # fmt: skip
    args = ap.parse_args()
    if args.images < args.batch:
        ap.error(f"--images {args.images} < --batch {args.batch}: the loader drops partial batches")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)  # per-core figures
    recipes = [r for r in args.recipes.split(",") if r]
    out: dict[str, Any] = {
        "images": args.images,
        "threads": 1,
        "batch": args.batch,
        "views": args.views,
        "image_size": 224,
        "torch": torch.__version__,
        "note": "per-core: one thread, num_workers=0, files in the page cache",
    }
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        paths = make_jpegs(root, args.images)
        out["mean_file_kb"] = round(sum(p.stat().st_size for p in paths) / len(paths) / 1024, 1)
        for recipe in recipes:
            runs: dict[str, list[float]] = {"pil": [], "cpu": []}
            gpu_runs: list[dict[str, float]] = []
            for _ in range(args.rounds):
                for decode in ("pil", "cpu"):
                    cfg = engine_config(root, decode, recipe, args.batch, args.views)
                    runs[decode].append(bench_cpu_path(cfg))
                if cuda:
                    cfg = engine_config(root, "gpu", recipe, args.batch, args.views)
                    gpu_runs.append(bench_gpu_path(cfg))
            row: dict[str, Any] = {
                f"{k}_images_per_s_per_core": round(float(np.median(v)), 1) for k, v in runs.items()
            }
            row["cpu_over_pil"] = round(
                row["cpu_images_per_s_per_core"] / row["pil_images_per_s_per_core"], 2
            )
            if cuda:
                for key in gpu_runs[0]:
                    row[f"gpu_{key}"] = round(float(np.median([g[key] for g in gpu_runs])), 1)
            out[recipe] = row
    if cuda:
        out["gpu_device"] = torch.cuda.get_device_name()
    else:
        out["gpu_skipped"] = (
            "no CUDA device here, so the data.decode=gpu path (nvJPEG + on-device augmentation) "
            "was not run; run benchmarks/gpu_input_path.sh on a GPU machine"
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
