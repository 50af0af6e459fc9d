"""``balfeat evaluate``: the metrics of a saved probe, again (other groups, a tau sweep).

The probe's ``probe.pth`` holds its validation logits, labels and the class counts it grouped
by; :func:`evaluate_saved_probe` recomputes the metrics from them without the backbone or data.
"""

from __future__ import annotations

from pathlib import Path

from balfeat.data.splits import read_class_counts


def evaluate_saved_probe(
    probe: str,
    *,
    out_dir: str | None = None,
    grouping: str = "default",
    group_counts_file: str | None = None,
    tau: bool = False,
    force: bool = False,
) -> list[str]:
    """``balfeat evaluate``: the metrics of a saved probe's validation logits, again.

    Args:
        probe: ``probe.pth`` or the probe's output folder.
        out_dir: where results go (default ``PROBE_DIR/evaluate``; the probe's own folder is
            refused so its results are never replaced).
        grouping: many/medium/few rule.
        group_counts_file: per-class counts (split or counts file) defining the groups
            (default: those the probe used: the checkpoint's training counts when it carries
            them).
        tau: add a tau-normalisation sweep.
        force: replace the results an earlier evaluate wrote into ``out_dir`` (refused
            without it). The folder is locked while it is written.

    Returns:
        The summary lines to print.
    """
    import torch

    from balfeat.classify.decoupled import tau_sweep_from_logits
    from balfeat.classify.selection import SELECTED_ON_TEST
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
        # the saved logits are the evaluation list's: a best tau read off them is chosen on test
        results["tau"]["best_tau_label"] = SELECTED_ON_TEST
    from balfeat.engine.run_dir import claim_outputs, folder_lock

    with folder_lock(out, "--out"):
        claim_outputs(out, ("results.json", "per_class.csv"), force, "--out")
        write_results(out, results)
    lines.append(f"groups from {source}")
    lines.append(format_summary(results))
    if tau:
        for row in results["tau"]["sweep"]:
            lines.append(f"tau {row['tau']:.1f}: top1 {row['top1']:.2f}")
    lines.append(f"wrote {out / 'results.json'}, {out / 'per_class.csv'}")
    return lines
