"""``balfeat export``: write a checkpoint's backbone as a torchvision or detectron2 file."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from balfeat.cli.argtypes import path_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``balfeat export``."""
    p = subparsers.add_parser(
        "export",
        help="export a learned backbone (torchvision state dict or detectron2 .pkl)",
        description=(
            "Read a checkpoint (balfeat, MoCo/BalFeat, supervised, classifier-balancing or "
            "torchvision) and write only its backbone, without classifier or projection head."
        ),
    )
    p.add_argument(
        "checkpoint",
        type=path_of("file_or_dir"),
        help="checkpoint file to export, or a `balfeat pretrain` run folder (its last.pth, as "
        "probe reads it)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=path_of("new_file"),
        help="output file (.pth for torchvision/backbone, .pkl for detectron2); an existing file "
        "is replaced only with --force, a training checkpoint never",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out (default: refuse); never replaces a training checkpoint",
    )
    p.add_argument(
        "--format",
        choices=("auto", "torchvision", "detectron2", "backbone"),
        default="auto",
        help="torchvision: state dict loadable into torchvision.models.resnetXX with only fc "
        "missing; detectron2: MoCo's converted .pkl for detection fine-tuning; both need a "
        "torchvision ResNet with the ImageNet stem and 3 channels. backbone: balfeat's backbone "
        "state dict for any backbone (small-image stem, CIFAR ResNets). auto (default): "
        "torchvision when the backbone is one, else backbone; the output line says which",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="expected architecture, checked against the file (default: not checked)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; returns the exit code."""
    from balfeat.engine.checkpoint import resolve_checkpoint
    from balfeat.engine.run_dir import folder_lock
    from balfeat.models.export import (
        check_export_target,
        export_backbone,
        export_detectron2,
        export_torchvision,
        torchvision_compatible,
    )
    from balfeat.models.loading import load_backbone_state

    args.checkpoint = str(
        resolve_checkpoint(args.checkpoint, option="CHECKPOINT")
    )  # a run folder: its newest checkpoint
    if args.format == "auto":
        check_export_target(args.out, args.checkpoint, args.force)
        _, found = load_backbone_state(args.checkpoint, args.backbone)
        why = torchvision_compatible(found)
        args.format = "torchvision" if why is None else "backbone"
        if why is not None:
            print(f"not a torchvision backbone ({why}); writing balfeat's backbone format")
    fn = {
        "torchvision": export_torchvision,
        "detectron2": export_detectron2,
        "backbone": export_backbone,
    }[args.format]
    # replacing a file (--force) holds its folder's lock; a new file needs none
    out = Path(args.out)
    guard = folder_lock(out.parent, "--out") if out.exists() else contextlib.nullcontext()
    with guard:
        info = fn(args.checkpoint, args.out, args.backbone, force=args.force)
    label = {
        "torchvision": "a torchvision state dict",
        "detectron2": "a detectron2 pickle",
        "backbone": f"a balfeat backbone state dict (build_backbone({info['arch']!r}, "
        f"small_images={info['small_images']}))",
    }[args.format]
    if str(info["arch"]).startswith("timm/"):
        name = str(info["arch"])[len("timm/") :]
        label = f"a timm state dict (timm.create_model({name!r}, num_classes=0), strict load)"
    print(
        f"exported {info['num_tensors']} tensors of {info['description']} "
        f"({info['format']} checkpoint) to {info['out']} as {label}"
    )
    return 0
