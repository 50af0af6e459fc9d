"""Training metrics on rank 0: one JSON line per record in ``metrics.jsonl`` plus TensorBoard.

TensorBoard is optional: without the ``tensorboard`` package only the JSON lines are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from balfeat.errors import ConfigError


class MetricsLog:
    """Appends records ``{"epoch", "step", <scalar>...}`` to ``DIR/metrics.jsonl`` and, when
    tensorboard is installed, to ``DIR/tensorboard`` as ``train/<name>`` scalars.

    Args:
        output_dir: the run directory (must exist).
        tensorboard: ``auto`` (when the package is installed), ``on`` (an error without it) or
            ``off`` (``run.tensorboard``).

    Raises:
        ConfigError: ``tensorboard="on"`` without the tensorboard package.
    """

    def __init__(self, output_dir: str | Path, tensorboard: str = "auto") -> None:
        self.output_dir = Path(output_dir)
        self._tb: Any = None
        if tensorboard == "off":
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))
        except ImportError:  # optional dependency: pip install 'balfeat[tensorboard]'
            if tensorboard == "on":
                raise ConfigError(
                    "run.tensorboard=on but the tensorboard package is not installed; "
                    "pip install 'balfeat[tensorboard]' or set run.tensorboard=auto"
                ) from None

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
