"""Run a probe job: the work behind ``balfeat probe`` (the CLI parses and calls this).

:func:`run_probe_job` takes a :class:`~balfeat.classify.job.ProbeOptions` (read by
``classify.job.load_probe_job`` from ``--config`` files, ``probe.key=value`` overrides and the
flags), builds the backbone from the checkpoint, the probe's datasets and groups, runs the
protocol (or the unseen-class protocol) and the decoupled variants, writes ``results.json``,
``per_class.csv`` and ``probe.pth`` into ``options.out``, and returns the summary lines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from balfeat.atomic import atomic_write_text
from balfeat.data import catalog
from balfeat.data.catalog import read_class_set_labels
from balfeat.data.datasets import FOLDER_SCAN, ArrayDataset, SplitImageDataset
from balfeat.data.folder_scan import scan_image_folder
from balfeat.data.imbalance import exponential_counts
from balfeat.data.splits import read_class_counts
from balfeat.engine.checkpoint import atomic_save, resolve_checkpoint
from balfeat.errors import ConfigError
from balfeat.models.backbones import build_backbone
from balfeat.models.loading import load_backbone_state, load_into_backbone

if TYPE_CHECKING:
    from torch.utils.data import Dataset


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
    args: Any, channels: int
) -> tuple[Dataset, Dataset, Dataset, int, list[str], np.ndarray]:
    """(train with augmentation, train without, validation, num_classes, class names, counts),
    of the dataset ``args.dataset`` of :mod:`balfeat.data.catalog`."""
    info = catalog.dataset_info(args.dataset)
    option = f"--dataset {args.dataset}"
    if info.layout == "arrays":  # fashion-mnist, or the whole (balanced) CIFAR train/test sets
        data = catalog.load_arrays(
            args.dataset, args.data_root, option=option, root_key="--data-root"
        )
        size = args.image_size or int(data.train_x.shape[1])
        aug, ev = build_probe_transforms(size, channels)
        names = list(data.class_names)
        tr_aug = ArrayDataset(data.train_x, data.train_y, aug, names)
        tr = ArrayDataset(data.train_x, data.train_y, ev, names)
        va = ArrayDataset(data.test_x, data.test_y, ev, names)
        counts = np.bincount(data.train_y, minlength=len(names))
        return tr_aug, tr, va, len(names), names, counts
    root = catalog.require_root(
        args.dataset,
        args.data_root,
        option=option,
        key="--data-root",
        what="the folder the training split is relative to; without --train-split, every image "
        "under it in the ImageFolder layout",
    )
    val_root = args.val_root or root
    train_split = args.train_split or scan_image_folder(root)
    val_split = args.val_split or scan_image_folder(val_root)
    train_src, val_src = FOLDER_SCAN.format(root), FOLDER_SCAN.format(val_root)
    size = args.image_size or info.image_size or 224
    aug, ev = build_probe_transforms(size, channels)
    s_aug = SplitImageDataset(root, train_split, aug, source=train_src)
    nc = s_aug.num_classes
    # as `balfeat pretrain`: labels must be 0..C-1 with images in every class
    counts = catalog.check_label_gaps(s_aug.targets, args.train_split or root)
    s_tr = SplitImageDataset(root, train_split, ev, num_classes=nc, source=train_src)
    s_va = SplitImageDataset(val_root, val_split, ev, num_classes=nc, source=val_src)
    catalog.check_same_classes(s_aug, s_va)
    names = [str(n) for n in s_aug.class_names]
    return s_aug, s_tr, s_va, nc, names, counts


def check_writable(out: Path) -> None:
    """Refuse an output folder that cannot be created or written, before any work."""
    from balfeat.errors import ConfigError
    from balfeat.typed_config import check_path

    check_path("--out", str(out), "out_dir")
    # permission bits do not tell (root, read-only or virtual file systems): really write
    trial = out / ".balfeat-write-check"
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        trial.write_bytes(b"")
        trial.unlink()
        for d in created:  # deepest first: leave nothing behind until results exist
            d.rmdir()
    except OSError as err:
        raise ConfigError(
            f"--out: cannot write into {str(out)!r} ({err.strerror or err}); choose another "
            "location"
        ) from None


def group_counts(args: Any, info: dict[str, Any], probe_counts: Any) -> tuple[Any, str]:
    """The counts that define many/medium/few, and where they come from (see --group-counts)."""
    n = len(probe_counts)
    if args.group_counts:
        counts = read_class_counts(args.group_counts, n, "--group-counts")
        return np.asarray(counts), f"--group-counts {args.group_counts}"
    data_cfg = (info.get("config") or {}).get("data", {})
    split = data_cfg.get("train_split")
    pretrained_on = catalog.CATALOG.get(str(data_cfg.get("dataset")))
    if pretrained_on is not None and pretrained_on.long_tailed_from:  # the protocol's counts
        ratio = float(data_cfg.get("imbalance_ratio", 1.0))
        # n_max: images per class of the (balanced) probe pool
        counts = exponential_counts(n, int(max(probe_counts)), ratio)
        return np.asarray(counts), f"pre-training set {data_cfg['dataset']} ratio {ratio:g}"
    if split and Path(split).is_file():
        counts = read_class_counts(split, n, "the checkpoint's data.train_split")
        return np.asarray(counts), f"pre-training split {split} (from checkpoint)"
    return np.asarray(probe_counts), "the probe's own training counts"


def check_channels(dataset: str, in_channels: int, checkpoint: str | None) -> None:
    """Refuse a backbone whose input channels do not match the dataset's images (a 1-channel
    Fashion-MNIST checkpoint would otherwise probe CIFAR in silently converted gray).

    Raises:
        ConfigError: naming both channel counts and the checkpoint.
    """
    want = catalog.dataset_info(dataset).channels
    if want is not None and want != in_channels:
        of = f" of {checkpoint!r}" if checkpoint else ""
        raise ConfigError(
            f"the backbone{of} takes {in_channels}-channel images but --dataset {dataset} has "
            f"{want}-channel images; probe it on the dataset it was trained for"
        )


def build_model(args: Any) -> tuple[Any, dict[str, Any]]:
    """The backbone (with the checkpoint's weights) and the loading info."""
    ckpt = str(resolve_checkpoint(args.checkpoint)) if args.checkpoint else args.checkpoint
    info: dict[str, Any] = {"checkpoint": ckpt}
    state = None
    if ckpt:
        state, info = load_backbone_state(ckpt, args.backbone or None)
        info["checkpoint"] = ckpt
    arch = args.backbone or info.get("arch")
    if arch is None:
        raise ConfigError(
            "cannot tell the architecture: pass --backbone (resnet18, resnet50, resnet20, ...)"
        )
    data = catalog.dataset_info(args.dataset)
    small = args.small_images
    if small is None:
        small = info.get("small_images")
    if small is None:
        small = data.small_images
    channels = info.get("in_channels") or data.channels or 3
    backbone = build_backbone(arch, small_images=bool(small), in_channels=int(channels))
    if state is not None:
        load_into_backbone(backbone, state, source=str(ckpt))
    info.update(arch=arch, small_images=bool(small), in_channels=int(channels))
    return backbone, info


def run_probe_job(args: Any) -> list[str]:
    """Run a probe from :class:`~balfeat.classify.job.ProbeOptions` (``args``); write its results
    into ``args.out`` and return the summary lines to print."""
    lines: list[str] = []
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
    milestones = tuple(args.milestones) if args.milestones else None
    if milestones and milestones[-1] >= args.epochs:
        raise ConfigError(
            f"--milestones {','.join(map(str, milestones))}: every milestone must be below "
            f"--epochs {args.epochs}"
        )
    out = Path(args.out)
    check_writable(out)  # before minutes of feature extraction, not after
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
    decoupled = list(args.decoupled)
    if decoupled and args.protocol != "fast":
        raise ConfigError("--decoupled runs on cached features: use it with --protocol fast")
    device = default_device(args.device)
    torch.manual_seed(args.seed)
    backbone, info = build_model(args)
    check_channels(args.dataset, int(info["in_channels"]), info.get("checkpoint"))
    backbone.to(device)
    tr_aug, tr, va, num_classes, names, probe_counts = load_datasets(args, info["in_channels"])
    counts, group_source = group_counts(args, info, probe_counts)
    train_ds = tr_aug if (args.protocol == "reference" or args.passes > 0) else tr
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    from balfeat.provenance import provenance

    meta = {
        "checkpoint": info.get("checkpoint"),
        "backbone": info["arch"],
        "small_images": info["small_images"],
        "format": info.get("format"),
        "dataset": args.dataset,
        "group_source": group_source,
        "probe_train_counts": [int(c) for c in probe_counts],
        "provenance": provenance(device=device, seed=args.seed),
        "probe_job": dataclasses.asdict(args),
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
        atomic_write_text(out / "unseen.json", json.dumps(_headline(both), indent=2) + "\n")
        for key in ("A", "B"):
            lines.append(f"== class set {key} ({len(both['classes_' + key])} classes)")
            lines.append(format_summary(both[key]))
        return lines

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
    atomic_save(
        {
            "classifier": res.classifier.state_dict(),
            "val_logits": res.val_logits,
            "val_labels": res.val_labels,
            "train_counts": torch.as_tensor(counts),
            "group_source": group_source,
            "class_names": names,
            "meta": meta,
            "config": cfg.as_dict(),
            "protocol": res.protocol,
            "best_epoch": res.best_epoch,
        },
        out / "probe.pth",
    )
    lines.append(
        f"{args.protocol} probe of {args.checkpoint or 'random init'} ({info['arch']}), "
        f"best epoch {res.best_epoch}/{cfg.epochs}, {res.seconds:.1f}s"
    )
    lines.append(format_summary(results))
    for k, v in results.get("decoupled", {}).items():
        if k == "tau":
            lines.append(f"tau-norm: best tau {v['best_tau']} top1 {v['best_top1']:.2f}")
        else:
            lines.append(f"{k}: top1 {v['top1']:.2f}")
    lines.append(f"wrote {out / 'results.json'}, {out / 'per_class.csv'}, {out / 'probe.pth'}")
    return lines


def _short(results: dict[str, Any]) -> dict[str, Any]:
    keys = ("top1", "top5", "many", "medium", "few", "balancedness", "best_epoch", "protocol")
    return {k: results[k] for k in keys if k in results}


def _headline(both: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in both.items() if k not in ("A", "B")}
    out["A"] = _short(both["A"])
    out["B"] = _short(both["B"])
    return out


def evaluate_saved_probe(
    probe: str,
    out_dir: str | None = None,
    grouping: str = "default",
    group_counts_file: str | None = None,
    tau: bool = False,
) -> list[str]:
    """``balfeat evaluate``: the metrics of a saved probe's validation logits, again.

    Args:
        probe: ``probe.pth`` or the probe's output folder.
        out_dir: where results go (default ``PROBE_DIR/evaluate``; the probe's own folder is
            refused so its results are never replaced).
        grouping: many/medium/few rule.
        group_counts_file: per-class counts (split or counts file) defining the groups
            (default: those the probe used).
        tau: add a tau-normalisation sweep.

    Returns:
        The summary lines to print.
    """
    import torch

    from balfeat.classify.decoupled import tau_sweep_from_logits
    from balfeat.errors import CheckpointError, ConfigError
    from balfeat.evaluation.metrics import evaluate, format_summary, write_results

    lines: list[str] = []
    path = Path(probe)
    if path.is_dir():
        path = path / "probe.pth"
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} does not exist; pass the probe.pth of a probe run")
    out = Path(out_dir) if out_dir else path.parent / "evaluate"
    if out.resolve() == path.parent.resolve():
        raise ConfigError(
            f"--out {str(out)!r} is the probe's own folder: evaluate would replace the "
            "probe's results.json (and its cRT/tau/LWS results); choose another --out"
        )
    try:  # a truncated or foreign file fails inside torch/pickle with many exception types
        saved = torch.load(path, map_location="cpu", weights_only=False)
        logits, labels = saved["val_logits"], saved["val_labels"]
        counts = saved["train_counts"]
    except Exception as err:
        raise CheckpointError(
            f"{str(path)!r} is not a readable balfeat probe.pth ({type(err).__name__}: {err}); "
            "pass the probe.pth a `balfeat probe` run wrote"
        ) from None
    source = saved.get("group_source", "the counts the probe used")
    if group_counts_file:
        counts = torch.as_tensor(
            read_class_counts(group_counts_file, len(counts), "--group-counts")
        )
        source = f"--group-counts {group_counts_file}"
    results = evaluate(
        logits.numpy(), labels.numpy(), counts.numpy(), saved.get("class_names"), grouping
    )
    results["group_source"] = source
    results.update(saved.get("meta", {}))
    results.update(
        protocol=saved.get("protocol"),
        best_epoch=saved.get("best_epoch"),
        config=saved.get("config"),
        probe=str(path),
    )
    if tau:
        results["tau"] = tau_sweep_from_logits(saved, grouping, counts.numpy())
    write_results(out, results)
    lines.append(format_summary(results))
    if tau:
        for row in results["tau"]["sweep"]:
            lines.append(f"tau {row['tau']:.1f}: top1 {row['top1']:.2f}")
    lines.append(f"wrote {out / 'results.json'}, {out / 'per_class.csv'}")
    return lines
