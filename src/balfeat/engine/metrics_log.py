"""``metrics.jsonl``: the run's metrics as one JSON line per record, the tracker always on.

A :class:`balfeat.engine.tracking.Tracker`; TensorBoard and W&B sit beside it in
:class:`balfeat.engine.tracking.Trackers`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records ``{"epoch", "step", <scalar>...}`` to ``DIR/metrics.jsonl`` (the group of
    a scalar is not part of its key: ``loss``, ``knn_top1``).

    Args:
        output_dir: the run directory (must exist).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as it is."""
        with open(self.output_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(dict(record)) + "\n")

    def log_scalars(
        self, values: Mapping[str, float], step: int, epoch: int | None = None, group: str = "train"
    ) -> None:
        """Append ``{"epoch": epoch, "step": step, **values}`` (no ``epoch`` when None)."""
        head: dict[str, Any] = {} if epoch is None else {"epoch": epoch}
        self.write({**head, "step": step, **values})

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
        """Nothing: the resolved config is the run folder's ``config.yaml``."""

    def log_text(self, tag: str, text: str) -> None:
        """Nothing: texts belong to the richer trackers."""

    def close(self) -> None:
        """Nothing to flush: every line is written and closed at once."""
