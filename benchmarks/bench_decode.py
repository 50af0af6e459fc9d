"""ImageNet-scale input path: JPEG decode + augmentation, images/s per CPU core (and on a GPU).

The benchmark writes its own folder of ImageNet-sized JPEGs (``--images`` files, ~500x375,
quality 90, textured synthetic content: smooth colour fields plus noise and edges, so the files
are as large as photographs of that size, ~100-150 kB) and measures, single-threaded (one core):

- ``pil``: ``PIL.Image.open`` + ``build_transform("moco_v2", 224)`` (today's path, per image);
- ``cpu``: ``torchvision.io.decode_jpeg`` + tensor transforms (RandomResizedCrop, flip, jitter
  applied by :class:`balfeat.data.device_data.DeviceAugment` on a batch of the decoded crops);
- ``gpu``: batched ``decode_jpeg(device="cuda")`` + on-device augmentation, only with CUDA
  (otherwise the JSON carries a note). ``benchmarks/gpu_input_path.sh`` runs it on a GPU machine.

Usage: ``.venv/bin/python benchmarks/bench_decode.py [--images 300 --batch 64]``; prints JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` textured ~500x375 JPEGs (quality 90) to ``folder``."""
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
        p = folder / f"img_{i:05d}.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def bench_pil(files: list[bytes]) -> float:
    from PIL import Image

    from balfeat.data.transforms import build_transform

    t = build_transform("moco_v2", 224, 3)
    start = time.perf_counter()
    for data in files:
        t(Image.open(io.BytesIO(data)))
    return len(files) / (time.perf_counter() - start)


def bench_cpu(files: list[bytes], batch: int) -> float:
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import v2

    from balfeat.data.device_data import DeviceAugment

    crop = v2.RandomResizedCrop(256, scale=(0.2, 1.0), antialias=True)
    aug = DeviceAugment.from_recipe("moco_v2", 224, 3)
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        crops = []
        for data in files[i : i + batch]:
            x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                            mode=ImageReadMode.RGB)  # fmt: skip
            crops.append(crop(x))  # crop first: augmenting 256 px instead of full images
        stacked = torch.stack(crops).permute(0, 2, 3, 1)  # (B, H, W, C) as DeviceAugment takes
        aug(stacked)
    return len(files) / (time.perf_counter() - start)


def bench_gpu(files: list[bytes], batch: int) -> float:
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import v2

    from balfeat.data.device_data import DeviceAugment

    aug = DeviceAugment.from_recipe("moco_v2", 224, 3)
    crop = v2.RandomResizedCrop(256, scale=(0.2, 1.0), antialias=True)
    raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in files]
    decode_jpeg(raw[:batch], mode=ImageReadMode.RGB, device="cuda")  # warm up nvJPEG
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(raw), batch):
        imgs = decode_jpeg(raw[i : i + batch], mode=ImageReadMode.RGB, device="cuda")
        stacked = torch.stack([crop(x) for x in imgs]).permute(0, 2, 3, 1)
        aug(stacked)
    torch.cuda.synchronize()
    return len(files) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="JPEGs generated (default 300)")
    ap.add_argument("--batch", type=int, default=64, help="batch of the tensor paths")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds; medians reported")
    args = ap.parse_args()
    torch.set_num_threads(1)  # per-core figures
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        files = [p.read_bytes() for p in paths]
    out: dict[str, Any] = {
        "images": len(files),
        "mean_file_kb": round(sum(map(len, files)) / len(files) / 1024, 1),
        "threads": 1,
        "batch": args.batch,
    }
    runs: dict[str, list[float]] = {"pil": [], "cpu": []}
    for _ in range(args.rounds):
        runs["pil"].append(bench_pil(files))
        runs["cpu"].append(bench_cpu(files, args.batch))
    for k, v in runs.items():
        out[f"{k}_images_per_s_per_core"] = round(float(np.median(v)), 1)
    out["cpu_over_pil"] = round(
        out["cpu_images_per_s_per_core"] / out["pil_images_per_s_per_core"], 2
    )
    if torch.cuda.is_available():
        g = [bench_gpu(files, args.batch) for _ in range(args.rounds)]
        out["gpu_images_per_s"] = round(float(np.median(g)), 1)
        out["gpu_device"] = torch.cuda.get_device_name()
    else:
        out["gpu_note"] = "no CUDA device: run benchmarks/gpu_input_path.sh on a GPU machine"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
