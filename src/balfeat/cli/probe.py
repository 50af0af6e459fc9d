"""``balfeat probe``: linear probe (and decoupled classifiers) on a frozen learned backbone."""

from __future__ import annotations

import argparse
from typing import Any

from balfeat.classify.job import ProbeOptions
from balfeat.cli.argtypes import device_name, grouping_spec, path_of
from balfeat.cli.fieldflags import add_field_flags, flag_name

#: Parse-time checks of the fields whose type alone does not say what is valid.
FLAG_TYPES = {"device": device_name, "grouping": grouping_spec}


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
    # One flag per ProbeOptions field (type, range, help and default from its declaration);
    # only flags that are given override the --config files and key=value overrides.
    add_field_flags(p, ProbeOptions, types=FLAG_TYPES)
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
    from balfeat.classify.job import load_probe_job, validate_probe_job
    from balfeat.errors import ConfigError
    from balfeat.typed_config import check_paths, resolve_paths, set_key

    fields = set(ProbeOptions.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in fields}
    job = load_probe_job(list(args.config), list(args.overrides))
    for key, value in given.items():
        flag = flag_name(key) if key != "bias" else "--no-bias"
        set_key(job, f"probe.{key}", value, f"the command line ({flag})")
    resolve_paths(job)  # the flags' paths, as the files' and overrides' were at load
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
