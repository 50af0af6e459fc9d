"""The training loop: one code path for one process (CPU/GPU) and ``torchrun`` DDP.

Under ``torchrun`` the process group is set up by :func:`balfeat.distributed.init_distributed`
(gloo on CPU, NCCL on GPU) with a collective timeout (``run.timeout_s``), so a rank that fails makes
the whole job exit non-zero in bounded time instead of hanging. ``optim.batch_size`` is the global
batch; each rank loads ``batch_size / world_size`` images. The method is wrapped in
``DistributedDataParallel``; the MoCo/KCL key encoder has ``requires_grad=False`` and is ignored by
DDP (its momentum update runs identically on every rank after ``optimizer.step()``).

Every epoch (and every ``run.save_every_steps`` steps) rank 0 writes an atomic checkpoint holding
everything stateful: the method state (incl. momentum encoder, queue, label queue, pointer),
optimizer, scheduler, grad scaler, epoch, step, sampler epoch, the position within the epoch, the
RNG states of python/numpy/torch/cuda of every rank and the data-loader generator, plus the
resolved config. Resuming from it continues exactly (bit-identical on CPU with
``num_workers=0``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler

from balfeat import distributed
from balfeat.device import default_device
from balfeat.engine import build, faults
from balfeat.engine.checkpoint import (
    LAST_NAME,
    atomic_save,
    find_last_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from balfeat.engine.config import Config, config_to_dict, save_config
from balfeat.engine.metrics_log import MetricsLog
from balfeat.errors import CheckpointError, ConfigError, DataError, TrainingError

log = logging.getLogger("balfeat.engine")

#: ``callback(backbone, epoch, epochs, device) -> {metric: value}``, called after every epoch
#: (``epoch`` = epochs finished, 1-based); e.g. :class:`balfeat.evaluation.knn.KNNMonitor`.
EpochCallback = Callable[[nn.Module, int, int, torch.device], dict[str, float]]


class _SkipSampler(Sampler[int]):
    """Yields the indices of ``sampler`` after the first ``skip`` (mid-epoch resume)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(iter(self.sampler))[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


def _to_device(x: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(x, (list, tuple)):
        return [_to_device(v, device, channels_last) for v in x]
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


#: Config keys that may change when a run is resumed: where and how it runs, not what it learns.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "run.device",
    "run.progress",
    "run.log_every",
    "run.keep_last",
    "run.save_every_steps",
    "run.max_steps",
    "run.output_dir",
    "run.timeout_s",
    "run.detect_anomaly",
    "run.overwrite",
    "run.tensorboard",
    "run.compile",
    "run.channels_last",
    "data.num_workers",
    "data.root",
    "data.skip_bad_images",
    "data.decode",
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse to resume with a config that changes what the run learns.

    A resumed run continues the saved schedule, data, seed and method exactly; changing any of
    them mid-run (e.g. ``optim.epochs``, whose cosine schedule the optimizer already followed)
    would silently train something that is neither run. Only the keys in
    :data:`RESUMABLE_CHANGES` (device, logging, checkpointing) may differ.

    Raises:
        ConfigError: listing every key that differs, with the saved and the new value.
    """
    old, new = _flatten(saved), _flatten(now)
    diff = [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if k not in RESUMABLE_CHANGES and k in old and k in new and old[k] != new[k]
    ]
    if diff:
        raise ConfigError(
            f"cannot resume {str(path)!r} with a different config ({'; '.join(diff)}); resume "
            "with the run's own config.yaml, or start a new run in another run.output_dir"
        )


#: Files that show a folder holds a run.
RUN_FILES: tuple[str, ...] = ("last.pth", "config.yaml", "metrics.jsonl")
LOCK_NAME = ".balfeat.lock"


def run_files(output_dir: Path) -> list[Path]:
    """The files of a previous run in ``output_dir`` (checkpoints, config, metrics)."""
    if not output_dir.is_dir():
        return []
    found = [output_dir / n for n in RUN_FILES if (output_dir / n).exists()]
    return found + sorted(output_dir.glob("checkpoint_*.pth"))


def claim_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) a folder that holds another run.

    Raises:
        TrainingError: the folder holds a run and neither ``resume`` nor ``overwrite`` is set, or
            ``output_dir`` is a file.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise TrainingError(f"run.output_dir {str(output_dir)!r} is a file; choose a folder")
    found = run_files(output_dir)
    if not found or resume:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found[:4])
        raise TrainingError(
            f"run.output_dir {str(output_dir)!r} already holds a run ({names}); pass --resume to "
            "continue it, choose a new run.output_dir, or set run.overwrite=true to replace it"
        )
    log.warning("run.overwrite=true: deleting the previous run in %s", output_dir)
    for f in found:
        f.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def acquire_lock(output_dir: Path) -> Path:
    """Take ``output_dir/.balfeat.lock`` (pid and host), so two runs cannot share a folder.

    A lock left by a process that is gone (same host) is taken over with a warning.

    Raises:
        TrainingError: another live process holds the lock.
    """
    import socket

    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_s, _, host = lock.read_text().strip().partition(" ")
                pid = int(pid_s)
            except (OSError, ValueError):
                pid, host = -1, ""
            if host == socket.gethostname() and pid > 0 and not _pid_alive(pid):
                log.warning(
                    "taking over the stale lock of pid %d (no longer running) in %s",
                    pid,
                    output_dir,
                )
                lock.unlink(missing_ok=True)
                continue
            if pid == os.getpid():
                return lock
            raise TrainingError(
                f"another balfeat process (pid {pid_s or '?'} on {host or '?'}) is training into "
                f"{str(output_dir)!r} (lock file {str(lock)!r}); wait for it, use another "
                "run.output_dir, or delete the lock file if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return lock
    raise TrainingError(f"could not take the lock {str(lock)!r}")  # pragma: no cover


def release_lock(lock: Path | None) -> None:
    """Remove a lock taken by :func:`acquire_lock` (if it is still ours)."""
    if lock is None:
        return
    try:
        if lock.read_text().split(" ", 1)[0] == str(os.getpid()):
            lock.unlink()
    except OSError:
        pass


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` logged after ``step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
            keep.append(line)
    from balfeat.atomic import atomic_write_text

    atomic_write_text(path, "".join(k + "\n" for k in keep))


def shape_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Say which tensors of a checkpoint differ in shape from the model's ("" when none).

    A classifier of another size (``head.weight`` with 3 rows against 4) means the training data
    now has another number of classes than when the checkpoint was written.
    """
    diffs = [
        (k, tuple(v.shape), tuple(current[k].shape))
        for k, v in saved.items()
        if k in current and hasattr(v, "shape") and tuple(v.shape) != tuple(current[k].shape)
    ]
    if not diffs:
        return ""
    key, old, new = diffs[0]
    text = f"{key} has shape {old} in the checkpoint but {new} here"
    if len(diffs) > 1:
        text += f" (and {len(diffs) - 1} more tensor(s))"
    if key.endswith("weight") and len(old) == 2 and old[1:] == new[1:] and old[0] != new[0]:
        text += (
            f": the checkpoint was trained on {old[0]} classes and the training data now has "
            f"{new[0]} (did the split file or data.class_set change?); resume with the data it "
            "was trained on, or start a new run"
        )
    return text


class Trainer:
    """Pre-trains a method as configured.

    Args:
        cfg: the resolved config.
        method: a method module (``forward(images, labels) -> {"loss": ...}``, ``after_step()``);
            default: built from ``cfg`` by :func:`balfeat.engine.build.build_method`.
        train_dataset: the training dataset (with ``.targets``); default: built from ``cfg``.
        resume: ``None``/``False`` = start fresh; ``True`` = resume from ``output_dir``'s newest
            checkpoint when there is one; a path = resume from that checkpoint.

    After :meth:`fit`, ``self.method`` is the trained (unwrapped) method.
    """

    def __init__(
        self,
        cfg: Config,
        method: nn.Module | None = None,
        train_dataset: Dataset[Any] | None = None,
        resume: bool | str | Path | None = None,
        epoch_callbacks: Sequence[EpochCallback] = (),
    ) -> None:
        self.cfg = cfg
        self.epoch_callbacks = list(epoch_callbacks)
        self._method_arg = method
        self._dataset_arg = train_dataset
        self.resume = resume
        self.output_dir = Path(cfg.run.output_dir)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._interrupted = False
        self._batch_in_epoch = 0
        self._lock: Path | None = None
        self._metrics: MetricsLog | None = None

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg
        distributed.init_distributed(timeout_s=cfg.run.timeout_s)
        self.rank = distributed.rank()
        self.world = distributed.world_size()
        if self.rank == 0:  # refuse another run's folder before any work
            claim_output_dir(self.output_dir, bool(self.resume), cfg.run.overwrite)
        try:
            self.device = default_device(cfg.run.device)
        except ValueError as err:
            raise TrainingError(str(err)) from None
        seed_everything(cfg.run.seed)
        if cfg.run.tensorboard == "on" and distributed.is_main_process():
            # fail now, not after the first epoch, without the package
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise ConfigError(
                    "run.tensorboard=on but the tensorboard package is not installed; "
                    "pip install 'balfeat[tensorboard]' or set run.tensorboard=auto"
                )

        # ``is None``, not ``or``: an empty dataset is falsy and must never fall back to the
        # dataset the config describes (that trained silently on the whole pool).
        self.dataset = (
            self._dataset_arg if self._dataset_arg is not None else build.build_train_dataset(cfg)
        )
        if len(self.dataset) == 0:  # type: ignore[arg-type]
            raise DataError(
                "the training set is empty (0 images); check data.train_split, data.per_class, "
                "data.max_samples or the study's family.total"
            )
        num_classes = int(getattr(self.dataset, "num_classes", 0)) or int(
            np.asarray(self.dataset.targets).max() + 1  # type: ignore[attr-defined]
        )
        self.method = self._method_arg or build.build_method(cfg, num_classes)
        set_counts = getattr(self.method, "set_class_counts", None)
        if callable(set_counts):  # logit-adjusted methods (PaCo, BCL) need the class prior
            targets = np.asarray(self.dataset.targets, dtype=np.int64)  # type: ignore[attr-defined]
            set_counts(torch.from_numpy(np.bincount(targets, minlength=num_classes)))
        self.method.to(self.device)
        if cfg.run.channels_last:
            self.method.to(memory_format=torch.channels_last)

        late = [m for m in cfg.optim.milestones if m >= cfg.optim.epochs]
        if cfg.optim.schedule == "step" and late and distributed.is_main_process():
            warnings.warn(
                f"optim.milestones {late} are not below optim.epochs={cfg.optim.epochs}: the "
                "learning rate never drops there (shrank the epochs of a recipe? scale its "
                "milestones too)",
                stacklevel=2,
            )
        self.amp_dtype: torch.dtype | None = None
        if cfg.run.precision == "bf16":  # autocast on CPU and GPU alike
            self.amp_dtype = torch.bfloat16
        elif cfg.run.precision == "fp16":
            if self.device.type != "cuda":
                warnings.warn(
                    f"run.precision=fp16 needs a GPU; training in float32 on {self.device.type} "
                    "(bf16 works on CPU)",
                    stacklevel=2,
                )
            else:
                self.amp_dtype = torch.float16
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )

        self.device_loader = build.uses_device_loader(cfg, self.dataset)
        # data.decode=gpu: batches arrive as encoded files, decoded + augmented on the device
        self.batch_decoder = build.build_batch_decoder(cfg, self.dataset)
        self.optimizer = build.build_optimizer(cfg, self.method)
        self.scheduler = build.build_scheduler(cfg, self.optimizer)
        self.local_batch = build.local_batch_size(cfg, self.world)
        self.sampler = build.build_sampler(cfg, self.dataset)
        self.loader_generator = torch.Generator()
        self.loader_generator.manual_seed(cfg.run.seed + 1000003 * self.rank)
        self.steps_per_epoch = len(self.sampler) // self.local_batch  # type: ignore[arg-type]
        if self.steps_per_epoch < 1:
            raise TrainingError(
                f"the training set gives {len(self.sampler)} images per rank, fewer than one "  # type: ignore[arg-type]
                f"batch of {self.local_batch}; lower optim.batch_size or use more data"
            )

        self.model: nn.Module = self.method
        if cfg.run.compile:
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        if distributed.is_distributed():
            self.model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Buffers are not broadcast from rank 0 before every forward: the MoCo/KCL queues
                # are updated identically on every rank (gathered keys), and re-sending a
                # 65536-key queue each step is pure cost. BN running statistics stay per rank;
                # checkpoints hold rank 0's.
                broadcast_buffers=False,
            )
        self.skip_batches = 0
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if not self.resume:
            return
        if self.resume is True:
            path = find_last_checkpoint(self.output_dir)
            if path is None:
                log.warning("no checkpoint in %s; starting from scratch", self.output_dir)
                return
        else:
            path = resolve_checkpoint(self.resume, option="--resume")  # a folder: its newest
        state = load_checkpoint(
            path,
            map_location=self.device,
            expect_method=self.cfg.method.name,
            expect_backbone=self.cfg.model.backbone,
        )
        try:
            self.method.load_state_dict(state["model"])
        except RuntimeError as err:
            # a tensor of another shape, said in one sentence (a head of another number of
            # classes: the data changed), rather than torch's list of every mismatch
            said = shape_mismatch(state["model"], self.method.state_dict()) or str(err)
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this method/architecture: {said}"
            ) from None
        check_resume_config(state.get("config") or {}, config_to_dict(self.cfg), path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.skip_batches = int(state.get("batch_in_epoch", 0))
        rngs = state.get("rng", [])
        if isinstance(rngs, dict):
            rngs = [rngs]
        if self.rank < len(rngs):
            set_rng_state(rngs[self.rank])
            if "loader" in rngs[self.rank]:
                self.loader_generator.set_state(rngs[self.rank]["loader"])
        self.resumed_from = path
        log.info("resumed from %s at epoch %d step %d", path, self.epoch, self.step)

    # ------------------------------------------------------------ checkpoints
    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = rng_state()
        mine["loader"] = self.loader_generator.get_state()
        if not distributed.is_distributed():
            return [mine]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, mine)
        return out

    def state_dict(self, batch_in_epoch: int) -> dict[str, Any]:
        """Everything needed to continue exactly from here (see the module docstring)."""
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.epoch,
            "step": self.step,
            "sampler_epoch": self.epoch,
            "batch_in_epoch": batch_in_epoch,
            "rng": self._gather_rng(),
            "config": config_to_dict(self.cfg),
            "method": self.cfg.method.name,
            "backbone": self.cfg.model.backbone,
            "world_size": self.world,
        }

    def _save(self, batch_in_epoch: int) -> None:
        state = self.state_dict(batch_in_epoch)  # collective: every rank takes part
        if distributed.is_main_process():
            try:
                if batch_in_epoch == 0:
                    save_checkpoint(self.output_dir, state, keep_last=self.cfg.run.keep_last)
                else:  # mid-epoch: only the ``last.pth`` pointer moves
                    atomic_save(state, self.output_dir / LAST_NAME)
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise TrainingError(
                        f"disk full at {str(self.output_dir)!r}: the checkpoint of step "
                        f"{self.step} could not be written; the previous checkpoint is intact. "
                        "Free space and continue with --resume"
                    ) from None
                raise
        distributed.barrier()

    # ------------------------------------------------------------------ train
    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if distributed.is_main_process():
            if self._metrics is None:
                self._metrics = MetricsLog(self.output_dir, self.cfg.run.tensorboard)
            self._metrics.write(record)

    def fit(self) -> dict[str, Any]:
        """Train until ``optim.epochs`` (or ``run.max_steps``); returns a summary dict."""
        try:
            return self._fit()
        finally:
            release_lock(self._lock)

    def _fit(self) -> dict[str, Any]:
        self._setup()
        cfg = self.cfg
        if self.rank == 0:  # before the first file is written
            self._lock = acquire_lock(self.output_dir)
        if self.epoch >= cfg.optim.epochs or (cfg.run.max_steps and self.step >= cfg.run.max_steps):
            return self._finished_summary()
        if distributed.is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")
            if self.step == 0:  # a fresh run does not append to an older run's metrics
                (self.output_dir / "metrics.jsonl").unlink(missing_ok=True)
            else:  # a resumed run logs the steps after the checkpoint again
                truncate_metrics(self.output_dir / "metrics.jsonl", self.step)
            log.info(
                "lr = base_lr %g * global batch %d / 256 = %g; %d rank(s), %d images/rank/step",
                cfg.optim.base_lr,
                cfg.optim.batch_size,
                cfg.optim.scaled_lr(),
                self.world,
                self.local_batch,
            )
        distributed.barrier()
        if self.step == 0:
            self._prefill_queue()
        anomaly = (
            torch.autograd.detect_anomaly() if cfg.run.detect_anomaly else contextlib.nullcontext()
        )
        last_loss = float("nan")
        ips = 0.0
        stop = False
        with anomaly, self._deferred_interrupt():
            while self.epoch < cfg.optim.epochs and not stop:
                last_loss, ips, stop = self._train_epoch()
                if stop:
                    break
        if self._metrics is not None:
            self._metrics.close()
        summary = {
            "epochs": self.epoch,
            "steps": self.step,
            "final_loss": last_loss,
            "images_per_s": ips,
            "output_dir": str(self.output_dir),
        }
        bad = list(dict.fromkeys(p for p, _ in getattr(self.dataset, "bad_images", [])))
        if bad:  # data.skip_bad_images: list what was skipped (unreadable ones found so far)
            summary["bad_images"] = bad
            log.warning("skipped %d missing or unreadable image(s): %s", len(bad), ", ".join(bad))
        return summary

    def _run_epoch_callbacks(self) -> None:
        """Call each epoch callback (e.g. the online kNN monitor) with the backbone; their
        metrics go into metrics.jsonl (and TensorBoard) at this epoch's last step."""
        if not self.epoch_callbacks:
            return
        backbone = getattr(self.method, "backbone", None)
        if not isinstance(backbone, nn.Module):
            return
        record: dict[str, Any] = {}
        for cb in self.epoch_callbacks:
            record.update(cb(backbone, self.epoch, self.cfg.optim.epochs, self.device))
        if record:
            self._log({"epoch": self.epoch, "step": self.step, **record})

    def _finished_summary(self) -> dict[str, Any]:
        """The summary of a run that was already finished when resumed: nothing is trained."""
        last: dict[str, Any] = {}
        metrics = self.output_dir / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    last = json.loads(line)
        msg = (
            f"the run in {str(self.output_dir)!r} is already finished (epoch {self.epoch} of "
            f"{self.cfg.optim.epochs}, step {self.step}); nothing to train"
        )
        log.warning(msg)
        return {
            "epochs": self.epoch,
            "steps": self.step,
            "final_loss": last.get("loss"),
            "images_per_s": None,
            "output_dir": str(self.output_dir),
            "already_finished": True,
            "message": msg,
        }

    @contextlib.contextmanager
    def _deferred_interrupt(self) -> Iterator[None]:
        """Ctrl-C during training finishes the current step, checkpoints it and then raises
        KeyboardInterrupt (a second Ctrl-C interrupts at once). Only in the main thread."""
        import threading

        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            log.warning("interrupt: finishing the current step, then saving a checkpoint")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _check_interrupt(self) -> None:
        if getattr(self, "_interrupted", False):
            self._save_on_interrupt()
            raise KeyboardInterrupt

    def _save_on_interrupt(self) -> None:
        """Ctrl-C: checkpoint the current step (one process) so ``--resume`` continues here."""
        batch = getattr(self, "_batch_in_epoch", 0)
        if distributed.is_distributed():
            log.warning("interrupted; the last checkpoint in %s is kept", self.output_dir)
            return
        if batch == 0:
            log.warning("interrupted at an epoch boundary; %s/last.pth is current", self.output_dir)
            return
        try:
            self._save(batch)
        except Exception as err:  # the interrupt wins; say what happened
            log.warning("interrupted; could not save a checkpoint (%s)", err)
            return
        log.warning(
            "interrupted: checkpoint saved at step %d (epoch %d, batch %d) in %s; continue with "
            "--resume",
            self.step,
            self.epoch + 1,
            batch,
            self.output_dir / LAST_NAME,
        )

    def _prefill_by_default(self) -> bool:
        """Whether the registered method asks for a prefilled queue (``method.prefill=auto``)."""
        from balfeat.methods import get_method

        return get_method(self.cfg.method.name).prefill_by_default

    def _loader(
        self,
        sampler: Sampler[int],
        generator: torch.Generator,
        seed_offset: int = 0,
        start_batch: int = 0,
    ) -> Any:
        """The batches of one epoch: the on-device loader (``data.loader``) or a DataLoader."""
        cfg = self.cfg
        if self.device_loader:
            loader = build.build_device_loader(
                cfg,
                self.dataset,
                sampler,
                self.local_batch,
                self.device,
                seed=cfg.run.seed + seed_offset + 1000003 * self.rank,
                start_batch=start_batch,
            )
            loader.set_epoch(self.epoch)
            return loader
        return build.build_loader(
            cfg,
            self.dataset,
            sampler,
            self.local_batch,
            generator,
            pin_memory=self.device.type == "cuda",
        )

    def _prefill_queue(self) -> None:
        """Fill a method's queue before the first step (``method.prefill``), without training.

        Uses a loader of its own (seeded from ``run.seed``, not the training loader's generator),
        so the training data order is the same with and without prefilling.
        """
        cfg = self.cfg
        prefill = getattr(self.method, "prefill", None)
        wanted = cfg.method.wants_prefill(self._prefill_by_default())
        if prefill is None or not wanted:
            return
        generator = torch.Generator()
        generator.manual_seed(cfg.run.seed + 7919 + 1000003 * self.rank)
        loader = self._loader(self.sampler, generator, seed_offset=7919)

        def batches() -> Iterator[tuple[Any, torch.Tensor]]:
            for b, (images, labels) in enumerate(loader):
                yield self._batch_to_device(images, b, seed_offset=7919), labels

        was_training = self.method.training
        self.method.train()
        used = prefill(batches())
        self.method.train(was_training)
        log.info("queue prefilled with %d batch(es) of keys before the first step", used)

    def _batch_to_device(self, images: Any, batch_idx: int, seed_offset: int = 0) -> Any:
        """A loader batch's images on the training device; encoded files (``data.decode=gpu``)
        are decoded and augmented there with draws seeded by ``(seed, rank, epoch, batch)``."""
        if self.batch_decoder is not None:
            from balfeat.data.device_data import derive_seed

            seed = derive_seed(self.cfg.run.seed + seed_offset, self.rank, self.epoch, batch_idx)
            gen = torch.Generator().manual_seed(seed)
            images = self.batch_decoder(images, self.device, gen)
        return _to_device(images, self.device, self.cfg.run.channels_last)

    def _train_step(
        self, images: Any, labels: torch.Tensor, batch_idx: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step: forward, finite-loss check, backward, step, ``after_step()``.

        Args:
            images: a batch as the loader yields it (a tensor (B, C, H, W), or a list of two for
                two-view methods).
            labels: (B,) int64.
            batch_idx: index of the batch in the epoch (for the error message).

        Returns:
            The loss averaged over ranks (scalar float32) and the method's output dict.

        Raises:
            TrainingError: the loss is not finite.
        """
        images = self._batch_to_device(images, batch_idx)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            out = self.model(images, labels)
        loss = out["loss"]
        loss_mean = distributed.all_reduce_mean(loss.detach().float())
        if not torch.isfinite(loss_mean):
            raise TrainingError(
                f"non-finite loss ({loss_mean.item()}) at step {self.step + 1} (epoch "
                f"{self.epoch + 1}, batch {batch_idx + 1}); the last good checkpoint in "
                f"{str(self.output_dir)!r} is kept. Lower optim.base_lr, use run.precision=fp32, "
                "or set run.detect_anomaly=true to find the operation"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        after_step = getattr(self.method, "after_step", None)
        if after_step is not None:
            after_step()
        return loss_mean, out

    def _train_epoch(self) -> tuple[float, float, bool]:
        cfg = self.cfg
        self.method.train()
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)
        skip = self.skip_batches
        self.skip_batches = 0
        sampler: Sampler[int] = (
            _SkipSampler(self.sampler, skip * self.local_batch) if skip else self.sampler
        )
        if self.device_loader:  # skips by batch index: the augmentation of batch b is unchanged
            loader = self._loader(self.sampler, self.loader_generator, start_batch=skip)
        else:
            loader = self._loader(sampler, self.loader_generator)
        show = cfg.run.progress and distributed.is_main_process()
        bar: Any = None
        if show:
            from tqdm import tqdm

            bar = tqdm(
                total=self.steps_per_epoch,
                initial=skip,
                desc=f"epoch {self.epoch + 1}/{cfg.optim.epochs}",
                dynamic_ncols=True,
            )
        lr = self.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        window_imgs = 0
        loss_value = float("nan")
        ips = 0.0
        batch_idx = skip
        for images, labels in loader:
            try:
                loss_mean, out = self._train_step(images, labels, batch_idx)
            except TrainingError:
                if bar is not None:
                    bar.close()
                raise
            self.step += 1
            batch_idx += 1
            self._batch_in_epoch = batch_idx
            faults.inject(self.step, self.rank)
            loss_value = float(loss_mean.item())
            window_imgs += self.local_batch * self.world
            if self.step % cfg.run.log_every == 0 or batch_idx == self.steps_per_epoch:
                dt = time.perf_counter() - t0
                ips = window_imgs / dt if dt > 0 else 0.0
                record: dict[str, Any] = {
                    "epoch": self.epoch + 1,
                    "step": self.step,
                    "loss": loss_value,
                    "lr": lr,
                    "images_per_s": ips,
                }
                for k, v in out.items():
                    if k != "loss" and torch.is_tensor(v) and v.numel() == 1:
                        record[k] = float(v.detach().float().item())
                self._log(record)
                t0 = time.perf_counter()
                window_imgs = 0
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.4g}", img_s=f"{ips:.0f}")
                bar.update(1)
            if self._interrupted and batch_idx < self.steps_per_epoch:
                if bar is not None:
                    bar.close()
                self._check_interrupt()
            max_steps_hit = bool(cfg.run.max_steps) and self.step >= cfg.run.max_steps
            if max_steps_hit and batch_idx < self.steps_per_epoch:
                self._save(batch_idx)
                if bar is not None:
                    bar.close()
                return loss_value, ips, True
            if (
                cfg.run.save_every_steps
                and self.step % cfg.run.save_every_steps == 0
                and batch_idx < self.steps_per_epoch
            ):
                self._save(batch_idx)
        if bar is not None:
            bar.close()
        self.scheduler.step()
        self.epoch += 1
        self._batch_in_epoch = 0
        self._run_epoch_callbacks()
        self._save(0)
        if getattr(self, "_interrupted", False):
            log.warning("interrupted after epoch %d: %s is current", self.epoch, self.output_dir)
            raise KeyboardInterrupt
        stop = bool(cfg.run.max_steps) and self.step >= cfg.run.max_steps
        return loss_value, ips, stop
