"""Linear-probe protocols on Fashion-MNIST: reference (fresh augmentations every step) vs fast
(augmented features cached ``--passes`` times, one pass per epoch, classifier trained on whole
tensors on the device), at equal epochs.

Prints one JSON object: seconds and best validation top-1 of each protocol, the speed-up
(reference seconds / fast seconds) and the accuracy difference in points. Both protocols use the
same random-initialised (or ``--checkpoint``) backbone, seed, lr schedule and batch size.

    python benchmarks/bench_probe.py --train-size 3000 --test-size 1000 --epochs 30  # ~20 min CPU
    python benchmarks/bench_probe.py --backbone resnet8 --train-size 2000 --test-size 1000 \
        --epochs 10 --passes 0,1,2,5,10   # the accuracy/time curve over cached passes
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices with (about) equal numbers per class, reproducible."""
    if size <= 0 or size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = size // len(classes)
    picks = [rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def main() -> None:
    """Run both protocols and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet20", help="default resnet20 (random init)")
    parser.add_argument("--checkpoint", default=None, help="weights to probe (default: none)")
    parser.add_argument("--train-size", type=int, default=500, help="default 500; 0 = all 60000")
    parser.add_argument("--test-size", type=int, default=200, help="default 200; 0 = all 10000")
    parser.add_argument("--epochs", type=int, default=20, help="default 20 (the protocol: 100)")
    parser.add_argument("--lr", type=float, default=30.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--reference-augment",
        choices=("on", "off"),
        default="on",
        help="on: the true reference protocol (RandomResizedCrop + flip); off: same images as "
        "the fast protocol (isolates the algorithmic difference)",
    )
    parser.add_argument(
        "--passes",
        default="0",
        help="comma-separated fast-protocol pass counts to measure (augmented feature passes "
        "cached, one used per epoch; 0 = one un-augmented pass), e.g. 0,1,2,5,10 (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from balfeat.classify.probe import ProbeConfig, probe_fast, probe_reference
    from balfeat.classify.runner import build_probe_transforms
    from balfeat.data.datasets import ArrayDataset
    from balfeat.data.sources import load_fashion_mnist
    from balfeat.device import default_device
    from balfeat.models.backbones import build_backbone
    from balfeat.models.loading import load_backbone_state, load_into_backbone

    device = default_device(args.device)
    data = load_fashion_mnist()
    tr_idx = stratified_subset(data.train_y, args.train_size, args.seed)
    te_idx = stratified_subset(data.test_y, args.test_size, args.seed + 1)
    aug, ev = build_probe_transforms(28, 1)
    train_aug = ArrayDataset(data.train_x[tr_idx], data.train_y[tr_idx], aug, data.class_names)
    train_plain = ArrayDataset(data.train_x[tr_idx], data.train_y[tr_idx], ev, data.class_names)
    test = ArrayDataset(data.test_x[te_idx], data.test_y[te_idx], ev, data.class_names)

    def backbone() -> torch.nn.Module:
        torch.manual_seed(args.seed)
        bb = build_backbone(args.backbone, small_images=True, in_channels=1)
        if args.checkpoint:
            state, _ = load_backbone_state(args.checkpoint, args.backbone)
            load_into_backbone(bb, state, source=args.checkpoint)
        return bb.to(device)

    cfg = ProbeConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    ref_train = train_aug if args.reference_augment == "on" else train_plain

    curve = []
    for passes in [int(p) for p in args.passes.split(",")]:
        t0 = time.perf_counter()
        res = probe_fast(
            backbone(),
            train_aug if passes > 0 else train_plain,
            test,
            10,
            cfg,
            device=device,
            passes=passes,
            num_workers=args.workers,
        )
        curve.append(
            {
                "passes": passes,
                "seconds": round(time.perf_counter() - t0, 3),
                "feature_seconds": round(res.extras["feature_seconds"], 3),
                "top1": res.best_top1,
                "best_epoch": res.best_epoch,
            }
        )
    t0 = time.perf_counter()
    ref = probe_reference(
        backbone(), ref_train, test, 10, cfg, device=device, num_workers=args.workers
    )
    t_ref = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "benchmark": "linear probe: reference vs fast protocol",
                "dataset": "fashion-mnist",
                "backbone": args.backbone + (" (random init)" if not args.checkpoint else ""),
                "train_size": len(tr_idx),
                "test_size": len(te_idx),
                "epochs": args.epochs,
                "lr": args.lr,
                "batch_size": args.batch_size,
                "reference_augment": args.reference_augment,
                "device": str(device),
                "torch_threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(),
                "reference": {
                    "seconds": round(t_ref, 3),
                    "top1": ref.best_top1,
                    "best_epoch": ref.best_epoch,
                },
                "fast": [
                    {
                        **c,
                        "speedup": round(t_ref / c["seconds"], 2),
                        "top1_diff_points": round(c["top1"] - ref.best_top1, 3),
                    }
                    for c in curve
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
