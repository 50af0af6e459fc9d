"""``balfeat pretrain``: learn a representation (SL, MoCo v1/v2, KCL) as a config describes.

Examples::

    R=configs/pretrain/imagenet-lt/kcl_resnet50_b256-cos-200e_imagenet-lt.yaml
    balfeat pretrain --config $R data.root=/data/imagenet/train run.output_dir=runs/kcl
    balfeat pretrain --config $R data.root=/data/imagenet/train run.output_dir=runs/kcl --resume
    torchrun --nproc_per_node 2 -m balfeat pretrain --config $R data.root=/data/imagenet/train
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from balfeat.cli.argtypes import path_of


def resume_target(text: str) -> str:
    """``--resume PATH``: a checkpoint file or a run folder (its last.pth). A ``key=value`` here is
    the first override that argparse took for the optional PATH; it is handed back to the
    overrides by :func:`run`."""
    if "=" in text and not Path(text).exists():
        return text
    return path_of("file_or_dir")(text)


resume_target.__dict__["balfeat_path"] = "file_or_dir"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``pretrain`` subcommand."""
    p = subparsers.add_parser(
        "pretrain",
        help="train a representation (sl, moco_v2, kcl, supcon, tsc, bcl, paco, ...) from YAML",
        description=(
            "Train a representation as the YAML config says; key=value overrides after the "
            "options change single settings (e.g. optim.base_lr=0.03 method.name=kcl). Works "
            "unchanged under `torchrun --nproc_per_node N -m balfeat pretrain ...`, where "
            "optim.batch_size stays the GLOBAL batch. Checkpoints, config.yaml and "
            "metrics.jsonl go to run.output_dir."
        ),
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        type=path_of("file"),
        help="YAML config (default: none, i.e. the built-in defaults); repeat to layer files, "
        "later ones override earlier ones",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        type=resume_target,
        help="continue a run (default: start fresh). Without PATH, from run.output_dir's "
        "last.pth (starting fresh if there is none, so a restarted job can always pass it); "
        "with PATH, from that checkpoint",
    )
    p.add_argument(
        "--show-config",
        action="store_true",
        help="print the resolved config as YAML and exit without training (default: off); "
        "with method.name=NAME it lists that method's own method.* keys and their defaults",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no info logging (default: off); use in batch jobs",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides with dotted keys, values in YAML syntax (default: none), "
        "e.g. optim.epochs=5 optim.milestones=[3,4] data.balanced=true",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``balfeat pretrain``; returns the exit code."""
    from balfeat import distributed
    from balfeat.engine.config import load_config
    from balfeat.engine.trainer import Trainer

    overrides = list(args.overrides)
    resume = args.resume
    if isinstance(resume, str) and "=" in resume and not Path(resume).exists():
        # ``--resume key=value``: argparse took the first override for the optional PATH.
        overrides.insert(0, resume)
        resume = True
    if args.quiet:
        overrides.append("run.progress=false")
    cfg = load_config(args.config, overrides)
    if args.show_config:
        import yaml

        from balfeat.engine.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    from balfeat.typed_config import check_paths

    check_paths(cfg)  # split files exist, run.output_dir can be written: before any work
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        summary = Trainer(cfg, resume=resume).fit()
        main_process = distributed.is_main_process()
    finally:
        distributed.destroy_distributed()
    if main_process:
        print(json.dumps(summary))
    return 0
