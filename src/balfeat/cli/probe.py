"""``balfeat probe``: linear probe (and decoupled classifiers) on a frozen learned backbone."""

from __future__ import annotations

import argparse
from typing import Any

from balfeat.cli.argtypes import (
    device_name,
    float_in,
    grouping_spec,
    int_in,
    int_list,
    path_of,
    subset_of,
)


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
        choices=("fashion-mnist", "cifar10", "cifar100", "imagenet"),
        default="fashion-mnist",
        help="fashion-mnist (embedded arrays), cifar10 / cifar100 (torchvision's folder layout "
        "under --data-root; the balanced train and test sets) or imagenet (split files + image "
        "folder) (default: fashion-mnist)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        type=path_of("dir"),
        help="fashion-mnist: folder with the IDX files (default: search the usual places); "
        "cifar10/cifar100: torchvision's root (required); imagenet: root the split paths are "
        "relative to (required)",
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
        "configs/probe/imagenet-lt/probe_kcl_resnet50_b256-cos-200e_imagenet-lt_on-lt.yaml "
        "(default: none); "
        "repeat to layer files, later ones win; flags given on the command line win over both",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="probe job overrides (default: none), e.g. probe.lr=10 probe.data_root=/data/train",
    )
    p.set_defaults(func=run)


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


def run_options(options: Any) -> int:
    """Run a probe job (:class:`~balfeat.classify.job.ProbeOptions`) and print its summary."""
    from balfeat.classify.runner import run_probe_job

    for line in run_probe_job(options):
        print(line)
    return 0
