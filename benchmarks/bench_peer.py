"""Peer benchmark: balfeat's MoCo v2 (and KCL) against lightly's MoCo building blocks, end to end.

Same work on both sides: 4,000 Fashion-MNIST training images (28x28, 1 channel), the same
backbone (balfeat's resnet8 with the small-image stem), batch 256, queue K 4,096, T 0.2, momentum
0.99, MLP projection head to 128-d, SGD; the MoCo v2 augmentation family (random resized crop
0.2-1, colour jitter p 0.8, flip; grayscale and blur dropped for 1-channel 28-px images on both
sides). Each side trains ``--steps`` optimiser steps after ``--warmup`` steps; runs alternate
(balfeat MoCo, lightly, balfeat KCL, repeat) and the JSON reports the median images/s of each and
the ratios.

- balfeat: ``balfeat.methods.moco.MoCo`` / ``balfeat.methods.kcl.KCL`` fed by
  ``balfeat.data.device_data.DeviceArrayLoader`` (the trainer's default for in-memory data).
- lightly: ``MoCoProjectionHead``, ``NTXentLoss(memory_bank_size=(K, 128))`` and
  ``update_momentum`` in a plain loop, fed by a ``DataLoader`` of torchvision PIL transforms as in
  lightly's MoCo examples.

lightly is not a dependency of balfeat: ``pip install -e '.[bench]'`` (or
``pip install --no-deps lightly==1.6.0``: the building blocks used here import without its
PyTorch Lightning and Hydra dependencies). Without it, the lightly side is skipped with a note.

Usage: ``.venv/bin/python benchmarks/bench_peer.py [--steps 15 --rounds 3 --threads 2]``
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

B, K, T, M, DIM = 256, 4096, 0.2, 0.99, 128


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    from balfeat.data.sources import load_fashion_mnist

    d = load_fashion_mnist()
    return d.train_x[:n], d.train_y[:n].astype(np.int64)


def _backbone() -> nn.Module:
    from balfeat.models.backbones import build_backbone

    return build_backbone("resnet8", small_images=True, in_channels=1)


def balfeat_run(x: np.ndarray, y: np.ndarray, method: str, steps: int, warmup: int) -> float:
    """Images/s of ``steps`` balfeat training steps (MoCo v2 or KCL) after ``warmup``."""
    from balfeat.data.device_data import DeviceArrayLoader, DeviceAugment
    from balfeat.methods.kcl import KCL
    from balfeat.methods.moco import MoCo

    torch.manual_seed(0)
    kw: dict[str, Any] = dict(dim=DIM, K=K, m=M, T=T, mlp=True, bn_splits=8)
    model = KCL(_backbone(), posk=6, **kw) if method == "kcl" else MoCo(_backbone(), **kw)
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], 0.06, 0.9, weight_decay=1e-4
    )
    loader = DeviceArrayLoader(
        x,
        y,
        B,
        transform=DeviceAugment.from_recipe("moco_v2", 28, 1),
        views=2,
        device="cpu",
        drop_last=True,
    )
    done, t0, epoch = 0, 0.0, 0
    model.train()
    while done < warmup + steps:
        loader.set_epoch(epoch)
        for views, labels in loader:
            if done == warmup:
                t0 = time.perf_counter()
            loss = model(views, labels)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.after_step()
            done += 1
            if done == warmup + steps:
                break
        epoch += 1
    return steps * B / (time.perf_counter() - t0)


def lightly_run(x: np.ndarray, y: np.ndarray, steps: int, warmup: int) -> float | None:
    """Images/s of ``steps`` steps of lightly's MoCo building blocks in a plain loop."""
    try:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import update_momentum
    except ImportError:
        return None
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as TV

    aug = TV.Compose([
        TV.RandomResizedCrop(28, scale=(0.2, 1.0)),
        TV.RandomApply([TV.ColorJitter(0.4, 0.4, 0.0, 0.0)], p=0.8),
        TV.RandomHorizontalFlip(),
        TV.ToTensor(),
        TV.Normalize((0.2860,), (0.3530,)),
    ])  # fmt: skip

    class Pairs(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
            img = Image.fromarray(x[i])
            return aug(img), aug(img), int(y[i])

    torch.manual_seed(0)
    backbone = _backbone()
    head = MoCoProjectionHead(backbone.out_dim, backbone.out_dim, DIM)
    backbone_k, head_k = copy.deepcopy(backbone), copy.deepcopy(head)
    for p in [*backbone_k.parameters(), *head_k.parameters()]:
        p.requires_grad = False
    criterion = NTXentLoss(temperature=T, memory_bank_size=(K, DIM))
    params = [*backbone.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, 0.06, 0.9, weight_decay=1e-4)
    loader = DataLoader(Pairs(), batch_size=B, shuffle=True, drop_last=True, num_workers=0)
    done, t0 = 0, 0.0
    while done < warmup + steps:
        for xq, xk, _ in loader:
            if done == warmup:
                t0 = time.perf_counter()
            update_momentum(backbone, backbone_k, M)
            update_momentum(head, head_k, M)
            q = head(backbone(xq))
            with torch.no_grad():
                k = head_k(backbone_k(xk))
            loss = criterion(q, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    return steps * B / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=15, help="timed steps per run (default 15)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--images", type=int, default=4000, help="training images (default 4000)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = _data(args.images)
    runs: dict[str, list[float]] = {"balfeat_moco_v2": [], "lightly_moco": [], "balfeat_kcl": []}
    for _ in range(args.rounds):
        runs["balfeat_moco_v2"].append(balfeat_run(x, y, "moco", args.steps, args.warmup))
        peer = lightly_run(x, y, args.steps, args.warmup)
        if peer is not None:
            runs["lightly_moco"].append(peer)
        runs["balfeat_kcl"].append(balfeat_run(x, y, "kcl", args.steps, args.warmup))
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    out: dict[str, Any] = {
        "benchmark": "peer_moco_end_to_end",
        "images_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "images_per_s_runs": {k: [round(r, 1) for r in v] for k, v in runs.items()},
        "kcl_time_over_moco_time": round(med["balfeat_moco_v2"] / med["balfeat_kcl"], 3),
        "settings": {
            "batch": B,
            "K": K,
            "T": T,
            "m": M,
            "dim": DIM,
            "images": args.images,
            "steps": args.steps,
            "rounds": args.rounds,
            "threads": args.threads,
        },
        "torch": torch.__version__,
    }
    if "lightly_moco" in med:
        out["balfeat_over_lightly"] = round(med["balfeat_moco_v2"] / med["lightly_moco"], 3)
    else:
        out["lightly"] = "not installed: pip install -e '.[bench]' (or --no-deps lightly==1.6.0)"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
