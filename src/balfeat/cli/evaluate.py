"""``balfeat evaluate``: recompute the metrics of a saved probe (other grouping, tau sweep)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; returns the exit code."""
    import torch

    from balfeat.cli.probe import read_counts
    from balfeat.errors import CheckpointError, ConfigError
    from balfeat.evaluation.metrics import evaluate, format_summary, write_results

    path = Path(args.probe)
    if path.is_dir():
        path = path / "probe.pth"
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} does not exist; pass the probe.pth of a probe run")
    out = Path(args.out) if args.out else path.parent / "evaluate"
    if out.resolve() == path.parent.resolve():
        raise ConfigError(
            f"--out {str(out)!r} is the probe's own folder: evaluate would replace the "
            "probe's results.json (and its cRT/tau/LWS results); choose another --out"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        logits, labels = saved["val_logits"], saved["val_labels"]
        counts = saved["train_counts"]
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{str(path)!r} is not a balfeat probe.pth ({err})") from None
    source = saved.get("group_source", "the counts the probe used")
    if args.group_counts:
        counts = torch.as_tensor(read_counts(args.group_counts, len(counts)))
        source = f"--group-counts {args.group_counts}"
    results = evaluate(
        logits.numpy(), labels.numpy(), counts.numpy(), saved.get("class_names"), args.grouping
    )
    results["group_source"] = source
    results.update(saved.get("meta", {}))
    results.update(
        protocol=saved.get("protocol"),
        best_epoch=saved.get("best_epoch"),
        config=saved.get("config"),
        probe=str(path),
    )
    if args.tau_sweep:
        results["tau"] = _tau_sweep_from_logits(saved, args.grouping, counts.numpy())
    write_results(out, results)
    print(format_summary(results))
    if args.tau_sweep:
        for row in results["tau"]["sweep"]:
            print(f"tau {row['tau']:.1f}: top1 {row['top1']:.2f}")
    print(f"wrote {out / 'results.json'}, {out / 'per_class.csv'}")
    return 0


def _tau_sweep_from_logits(saved: dict[str, Any], grouping: str, counts: Any) -> dict[str, Any]:
    """Tau sweep from saved logits: features are recovered as the least-squares preimage."""
    import torch
    from torch import nn

    from balfeat.classify.decoupled import tau_sweep

    state = saved["classifier"]
    w = state["weight"]
    b = state.get("bias")
    fc = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    fc.load_state_dict(state)
    z = saved["val_logits"] - (b if b is not None else 0)
    # x = W^+ z reproduces the logits exactly when D >= C (the usual case)
    x = z @ torch.linalg.pinv(w).T
    return tau_sweep(fc, x, saved["val_labels"], counts, grouping=grouping)
