"""Training throughput (images/s) of SL, MoCo v2 and KCL through the real Trainer; prints JSON.

Usage: ``python benchmarks/pretrain_throughput.py [--backbone resnet20] [--batch 256]
[--steps 6] [--dataset fashion-mnist|synthetic] [--device cpu]``. The first step (warm-up) is left
out; the figure is the median over the remaining logged steps. CPU numbers depend heavily on
contention from other processes: compare methods within one run only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch

from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backbone", default="resnet20")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", nargs="*", default=["sl", "moco_v2", "kcl"])
    args = p.parse_args()
    results = {}
    for name in args.methods:
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(
                None,
                [
                    f"data.dataset={args.dataset}",
                    "data.image_size=28",
                    "data.channels=1",
                    f"data.augmentation={'supervised' if name == 'sl' else 'moco_v2'}",
                    f"data.max_samples={args.batch * args.steps}",
                    f"data.synthetic_size={args.batch * args.steps}",
                    f"model.backbone={args.backbone}",
                    "model.small_images=true",
                    f"method.name={name}",
                    "method.K=4096",
                    f"optim.batch_size={args.batch}",
                    "optim.epochs=1",
                    f"run.device={args.device}",
                    "run.log_every=1",
                    "run.progress=false",
                    f"run.output_dir={out}",
                ],
            )
            trainer = Trainer(cfg)
            trainer.fit()
            ips = [r["images_per_s"] for r in trainer.history[1:]]
            results[name] = round(statistics.median(ips), 1)
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "batch": args.batch,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "images_per_s": results,
            }
        )
    )


if __name__ == "__main__":
    main()
