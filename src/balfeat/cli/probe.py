"""``balfeat probe``: linear probe (and decoupled classifiers) on a frozen learned backbone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balfeat.cli.argtypes import (
    device_name,
    float_in,
    grouping_spec,
    int_in,
    int_list,
    path_of,
    subset_of,
)

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
        type=path_of("file_or_dir"),
        help="weights to probe (default: none = random init, a baseline): a checkpoint in any "
        "format `balfeat export` reads, or a `balfeat pretrain` run folder (its last.pth)",
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
        type=path_of("dir"),
        help="fashion-mnist: folder with the IDX files (default: search the usual places); "
        "imagenet: root the split paths are relative to (required)",
    )
    p.add_argument(
        "--train-split",
        default=None,
        type=path_of("file"),
        help="imagenet: split file of the probe's training images, e.g. ImageNet_LT_train.txt "
        "(required for imagenet)",
    )
    p.add_argument(
        "--val-split",
        default=None,
        type=path_of("file"),
        help="imagenet: split file the probe is evaluated on, e.g. ImageNet_LT_test.txt",
    )
    p.add_argument(
        "--val-root",
        default=None,
        type=path_of("dir"),
        help="imagenet: the folder --val-split is relative to (default: --data-root). The "
        "reference's train lists are relative to ImageNet train/ and the test list to the "
        "ImageNet root: pass --data-root IMAGENET/train --val-root IMAGENET",
    )
    p.add_argument(
        "--group-counts",
        default=None,
        type=path_of("file"),
        help="many/medium/few by these per-class counts, as the paper groups by PRE-TRAINING "
        "frequency: the pre-training split file ('path label' lines) or a counts file (one "
        "integer per line, class order). Default: the training split named in the "
        "checkpoint's config when it exists, else the probe's own training counts (which are "
        "balanced for a balanced probe: medium/few are then empty)",
    )
    p.add_argument(
        "--image-size",
        type=int_in(ge=8),
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
        type=int_in(ge=0),
        default=0,
        help="fast protocol: augmented feature passes over the training set, epoch e trains on "
        "pass e mod N (default 5: the fewest within 1 point of the reference protocol on a "
        "trained backbone in benchmarks/bench_probe.py); 0 = one un-augmented pass",
    )
    p.add_argument("--epochs", type=int_in(ge=1), default=100, help="training epochs (default 100)")
    p.add_argument(
        "--lr",
        type=float_in(gt=0),
        default=30.0,
        help="learning rate (default 30, MoCo's; use ~0.1-1 for features of a supervised "
        "backbone or normalised features)",
    )
    p.add_argument(
        "--milestones",
        default=None,
        type=int_list(ge=1, increasing=True),
        help="comma-separated epochs where the lr drops 10x (default: 60%%,80%% of --epochs)",
    )
    p.add_argument(
        "--weight-decay", type=float_in(ge=0), default=0.0, help="weight decay (default 0)"
    )
    p.add_argument("--batch-size", type=int_in(ge=1), default=256, help="batch size (default 256)")
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
        type=int_in(ge=1),
        default=1,
        help="balanced sampling: images drawn per picked class (default 1)",
    )
    p.add_argument(
        "--decoupled",
        default=[],
        type=subset_of(("crt", "tau", "lws")),
        help="fast protocol: also run these decoupled classifiers on the cached features, "
        "comma-separated from crt,tau,lws (default: none)",
    )
    p.add_argument(
        "--grouping",
        default="default",
        type=grouping_spec,
        help="many/medium/few grouping: default (>100/20-100/<20), reference (20 is few), "
        "thirds (by count rank, for small datasets) or MANY,FEW thresholds (default: default)",
    )
    p.add_argument(
        "--class-set",
        default=None,
        type=path_of("file"),
        help="unseen-class protocol: a class-set file (set A, one class per line: a label, a "
        "class name or /wnid); probes A and its complement B separately (default: off)",
    )
    p.add_argument(
        "--device",
        default="auto",
        type=device_name,
        help="auto, cpu, cuda or cuda:N (default: auto = GPU if any)",
    )
    p.add_argument(
        "--workers",
        type=int_in(ge=0),
        default=0,
        help="data loading workers (default 0; ~8 on imagenet)",
    )
    p.add_argument(
        "--seed", type=int_in(ge=0), default=0, help="seed of init and sampling (default 0)"
    )
    p.add_argument(
        "--out",
        required=True,
        type=path_of("out_dir"),
        help="output directory (created; checked writable before any work)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no per-epoch lines (default: show them)",
    )
    # Every flag above sets the ProbeJob field of the same name; only flags that are given
    # override the --config files and key=value overrides (defaults live in ProbeOptions).
    for action in p._actions:
        if action.dest not in ("help",):
            action.default = argparse.SUPPRESS
            action.required = False
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        type=path_of("file"),
        help="probe job YAML with a `probe:` mapping (balfeat.classify.job.ProbeOptions), e.g. "
        "configs/probe_kcl_resnet50_b256-cos-200e_imagenet-lt_on-lt.yaml (default: none); "
        "repeat to layer files, later ones win; flags given on the command line win over both",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="probe job overrides (default: none), e.g. probe.lr=10 probe.data_root=/data/train",
    )
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
    args: Any, channels: int
) -> tuple[Dataset, Dataset, Dataset, int, list[str], np.ndarray]:
    """(train with augmentation, train without, validation, num_classes, class names, counts)."""
    import numpy as np

    from balfeat.errors import DataError

    if args.dataset == "fashion-mnist":
        from balfeat.data.datasets import ArrayDataset
        from balfeat.data.sources import load_fashion_mnist

        data = load_fashion_mnist(args.data_root or None)
        size = args.image_size or 28
        aug, ev = build_probe_transforms(size, channels)
        names = list(data.class_names)
        tr_aug = ArrayDataset(data.train_x, data.train_y, aug, names)
        tr = ArrayDataset(data.train_x, data.train_y, ev, names)
        va = ArrayDataset(data.test_x, data.test_y, ev, names)
        counts = np.bincount(data.train_y, minlength=len(names))
        return tr_aug, tr, va, len(names), names, counts
    if not args.data_root:
        raise DataError(
            "--dataset imagenet needs --data-root (the folder the training split is relative "
            "to; without --train-split, every image under it in the ImageFolder layout)"
        )
    from balfeat.data.datasets import SplitImageDataset
    from balfeat.data.splits import scan_image_folder

    val_root = args.val_root or args.data_root
    train_split = args.train_split or scan_image_folder(args.data_root)
    val_split = args.val_split or scan_image_folder(val_root)
    size = args.image_size or 224
    aug, ev = build_probe_transforms(size, channels)
    s_aug = SplitImageDataset(args.data_root, train_split, aug)
    nc = s_aug.num_classes
    counts = np.bincount(s_aug.targets, minlength=nc)
    gaps = np.flatnonzero(counts == 0)
    if len(gaps):  # as `balfeat pretrain`: labels must be 0..C-1 with images in every class
        raise DataError(
            f"{args.train_split or args.data_root}: label {nc - 1} makes {nc} classes, but "
            "class(es) "
            f"{', '.join(str(int(c)) for c in gaps[:10])}{' ...' if len(gaps) > 10 else ''} "
            "have no images; labels must be 0..C-1 with images in every class - renumber the "
            "labels or fix the wrong one"
        )
    s_tr = SplitImageDataset(args.data_root, train_split, ev, num_classes=nc)
    s_va = SplitImageDataset(val_root, val_split, ev, num_classes=nc)
    names = [str(n) for n in s_aug.class_names]
    return s_aug, s_tr, s_va, nc, names, counts


def read_class_set_labels(path: str, class_names: list[str]) -> list[int]:
    """Labels of a class-set file: each line a label, a class name, or ``/wnid``."""
    from balfeat.data.splits import read_class_set
    from balfeat.errors import SplitFormatError

    labels: list[int] = []
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    # read_class_set skips a BOM, blank lines and # comments, as every split reader does
    for lineno, item in enumerate(read_class_set(path), 1):
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


def resolve_checkpoint(path: str | None) -> str | None:
    """``--checkpoint``: a run folder means its newest checkpoint (``last.pth``)."""
    if not path or not Path(path).is_dir():
        return path
    from balfeat.engine.checkpoint import find_last_checkpoint
    from balfeat.errors import CheckpointError

    found = find_last_checkpoint(Path(path))
    if found is None:
        raise CheckpointError(f"--checkpoint {path!r}: the folder holds no checkpoint (last.pth)")
    return str(found)


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


def read_counts(path: str, num_classes: int) -> list[int]:
    """Per-class counts from a split file (``path label`` lines) or a counts file (one integer
    per line, class order).

    Raises:
        DataError: neither form, or not ``num_classes`` classes.
    """
    import numpy as np

    from balfeat.errors import BalfeatError, DataError

    text = Path(path).read_text(encoding="utf-8-sig")  # a BOM, blank lines, # comments skipped
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if lines and all(ln.isdigit() for ln in lines):
        counts = [int(v) for v in lines]
    else:
        from balfeat.data.splits import read_split

        try:
            labels = np.array([e.label for e in read_split(path)], dtype=np.int64)
        except BalfeatError as err:
            raise DataError(
                f"--group-counts {path!r} is neither a split file ('path label' lines) nor a "
                f"counts file (one integer per line): {err}"
            ) from None
        counts = np.bincount(labels, minlength=num_classes).tolist()
    if len(counts) != num_classes:
        raise DataError(
            f"--group-counts {path!r} gives {len(counts)} classes, the probe has {num_classes}"
        )
    return [int(c) for c in counts]


def group_counts(
    args: argparse.Namespace, info: dict[str, Any], probe_counts: Any
) -> tuple[Any, str]:
    """The counts that define many/medium/few, and where they come from (see --group-counts)."""
    import numpy as np

    n = len(probe_counts)
    if args.group_counts:
        return np.asarray(read_counts(args.group_counts, n)), f"--group-counts {args.group_counts}"
    split = (info.get("config") or {}).get("data", {}).get("train_split")
    if split and Path(split).is_file():
        return np.asarray(read_counts(split, n)), f"pre-training split {split} (from checkpoint)"
    return np.asarray(probe_counts), "the probe's own training counts"


def build_model(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The backbone (with the checkpoint's weights) and the loading info."""
    from balfeat.errors import ConfigError
    from balfeat.models.backbones import build_backbone
    from balfeat.models.loading import load_backbone_state, load_into_backbone

    ckpt = resolve_checkpoint(args.checkpoint)
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
    small = args.small_images
    if small is None:
        small = info.get("small_images")
    if small is None:
        small = args.dataset == "fashion-mnist"
    channels = info.get("in_channels") or (1 if args.dataset == "fashion-mnist" else 3)
    backbone = build_backbone(arch, small_images=bool(small), in_channels=int(channels))
    if state is not None:
        load_into_backbone(backbone, state, source=str(ckpt))
    info.update(arch=arch, small_images=bool(small), in_channels=int(channels))
    return backbone, info


def job_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~balfeat.classify.job.ProbeOptions` of a command line: defaults, --config
    files, key=value overrides, then the flags that were given (checked as config keys are)."""
    from balfeat.classify.job import ProbeOptions, load_probe_job, validate_probe_job
    from balfeat.errors import ConfigError
    from balfeat.typed_config import check_paths, set_key

    fields = set(ProbeOptions.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in fields}
    job = load_probe_job(list(args.config), list(args.overrides))
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        set_key(job, f"probe.{key}", value, f"the command line ({flag})")
    validate_probe_job(job)
    check_paths(job)
    if not job.probe.out:
        raise ConfigError("no output folder: pass --out DIR (or probe.out in the --config file)")
    return job.probe


def run(args: argparse.Namespace) -> int:
    """Run the probe job of a command line; returns the exit code."""
    return run_options(job_from_args(args))


def run_options(args: Any) -> int:
    """Run a probe from :class:`~balfeat.classify.job.ProbeOptions`; returns the exit code."""
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
            "group_source": group_source,
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
