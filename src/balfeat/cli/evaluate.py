"""``balfeat evaluate``: recompute the metrics of a saved probe (other grouping, tau sweep)."""

from __future__ import annotations

import argparse

from balfeat.cli.argtypes import grouping_spec, path_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``balfeat evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="metrics of a saved probe (probe.pth): many/medium/few, balancedness, tau sweep",
        description=(
            "Re-evaluate the validation logits a `balfeat probe` run saved in probe.pth, e.g. "
            "with another many/medium/few grouping, other group counts or a tau-normalisation "
            "sweep; writes results.json and per_class.csv into PROBE_DIR/evaluate (or --out), "
            "never over what `balfeat probe` wrote."
        ),
    )
    p.add_argument(
        "probe",
        type=path_of("file_or_dir"),
        help="probe.pth, or the --out directory of `balfeat probe`",
    )
    p.add_argument(
        "--grouping",
        default="default",
        type=grouping_spec,
        help="default (>100/20-100/<20), reference (20 is few), thirds (by count rank, for "
        "small datasets) or MANY,FEW thresholds (default: default)",
    )
    p.add_argument(
        "--tau-sweep",
        action="store_true",
        help="also report tau-normalisation for tau = 0, 0.1, ..., 1 (needs features, so only "
        "the classifier weights are rescaled: logits are recomputed as W_tau W^+ logits; "
        "default: off)",
    )
    p.add_argument(
        "--group-counts",
        default=None,
        type=path_of("file"),
        help="many/medium/few by these per-class counts: the pre-training split file or a "
        "counts file, one integer per line (default: the counts the probe used)",
    )
    p.add_argument(
        "--out",
        default=None,
        type=path_of("out_dir"),
        help="output directory (default: PROBE_DIR/evaluate); the probe's own folder is refused, "
        "so its results.json (with the cRT/tau/LWS results) is never replaced",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the results an earlier evaluate wrote into the output directory (default: "
        "off: such a folder is refused)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; returns the exit code."""
    from balfeat.classify.evaluate import evaluate_saved_probe

    lines = evaluate_saved_probe(
        args.probe,
        out_dir=args.out,
        grouping=args.grouping,
        group_counts_file=args.group_counts,
        tau=args.tau_sweep,
        force=args.force,
    )
    for line in lines:
        print(line)
    return 0
