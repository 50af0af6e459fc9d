"""``balfeat export``: write a checkpoint's backbone as a torchvision or detectron2 file."""

from __future__ import annotations

import argparse


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
    p.add_argument("checkpoint", help="checkpoint file to export")
    p.add_argument("--out", required=True, help="output file (.pth for torchvision, .pkl)")
    p.add_argument(
        "--format",
        choices=("torchvision", "detectron2"),
        default="torchvision",
        help="torchvision: state dict loadable into torchvision.models.resnetXX with only fc "
        "missing (default); detectron2: MoCo's converted .pkl for detection fine-tuning",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="expected architecture, checked against the file (default: not checked)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; returns the exit code."""
    from balfeat.models.export import export_detectron2, export_torchvision

    fn = export_torchvision if args.format == "torchvision" else export_detectron2
    info = fn(args.checkpoint, args.out, args.backbone)
    print(
        f"exported {info['num_tensors']} tensors of {info['description']} "
        f"({info['format']} checkpoint) to {info['out']} as {args.format}"
    )
    return 0
