"""Experiment tracking: one writer interface behind metrics.jsonl, TensorBoard and W&B.

The trainer (through :class:`RunTracker`) and ``balfeat probe`` talk to one :class:`Tracker`
(a :class:`Trackers` fan-out built by :func:`open_trackers`); each backend turns the same four
calls into its own files:

- ``metrics.jsonl`` (:class:`balfeat.engine.metrics_log.MetricsLog`): one JSON line per
  :meth:`~Tracker.log_scalars` call;
- TensorBoard (:class:`TensorBoardTracker`, ``pip install 'balfeat[tensorboard]'``): scalars as
  ``GROUP/NAME``, the resolved config as text and as hyper-parameters (the HPARAMS tab);
- Weights & Biases (:class:`WandbTracker`, ``pip install 'balfeat[wandb]'``): the same scalars,
  the config as the run's config and its text in the run summary. ``WANDB_MODE=offline`` keeps
  the run on disk (``wandb sync`` uploads it later).

Trackers write on rank 0 only; the callers open them there.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from balfeat.errors import ConfigError

if TYPE_CHECKING:
    from balfeat.engine.config import Config

log = logging.getLogger("balfeat.engine")

TENSORBOARD_HINT = "pip install 'balfeat[tensorboard]'"
WANDB_HINT = "pip install 'balfeat[wandb]'"
#: characters W&B refuses in a project name
WANDB_FORBIDDEN = "/\\#?%:"

#: set once ``run.tensorboard=auto`` has said that it found no tensorboard package
_said_no_tensorboard = False


class Tracker(Protocol):
    """What every tracking backend does."""

    def log_scalars(
        self, values: Mapping[str, float], step: int, epoch: int | None = None, group: str = "train"
    ) -> None:
        """Record scalars at ``step`` (the x-axis); ``group`` prefixes their tags
        (``train/loss``, ``monitor/knn_top1``, ``probe/many``)."""

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
        """Record the run's settings (flat ``section.key`` names) and the tags of the metrics
        that judge it (TensorBoard's HPARAMS table shows them side by side)."""

    def log_text(self, tag: str, text: str) -> None:
        """Record a text (e.g. the resolved config as YAML)."""

    def close(self) -> None:
        """Flush and close."""


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    if package in sys.modules:
        return sys.modules[package] is not None
    return importlib.util.find_spec(package) is not None


def check_trackers(tensorboard: str, wandb: str, where: str = "run") -> None:
    """Refuse, before any work, a tracker that is asked for but not installed.

    Args:
        tensorboard: ``run.tensorboard`` (``auto`` | ``on`` | ``off``).
        wandb: ``run.wandb``, a W&B project name (``""`` = off).
        where: the settings' section named in the message (``run``, ``probe``).

    Raises:
        ConfigError: ``on`` without tensorboard; a W&B project name that W&B would refuse, or
            one without the wandb package (one line each).
    """
    if tensorboard == "on" and not installed("tensorboard"):
        raise ConfigError(
            f"{where}.tensorboard=on but the tensorboard package is not installed; "
            f"{TENSORBOARD_HINT} or set {where}.tensorboard=auto"
        )
    bad = sorted(set(wandb) & set(WANDB_FORBIDDEN))
    if bad or len(wandb) > 128:
        raise ConfigError(
            f"{where}.wandb={wandb!r} is not a W&B project name: at most 128 characters, none "
            f"of {' '.join(WANDB_FORBIDDEN)} (found {' '.join(bad) or 'too many characters'})"
        )
    if wandb and not installed("wandb"):
        raise ConfigError(
            f"{where}.wandb={wandb} but the wandb package is not installed; {WANDB_HINT} "
            f"or leave {where}.wandb empty"
        )


def flat_hparams(tree: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as ``{"section.key": value}`` with values TensorBoard and W&B accept
    (lists and ``None`` become their text)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def scalar_metrics(results: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float]:
    """The finite numbers among ``results[key]`` for ``key`` in ``keys`` (a probe's top1,
    many/medium/few, ...); missing and ``None`` values are left out."""
    out: dict[str, float] = {}
    for key in keys:
        value = results.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and math.isfinite(float(value)):  # type: ignore[arg-type]
            out[key] = float(value)  # type: ignore[arg-type]
    return out


def method_scalars(out: Mapping[str, Any]) -> dict[str, float]:
    """The one-element tensors of a method's output besides ``loss`` (its loss terms), as
    floats."""
    import torch

    return {
        k: float(v.detach().float().item())
        for k, v in out.items()
        if k != "loss" and torch.is_tensor(v) and v.numel() == 1
    }


class TensorBoardTracker:
    """TensorBoard event files in ``log_dir``.

    Args:
        log_dir: the folder of the event files.
        purge_step: where a resumed (or overwritten) run starts again: TensorBoard hides the
            folder's earlier events from this step on, so a step is never shown twice.

    Raises:
        ImportError: the tensorboard package is missing (see :func:`open_trackers`).
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer: Any = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log_scalars(
        self, values: Mapping[str, float], step: int, epoch: int | None = None, group: str = "train"
    ) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{group}/{name}", value, step)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
        # torch's add_hparams writes into a new sub-folder per call; the summaries it builds go
        # into this run's own event file instead, beside its scalars
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        summaries = hparams_summaries(dict(flat_hparams(hparams)), dict.fromkeys(metrics, 0.0))
        for summary in summaries:
            self.writer.file_writer.add_summary(summary)

    def log_text(self, tag: str, text: str) -> None:
        # indented four spaces: TensorBoard renders the text as Markdown, this as a code block
        self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()), 0)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run of ``project``, its files under ``run_dir/wandb``.

    Raises:
        ImportError: the wandb package is missing (see :func:`check_trackers`).
    """

    def __init__(self, project: str, run_dir: str | Path, name: str | None = None) -> None:
        import wandb

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run: Any = wandb.init(project=project, dir=str(run_dir), name=name)

    def log_scalars(
        self, values: Mapping[str, float], step: int, epoch: int | None = None, group: str = "train"
    ) -> None:
        data: dict[str, Any] = {f"{group}/{k}": v for k, v in values.items()}
        if epoch is not None:
            data["epoch"] = epoch
        self.run.log(data, step=step)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
        self.run.config.update(flat_hparams(hparams), allow_val_change=True)

    def log_text(self, tag: str, text: str) -> None:
        self.run.summary[tag] = text

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Several trackers behind one: every call goes to each, in order."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def log_scalars(
        self, values: Mapping[str, float], step: int, epoch: int | None = None, group: str = "train"
    ) -> None:
        for t in self.trackers:
            t.log_scalars(values, step, epoch, group)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
        for t in self.trackers:
            t.log_hparams(hparams, metrics)

    def log_text(self, tag: str, text: str) -> None:
        for t in self.trackers:
            t.log_text(tag, text)

    def close(self) -> None:
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            t.close()


def open_trackers(
    output_dir: str | Path,
    tensorboard: str = "auto",
    wandb: str = "",
    jsonl: bool = True,
    where: str = "run",
    start_step: int | None = None,
) -> Trackers:
    """The trackers a run asked for, as one :class:`Trackers`.

    Args:
        output_dir: the run (or probe) folder; it must exist.
        tensorboard: ``auto`` (event files in ``output_dir/tensorboard`` when tensorboard is
            installed; said once per process, in one line, when it is not), ``on`` or ``off``.
        wandb: a W&B project (``""`` = none); its files go to ``output_dir/wandb``.
        jsonl: also append to ``output_dir/metrics.jsonl``.
        where: the settings' section in messages (``run`` for pretrain, ``probe`` for probes).
        start_step: the step a run (re)starts at: TensorBoard's earlier events from it on are
            hidden (``purge_step``).

    Raises:
        ConfigError: a tracker asked for whose package is missing (:func:`check_trackers`).
    """
    global _said_no_tensorboard
    from balfeat.engine.metrics_log import MetricsLog

    out = Path(output_dir)
    check_trackers(tensorboard, wandb, where)
    trackers: list[Tracker] = [MetricsLog(out)] if jsonl else []
    if tensorboard != "off":
        if installed("tensorboard"):
            trackers.append(TensorBoardTracker(out / "tensorboard", purge_step=start_step))
        elif not _said_no_tensorboard:
            _said_no_tensorboard = True
            log.warning(
                "%s.tensorboard=auto: no tensorboard package, so no event files (%s; "
                "%s.tensorboard=off silences this)",
                where,
                TENSORBOARD_HINT,
                where,
            )
    if wandb:
        trackers.append(WandbTracker(wandb, out, name=out.name or None))
    return Trackers(trackers)


class RunTracker:
    """A pre-training run's trackers: the trainer's one handle on them.

    The trainer calls :meth:`check` before any work, :meth:`open` on rank 0 once the run folder
    is its own (metrics.jsonl, TensorBoard and W&B as ``run.*`` asks; the resolved config goes
    in as text and as hyper-parameters), :meth:`log` with each record and :meth:`close` at the
    end. Before :meth:`open` (and so on every other rank) :meth:`log` writes nothing.

    Args:
        cfg: the resolved config (``run.tensorboard``, ``run.wandb``, ``run.knn_every``).
        output_dir: the run folder.
    """

    def __init__(self, cfg: Config, output_dir: str | Path) -> None:
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.trackers: Trackers | None = None

    def check(self) -> None:
        """Refuse a tracker that is asked for but not installed (:func:`check_trackers`)."""
        check_trackers(self.cfg.run.tensorboard, self.cfg.run.wandb)

    def open(self, step: int = 0) -> None:
        """Open the trackers for a run that starts (or resumes) at ``step`` and record the
        resolved config; the metrics that judge the run are the loss, the kNN monitor's top-1
        (``run.knn_every``) and the validation top-1 (``run.keep_best``)."""
        import yaml

        from balfeat.engine.config import config_to_dict

        run = self.cfg.run
        self.close()
        self.trackers = open_trackers(self.output_dir, run.tensorboard, run.wandb, start_step=step)
        resolved = config_to_dict(self.cfg)
        self.trackers.log_text("config", yaml.safe_dump(resolved, sort_keys=False))
        watched = ["train/loss"] + ["monitor/knn_top1"] * (run.knn_every > 0)
        watched += ["monitor/val_top1"] * run.keep_best
        self.trackers.log_hparams(resolved, watched)

    def log(self, record: Mapping[str, Any], group: str = "train") -> None:
        """Hand a record (``epoch``, ``step`` and scalars) to the open trackers, its scalars
        under ``group`` (``train``, ``monitor``)."""
        if self.trackers is not None:
            values = {k: v for k, v in record.items() if k not in ("epoch", "step")}
            self.trackers.log_scalars(values, record["step"], record["epoch"], group)

    def close(self) -> None:
        """Flush and close the trackers (again: nothing)."""
        trackers, self.trackers = self.trackers, None
        if trackers is not None:
            trackers.close()
