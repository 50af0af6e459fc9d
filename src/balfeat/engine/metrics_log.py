"""Training metrics on rank 0: one JSON line per record in ``metrics.jsonl`` plus TensorBoard.

TensorBoard is optional: without the ``tensorboard`` package only the JSON lines are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records ``{"epoch", "step", <scalar>...}`` to ``DIR/metrics.jsonl`` and, when
    tensorboard is installed, to ``DIR/tensorboard`` as ``train/<name>`` scalars.

    Args:
        output_dir: the run directory (must exist).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self._tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))
        except ImportError:  # optional dependency
            pass

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (``step`` is the TensorBoard x-axis)."""
        with open(self.output_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("epoch", "step"):
                    self._tb.add_scalar(f"train/{k}", v, record["step"])

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
