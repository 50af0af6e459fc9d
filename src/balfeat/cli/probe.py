"""``balfeat probe``: linear probe (and decoupled classifiers) on a frozen learned backbone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from torch.utils.data import Dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``balfeat probe``."""
    p = subparsers.add_parser(
        "probe",
        help="train a linear classifier on a frozen backbone; report many/medium/few accuracy",
        description=(
            "Linear probe of a checkpoint's backbone (balfeat, MoCo/BalFeat, supervised or "
            "torchvision weights). Prints overall/many/medium/few accuracy and balancedness and "
            "writes results.json, per_class.csv and probe.pth into --out."
        ),
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="weights to probe (default: none = random init, a baseline). Any format that "
        "`balfeat export` reads",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="architecture, e.g. resnet18, resnet50, resnet20 (default: inferred from the "
        "checkpoint; required without one)",
    )
    p.add_argument(
        "--small-images",
        action="store_true",
        default=None,
        help="3x3 stem without max-pool, for 28-64 px images (default: from the checkpoint, "
        "else on for fashion-mnist)",
    )
    p.add_argument(
        "--dataset",
        choices=("fashion-mnist", "imagenet"),
        default="fashion-mnist",
        help="fashion-mnist (embedded arrays) or imagenet (split files + image folder) "
        "(default: fashion-mnist)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="fashion-mnist: folder with the IDX files (default: search the usual places); "
        "imagenet: root the split paths are relative to (required)",
    )
    p.add_argument(
        "--train-split",
        default=None,
        help="imagenet: split file of the probe's training images, e.g. ImageNet_LT_train.txt "
        "(required for imagenet)",
    )
    p.add_argument(
        "--val-split",
        default=None,
        help="imagenet: split file the probe is evaluated on, e.g. ImageNet_LT_test.txt",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="crop size (default: 28 for fashion-mnist, 224 for imagenet)",
    )
    p.add_argument(
        "--protocol",
        choices=("fast", "reference"),
        default="fast",
        help="fast: features extracted once, classifier trained on the device (default, 20x+ "
        "faster); reference: MoCo's protocol with fresh augmentations every step - use it for "
        "numbers comparable to the paper",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=0,
        help="fast protocol: augmented feature passes over the training set (default 0 = one "
        "un-augmented pass); raise to 5-10 to approximate the reference's augmentation",
    )
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument(
        "--lr",
        type=float,
        default=30.0,
        help="learning rate (default 30, MoCo's; use ~0.1-1 for features of a supervised "
        "backbone or normalised features)",
    )
    p.add_argument(
        "--milestones",
        default=None,
        help="comma-separated epochs where the lr drops 10x (default: 60%%,80%% of --epochs)",
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument(
        "--no-bias", action="store_true", help="classifier without bias (default: with bias)"
    )
    p.add_argument(
        "--balanced",
        action="store_true",
        help="class-balanced sampling for the classifier (default: off, instance sampling); "
        "turn on for cRT-style probes of long-tailed training sets",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="balanced sampling: images drawn per picked class (default 1)",
    )
    p.add_argument(
        "--decoupled",
        default="",
        help="fast protocol: also run these decoupled classifiers on the cached features, "
        "comma-separated from crt,tau,lws (default: none)",
    )
    p.add_argument(
        "--grouping",
        default="default",
        help="many/medium/few grouping: default (>100/20-100/<20), reference (20 is few), "
        "thirds (by count rank, for small datasets) or MANY,FEW thresholds (default: default)",
    )
    p.add_argument(
        "--class-set",
        default=None,
        help="unseen-class protocol: a class-set file (set A, one class per line: a label, a "
        "class name or /wnid); probes A and its complement B separately (default: off)",
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto = GPU if any)"
    )
    p.add_argument(
        "--workers", type=int, default=0, help="data loading workers (default 0; ~8 on imagenet)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of init and sampling (default 0)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines (default: print them)")
    p.set_defaults(func=run)


def build_probe_transforms(image_size: int, channels: int) -> tuple[Any, Any]:
    """(train, eval) transforms of the linear probe.

    Training uses ``balfeat.data.transforms``' ``"supervised"`` transform (RandomResizedCrop +
    horizontal flip, MoCo's linear protocol); evaluation its ``"eval"`` transform.
    """
    from balfeat.data.transforms import build_transform

    return (
        build_transform("supervised", image_size, channels),
        build_transform("eval", image_size, channels),
    )


def load_datasets(
    args: argparse.Namespace, channels: int
) -> tuple[Dataset, Dataset, Dataset, int, list[str], np.ndarray]:
    """(train with augmentation, train without, validation, num_classes, class names, counts)."""
    import numpy as np

    from balfeat.errors import DataError

    if args.dataset == "fashion-mnist":
        from balfeat.data.datasets import ArrayDataset
        from balfeat.data.sources import load_fashion_mnist

        data = load_fashion_mnist(args.data_root)
        size = args.image_size or 28
        aug, ev = build_probe_transforms(size, channels)
        names = list(data.class_names)
        tr_aug = ArrayDataset(data.train_x, data.train_y, aug, names)
        tr = ArrayDataset(data.train_x, data.train_y, ev, names)
        va = ArrayDataset(data.test_x, data.test_y, ev, names)
        counts = np.bincount(data.train_y, minlength=len(names))
        return tr_aug, tr, va, len(names), names, counts
    if not (args.data_root and args.train_split and args.val_split):
        raise DataError(
            "--dataset imagenet needs --data-root, --train-split and --val-split (split files "
            "with one 'path label' per line)"
        )
    from balfeat.data.datasets import SplitImageDataset

    size = args.image_size or 224
    aug, ev = build_probe_transforms(size, channels)
    s_aug = SplitImageDataset(args.data_root, args.train_split, aug)
    nc = s_aug.num_classes
    s_tr = SplitImageDataset(args.data_root, args.train_split, ev, num_classes=nc)
    s_va = SplitImageDataset(args.data_root, args.val_split, ev, num_classes=nc)
    names = [str(n) for n in s_aug.class_names]
    counts = np.bincount(s_aug.targets, minlength=nc)
    return s_aug, s_tr, s_va, nc, names, counts


def read_class_set_labels(path: str, class_names: list[str]) -> list[int]:
    """Labels of a class-set file: each line a label, a class name, or ``/wnid``."""
    from balfeat.errors import SplitFormatError

    labels: list[int] = []
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        item = line.strip()
        if not item:
            continue
        key = item.lstrip("/")
        if key.isdigit():
            labels.append(int(key))
        elif key.lower() in lookup:
            labels.append(lookup[key.lower()])
        else:
            raise SplitFormatError(
                f"{path}:{lineno}: unknown class {item!r}; use a label 0..{len(class_names) - 1} "
                f"or one of {class_names[:5]}..."
            )
    return labels


def build_model(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The backbone (with the checkpoint's weights) and the loading info."""
    from balfeat.errors import ConfigError
    from balfeat.models.backbones import build_backbone
    from balfeat.models.loading import load_backbone_state, load_into_backbone

    info: dict[str, Any] = {"checkpoint": args.checkpoint}
    state = None
    if args.checkpoint:
        state, info = load_backbone_state(args.checkpoint, args.backbone)
        info["checkpoint"] = args.checkpoint
    arch = args.backbone or info.get("arch")
    if arch is None:
        raise ConfigError(
            "cannot tell the architecture: pass --backbone (resnet18, resnet50, resnet20, ...)"
        )
    small = args.small_images
    if small is None:
        small = info.get("small_images")
    if small is None:
        small = args.dataset == "fashion-mnist"
    channels = info.get("in_channels") or (1 if args.dataset == "fashion-mnist" else 3)
    backbone = build_backbone(arch, small_images=bool(small), in_channels=int(channels))
    if state is not None:
        load_into_backbone(backbone, state, source=args.checkpoint)
    info.update(arch=arch, small_images=bool(small), in_channels=int(channels))
    return backbone, info


def run(args: argparse.Namespace) -> int:
    """Run the probe; returns the exit code."""
    import dataclasses

    import torch

    from balfeat.classify.decoupled import crt, lws, tau_sweep
    from balfeat.classify.features import extract_features
    from balfeat.classify.probe import (
        ProbeConfig,
        probe_summary,
        probe_unseen,
        run_probe,
        train_linear_on_features,
    )
    from balfeat.device import default_device
    from balfeat.errors import ConfigError
    from balfeat.evaluation.metrics import format_summary, parse_grouping, write_results

    grouping = parse_grouping(args.grouping)
    milestones = None
    if args.milestones:
        try:
            milestones = tuple(int(m) for m in args.milestones.split(","))
        except ValueError:
            raise ConfigError(
                f"--milestones {args.milestones!r}: use integers like 60,80"
            ) from None
    cfg = ProbeConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        milestones=milestones,
        batch_size=args.batch_size,
        bias=not args.no_bias,
        balanced=args.balanced,
        repeat=args.repeat,
        seed=args.seed,
    )
    decoupled = [d for d in args.decoupled.split(",") if d]
    unknown = sorted(set(decoupled) - {"crt", "tau", "lws"})
    if unknown:
        raise ConfigError(f"--decoupled: unknown {unknown}; choose from crt,tau,lws")
    if decoupled and args.protocol != "fast":
        raise ConfigError("--decoupled runs on cached features: use it with --protocol fast")
    device = default_device(args.device)
    torch.manual_seed(args.seed)
    backbone, info = build_model(args)
    backbone.to(device)
    tr_aug, tr, va, num_classes, names, counts = load_datasets(args, info["in_channels"])
    train_ds = tr_aug if (args.protocol == "reference" or args.passes > 0) else tr
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(args.out)
    meta = {
        "checkpoint": args.checkpoint,
        "backbone": info["arch"],
        "small_images": info["small_images"],
        "format": info.get("format"),
        "dataset": args.dataset,
    }

    if args.class_set:
        a = read_class_set_labels(args.class_set, names)
        both = probe_unseen(
            backbone,
            train_ds,
            va,
            a,
            cfg,
            args.protocol,
            device,
            grouping,
            names,
            args.passes,
            args.workers,
            log,
        )
        both.update(meta)
        write_results(out / "A", both["A"])
        write_results(out / "B", both["B"])
        (out / "unseen.json").write_text(json.dumps(_headline(both), indent=2) + "\n")
        for key in ("A", "B"):
            print(f"== class set {key} ({len(both['classes_' + key])} classes)")
            print(format_summary(both[key]))
        return 0

    res = run_probe(
        backbone,
        train_ds,
        va,
        num_classes,
        cfg,
        args.protocol,
        device,
        args.passes,
        args.workers,
        log,
    )
    results = probe_summary(res, counts, names, grouping, cfg)
    results.update(meta)
    if decoupled:
        xtr, ytr = extract_features(backbone, tr, 256, device, 0, args.seed, args.workers, True)
        xva, yva = extract_features(backbone, va, 256, device, 0, args.seed, args.workers, True)
        extra: dict[str, Any] = {}
        if "crt" in decoupled:
            r = crt(xtr, ytr, xva, yva, num_classes, cfg, device)
            extra["crt"] = _short(probe_summary(r, counts, names, grouping))
        if "tau" in decoupled:
            base = res.classifier
            if args.balanced:  # tau-norm is applied to an instance-balanced classifier
                base = train_linear_on_features(
                    xtr,
                    ytr,
                    xva,
                    yva,
                    num_classes,
                    dataclasses.replace(cfg, balanced=False),
                    device,
                ).classifier
            extra["tau"] = tau_sweep(base, xva, yva, counts, grouping=grouping)
        if "lws" in decoupled:
            _, r = lws(
                res.classifier,
                xtr,
                ytr,
                xva,
                yva,
                dataclasses.replace(cfg, lr=0.2, milestones=None),
                device,
            )
            extra["lws"] = _short(probe_summary(r, counts, names, grouping))
        results["decoupled"] = extra
    write_results(out, results)
    torch.save(
        {
            "classifier": res.classifier.state_dict(),
            "val_logits": res.val_logits,
            "val_labels": res.val_labels,
            "train_counts": torch.as_tensor(counts),
            "class_names": names,
            "meta": meta,
            "config": cfg.as_dict(),
            "protocol": res.protocol,
            "best_epoch": res.best_epoch,
        },
        out / "probe.pth",
    )
    print(
        f"{args.protocol} probe of {args.checkpoint or 'random init'} ({info['arch']}), "
        f"best epoch {res.best_epoch}/{cfg.epochs}, {res.seconds:.1f}s"
    )
    print(format_summary(results))
    for k, v in results.get("decoupled", {}).items():
        if k == "tau":
            print(f"tau-norm: best tau {v['best_tau']} top1 {v['best_top1']:.2f}")
        else:
            print(f"{k}: top1 {v['top1']:.2f}")
    print(f"wrote {out / 'results.json'}, {out / 'per_class.csv'}, {out / 'probe.pth'}")
    return 0


def _short(results: dict[str, Any]) -> dict[str, Any]:
    keys = ("top1", "top5", "many", "medium", "few", "balancedness", "best_epoch", "protocol")
    return {k: results[k] for k in keys if k in results}


def _headline(both: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in both.items() if k not in ("A", "B")}
    out["A"] = _short(both["A"])
    out["B"] = _short(both["B"])
    return out
