"""Run a probe job: the work behind ``balfeat probe`` (the CLI parses and calls this).

:func:`run_probe_job` takes a :class:`~balfeat.classify.job.ProbeOptions` (read by
``classify.job.load_probe_job`` from ``--config`` files, ``probe.key=value`` overrides and the
flags), builds the backbone from the checkpoint, the probe's datasets and groups, runs the
protocol (or the unseen-class protocol) and the decoupled variants, writes ``results.json``,
``per_class.csv`` and ``probe.pth`` into ``options.out``, and returns the summary lines.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from balfeat.atomic import atomic_write_text
from balfeat.classify.probe_tracking import probe_scalars, track_results
from balfeat.data import catalog
from balfeat.data.catalog import read_class_set_labels
from balfeat.data.datasets import FOLDER_SCAN, ArrayDataset, SplitImageDataset
from balfeat.data.folder_scan import scan_image_folder
from balfeat.data.imbalance import exponential_counts
from balfeat.data.splits import read_class_counts
from balfeat.engine.checkpoint import atomic_save, resolve_checkpoint
from balfeat.errors import ConfigError, DataError
from balfeat.models.backbones import build_backbone
from balfeat.models.loading import load_backbone_state, load_into_backbone

if TYPE_CHECKING:
    from torch.utils.data import Dataset


def build_probe_transforms(
    image_size: int, channels: int, augmentation: str = "supervised"
) -> tuple[Any, Any]:
    """(train, eval) transforms of the linear probe.

    Training uses ``balfeat.data.transforms``' ``augmentation`` transform: ``"supervised"``
    (RandomResizedCrop + horizontal flip, MoCo's linear protocol) or ``"longtail"`` (the same +
    ColorJitter(0.4, 0.4, 0.4, 0), the TSC authors' ImageNet-LT second stage); evaluation its
    ``"eval"`` transform.
    """
    from balfeat.data.transforms import build_transform

    return (
        build_transform(augmentation, image_size, channels),
        build_transform("eval", image_size, channels),
    )


#: A probe reads every listed image (it has no option to skip one): what its error advises.
PROBE_BAD_IMAGE_HINT = (
    "remove its line from the split file (a probe reads every image it lists; without "
    "--train-split/--val-split, move the file out of the folder)"
)


def stage(what: str) -> None:
    """One status line per stage on stderr, also with ``--quiet`` (which drops only progress
    bars and per-epoch lines): a long probe is never silent."""
    print(f"probe: {what}", file=sys.stderr, flush=True)


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
        aug, ev = build_probe_transforms(size, channels, args.train_augmentation)
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
    aug, ev = build_probe_transforms(size, channels, args.train_augmentation)
    hint = PROBE_BAD_IMAGE_HINT
    s_aug = SplitImageDataset(root, train_split, aug, source=train_src, bad_image_hint=hint)
    nc = s_aug.num_classes
    # as `balfeat pretrain`: labels must be 0..C-1 with images in every class
    counts = catalog.check_label_gaps(s_aug.targets, args.train_split or root)
    s_tr = SplitImageDataset(
        root, train_split, ev, num_classes=nc, source=train_src, bad_image_hint=hint
    )
    s_va = SplitImageDataset(
        val_root, val_split, ev, num_classes=nc, source=val_src, bad_image_hint=hint
    )
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


def group_counts(
    args: Any, info: dict[str, Any], probe_counts: Any, names: list[str] | None = None
) -> tuple[Any, str]:
    """The counts that define many/medium/few, and where they come from (see --group-counts)."""
    n = len(probe_counts)
    if args.group_counts:
        counts = read_class_counts(args.group_counts, n, "--group-counts")
        return np.asarray(counts), f"--group-counts {args.group_counts}"
    from balfeat.engine.train_counts import checkpoint_counts

    stored, said = checkpoint_counts(info, n, names)  # what the checkpoint trained on, exactly
    if stored is not None:
        return stored, said
    data_cfg = (info.get("config") or {}).get("data", {})
    split = data_cfg.get("train_split")
    pretrained_on = catalog.CATALOG.get(str(data_cfg.get("dataset")))
    if pretrained_on is not None and pretrained_on.long_tailed_from:  # the protocol's counts
        ratio = float(data_cfg.get("imbalance_ratio", 1.0))
        # n_max: images per class of the (balanced) probe pool
        counts = exponential_counts(n, int(max(probe_counts)), ratio)
        return np.asarray(counts), f"pre-training set {data_cfg['dataset']} ratio {ratio:g}"
    if split:  # never a silent fallback to the probe's counts: many/medium/few would change
        if not Path(split).is_file():
            raise DataError(
                f"the checkpoint's data.train_split {split!r} (the pre-training split that "
                "defines many/medium/few) does not exist here; pass --group-counts with that "
                "split file or a counts file"
            )
        counts = read_class_counts(split, n, "the checkpoint's data.train_split")
        return np.asarray(counts), f"pre-training split {split} (from checkpoint)"
    why_not = said if info.get("checkpoint") else "no checkpoint (random initialisation)"
    return np.asarray(probe_counts), (
        f"the probe's own training counts: {why_not}; pass --group-counts PRETRAIN_SPLIT (the "
        "pre-training split or a counts file) to group by pre-training frequency"
    )


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
    backbone = build_backbone(
        arch,
        small_images=bool(small),
        in_channels=int(channels),
        image_size=info.get("image_size") or args.image_size,
    )
    if state is not None:
        load_into_backbone(backbone, state, source=str(ckpt))
    info.update(arch=arch, small_images=bool(small), in_channels=int(channels))
    return backbone, info


#: What a probe writes into its ``--out`` (and ``evaluate/``, made from its ``probe.pth``).
PROBE_OUTPUTS = (
    "results.json",
    "per_class.csv",
    "probe.pth",
    "unseen.json",
    "A",
    "B",
    "evaluate",
    "tensorboard",
)


def run_probe_job(args: Any) -> list[str]:
    """Run a probe from :class:`~balfeat.classify.job.ProbeOptions` (``args``); write its results
    into ``args.out`` and return the summary lines to print.

    The folder is locked while the probe runs; an earlier probe's results in it are refused, or
    deleted with ``args.force`` (:data:`PROBE_OUTPUTS`), so it never holds results of two runs.
    """
    from balfeat.engine.run_dir import claim_outputs, folder_lock
    from balfeat.engine.tracking import check_trackers

    args.check("probe.")  # relations between values, as the job loader checks them
    out = Path(args.out)
    check_writable(out)  # before minutes of feature extraction, not after
    check_trackers(args.tensorboard, args.wandb, where="probe")
    with folder_lock(out, "--out"):
        claim_outputs(out, PROBE_OUTPUTS, bool(args.force), "--out")
        return _probe_into(args, out)


def _probe_into(args: Any, out: Path) -> list[str]:
    import torch

    from balfeat.classify.probe import probe_decoupled, probe_summary, run_probe
    from balfeat.classify.selection import evaluate_on_test, kept_epoch, prepare_selection
    from balfeat.device import default_device
    from balfeat.evaluation.metrics import parse_grouping, write_results
    from balfeat.provenance import provenance

    grouping = parse_grouping(args.grouping)
    cfg = args.linear_config()
    device = default_device(args.device)
    torch.manual_seed(args.seed)
    stage("loading the backbone")
    backbone, info = build_model(args)
    check_channels(args.dataset, int(info["in_channels"]), info.get("checkpoint"))
    backbone.to(device)
    stage(f"reading {args.dataset}")
    tr_aug, tr, va, num_classes, names, probe_counts = load_datasets(args, info["in_channels"])
    tr_aug, tr, probe_counts = long_tailed_train(args, tr_aug, tr, probe_counts)
    counts, group_source = group_counts(args, info, probe_counts, names)
    train_ds = tr_aug if (args.protocol == "reference" or args.passes > 0) else tr
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
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
    how = {
        "protocol": args.protocol,
        "device": device,
        "passes": args.passes,
        "num_workers": args.workers,
        "log": log,
    }
    if args.class_set:
        sets = (train_ds, tr, va)
        return _run_unseen(args, backbone, sets, names, cfg, how, grouping, meta)

    sel = prepare_selection(args, train_ds, tr, va)  # where the choices are made (select_on)
    keep = kept_epoch(args.select_on)
    first = ", features extracted first" if args.protocol == "fast" else ""
    stage(
        f"training the classifier ({args.protocol} protocol{first}, {cfg.epochs} epochs, "
        f"{len(sel.train)} images)"
    )
    res = run_probe(backbone, sel.train, sel.select, num_classes, cfg, keep=keep, **how)
    if sel.separate:  # chosen on the selection split: measure on the evaluation list
        stage("evaluating the chosen classifier on the test list")
        evaluate_on_test(res, backbone, va, device, args.workers)
    results = probe_summary(res, counts, class_names=names, grouping=grouping, cfg=cfg)
    results.update(meta)
    if args.decoupled:
        stage(f"decoupled classifiers: {', '.join(args.decoupled)}")
        results["decoupled"] = probe_decoupled(
            backbone, sel.plain, sel.select, res, cfg, methods=args.decoupled, counts=counts,
            names=names, grouping=grouping, device=device, num_workers=args.workers,
            test_dataset=va, keep=keep,
        )  # fmt: skip
    results["selection"] = sel.record  # what was chosen, on which images (label only on test)
    stage(f"writing {out}")
    write_results(out, results)
    track_results(args, probe_scalars(results))
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
    return _summary_lines(args, info, res, results, epochs=cfg.epochs)


def _run_unseen(
    args: Any,
    backbone: Any,
    sets: tuple[Any, Any, Any],
    names: list[str],
    cfg: Any,
    how: dict[str, Any],
    grouping: Any,
    meta: dict[str, Any],
) -> list[str]:
    """The unseen-class protocol of ``--class-set``: set A and its complement B, each probed."""
    from balfeat.classify.probe import probe_unseen, short_summary
    from balfeat.classify.selection import kept_epoch, prepare_selection
    from balfeat.evaluation.metrics import format_summary, write_results

    out = Path(args.out)
    a = read_class_set_labels(args.class_set, names)
    train_ds, tr, va = sets  # training (augmented where the protocol augments), plain, test
    sel = prepare_selection(args, train_ds, tr, va)
    stage(f"training the classifiers of class set A ({len(a)} classes) and of its complement B")
    both = probe_unseen(
        backbone, sel.train, va, a, cfg, grouping=grouping, class_names=names,
        select_dataset=sel.select if sel.separate else None,
        keep=kept_epoch(args.select_on), **how,
    )  # fmt: skip
    both.update(meta)
    both["selection"] = sel.record
    stage(f"writing {out}")
    write_results(out / "A", both["A"])
    write_results(out / "B", both["B"])
    track_results(args, {**probe_scalars(both["A"], "A_"), **probe_scalars(both["B"], "B_")})
    headline = {k: v for k, v in both.items() if k not in ("A", "B")}
    headline.update(A=short_summary(both["A"]), B=short_summary(both["B"]))
    atomic_write_text(out / "unseen.json", json.dumps(headline, indent=2) + "\n")
    lines: list[str] = []
    for key in ("A", "B"):
        lines.append(f"== class set {key} ({len(both['classes_' + key])} classes)")
        lines.append(format_summary(both[key]))
    return lines


def _summary_lines(
    args: Any, info: dict[str, Any], res: Any, results: dict[str, Any], *, epochs: int
) -> list[str]:
    from balfeat.classify.selection import choice_label
    from balfeat.evaluation.metrics import format_summary

    out = Path(args.out)
    said = choice_label(args.select_on)  # the test label only where the choice was made on test
    kept = "last epoch" if args.select_on == "last" else "best epoch"
    lines = [
        f"{args.protocol} probe of {args.checkpoint or 'random init'} ({info['arch']}), "
        f"{kept} {res.best_epoch}/{epochs} ({said}), {res.seconds:.1f}s",
        f"groups from {results['group_source']}",
        format_summary(results),
    ]
    for k, v in results.get("decoupled", {}).items():
        if k == "tau" and v["best_tau"] is None:
            tops = ", ".join(f"{r['tau']:g}: {r['top1']:.2f}" for r in v["sweep"])
            lines.append(f"tau-norm sweep (no tau chosen), top1 by tau: {tops}")
        elif k == "tau":
            lines.append(f"tau-norm: tau {v['best_tau']} top1 {v['best_top1']:.2f} ({said})")
        else:
            lines.append(f"{k}: top1 {v['top1']:.2f} ({kept} {said})")
    lines.append(f"wrote {out / 'results.json'}, {out / 'per_class.csv'}, {out / 'probe.pth'}")
    return lines


def long_tailed_train(
    args: Any, tr_aug: Dataset, tr: Dataset, counts: np.ndarray
) -> tuple[Dataset, Dataset, np.ndarray]:
    """The probe's training sets cut to the long-tailed subset of ``args.train_imbalance_ratio``
    (:func:`balfeat.data.cifar_lt.lt_indices`, the LDAM-DRW protocol that makes pre-training's
    cifar10-lt / cifar100-lt), as TSC's CIFAR-LT second stage trains; unchanged without one."""
    ratio = getattr(args, "train_imbalance_ratio", None)
    if ratio is None:
        return tr_aug, tr, counts
    import numpy as np

    from balfeat.data.cifar_lt import lt_indices
    from balfeat.data.datasets import ArrayDataset
    from balfeat.errors import ConfigError

    if not (isinstance(tr_aug, ArrayDataset) and isinstance(tr, ArrayDataset)):
        raise ConfigError(
            f"probe.train_imbalance_ratio cuts an in-memory CIFAR training set, not {args.dataset}"
        )
    keep = lt_indices(tr.targets, ratio)
    names = list(tr.class_names)
    cut_aug = ArrayDataset(tr_aug.images[keep], tr_aug.targets[keep], tr_aug.transform, names)
    cut = ArrayDataset(tr.images[keep], tr.targets[keep], tr.transform, names)
    return cut_aug, cut, np.bincount(cut.targets, minlength=len(counts))
