"""A probe's results into its trackers (``probe.tensorboard``, ``probe.wandb``).

``balfeat probe`` writes ``results.json`` first; then :func:`track_results` hands the numbers
that judge it (top-1/5, many/medium/few, mean class accuracy, balancedness, and the same of each
decoupled classifier or class set) as ``probe/<name>`` scalars at step 0, and the job as text
and as hyper-parameters, to the trackers of :func:`balfeat.engine.tracking.open_trackers` in the
probe's ``out`` folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from balfeat.engine.tracking import open_trackers, scalar_metrics

#: the results a probe hands to its trackers (as ``probe/<name>``), and its balancedness measures
#: (as ``probe/balancedness_<measure>``)
PROBE_METRICS = ("top1", "top5", "many", "medium", "few", "mean_class_accuracy")
BALANCEDNESS = ("group_std", "slope", "pearson")


def probe_scalars(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite :data:`PROBE_METRICS` and :data:`BALANCEDNESS` of a results dict, named
    ``prefix + name``; a ``decoupled`` entry adds each classifier's as ``<name>_<metric>``
    (tau-normalisation: those of the chosen tau)."""
    values = scalar_metrics(results, PROBE_METRICS)
    bal = scalar_metrics(results.get("balancedness") or {}, BALANCEDNESS)
    values.update({f"balancedness_{k}": v for k, v in bal.items()})
    for name, sub in (results.get("decoupled") or {}).items():
        if isinstance(sub, Mapping):
            values.update(probe_scalars(_chosen_row(sub), f"{name}_"))
    return {prefix + k: v for k, v in values.items()}


def _chosen_row(sub: Mapping[str, Any]) -> Mapping[str, Any]:
    """A decoupled classifier's results; for the tau sweep, the row of the chosen tau (nothing
    when none was chosen: ``select_on last``)."""
    if "sweep" not in sub:
        return sub
    return next((r for r in sub["sweep"] if r.get("tau") == sub.get("best_tau")), {})


def track_results(args: Any, values: Mapping[str, float]) -> None:
    """A probe's metrics into its own trackers (``args.out/tensorboard``, W&B): the job
    (``args``, a :class:`~balfeat.classify.job.ProbeOptions`) as text and hyper-parameters,
    ``values`` as ``probe/<name>`` scalars at step 0."""
    import yaml

    job = dataclasses.asdict(args)
    tracker = open_trackers(args.out, args.tensorboard, args.wandb, jsonl=False, where="probe")
    try:
        tracker.log_text("probe_job", yaml.safe_dump(job, sort_keys=False))
        tracker.log_hparams(job, [f"probe/{k}" for k in values])
        tracker.log_scalars(values, step=0, group="probe")
    finally:
        tracker.close()
