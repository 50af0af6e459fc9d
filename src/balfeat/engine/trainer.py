"""The training loop: one code path for one process (CPU/GPU) and ``torchrun`` DDP.

Under ``torchrun`` the process group is set up by :func:`balfeat.distributed.init_distributed`
(gloo on CPU, NCCL on GPU) with a collective timeout (``run.timeout_s``), so a rank that fails makes
the whole job exit non-zero in bounded time instead of hanging. ``optim.batch_size`` is the global
batch; each rank loads ``batch_size / world_size`` images. The method is wrapped in
``DistributedDataParallel``; the MoCo/KCL key encoder has ``requires_grad=False`` and is ignored by
DDP (its momentum update runs identically on every rank after ``optimizer.step()``).

Every epoch (and every ``run.save_every_steps`` steps) rank 0 writes an atomic checkpoint holding
everything stateful: the method state (incl. momentum encoder, queue, label queue, pointer),
optimizer, scheduler, grad scaler, epoch, step, the position within the epoch, the RNG states of
python/numpy/torch/cuda of every rank and of its batch source, plus the resolved config and the
training set's class counts (:mod:`balfeat.engine.train_counts`). Resuming
from it continues exactly (bit-identical on CPU with ``num_workers=0``).
The run folder, its lock and stop signals are :mod:`balfeat.engine.run_dir`'s, the resume policy
:mod:`balfeat.engine.resume`'s, the input paths :class:`balfeat.data.batches.BatchSource`'s.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from balfeat import distributed
from balfeat.device import default_device
from balfeat.engine import build, faults, monitor, run_dir, tracking
from balfeat.engine.checkpoint import LAST_NAME, atomic_save, save_checkpoint
from balfeat.engine.config import Config, config_to_dict, save_config
from balfeat.engine.resume import load_for_resume, rank_rng, resume_path
from balfeat.engine.train_counts import KEY as TRAIN_COUNTS
from balfeat.engine.train_counts import training_counts
from balfeat.engine.validation import best_by_validation
from balfeat.errors import TrainingError
from balfeat.methods import get_method
from balfeat.methods.base import MethodBase
from balfeat.seeding import (
    PREFILL_OFFSET,
    rng_state,
    seed_everything,
    separate_rank_streams,
    set_rng_state,
)

log = logging.getLogger("balfeat.engine")

#: ``callback(backbone, epoch, epochs, device) -> {metric: value}``, called after every epoch
#: (``epoch`` = epochs finished, 1-based); e.g. :class:`balfeat.evaluation.knn.KNNMonitor`.
EpochCallback = Callable[[nn.Module, int, int, torch.device], dict[str, float]]


class Trainer:
    """Pre-trains a method as configured.

    Args:
        cfg: the resolved config.
        method: a method module (``forward(images, labels) -> {"loss": ...}``, ``after_step()``);
            default: built from ``cfg`` by :func:`balfeat.engine.build.build_method`.
        train_dataset: the training dataset (with ``.targets``); default: built from ``cfg``.
        resume: ``None``/``False`` = start fresh; ``True`` = resume from ``output_dir``'s newest
            checkpoint when there is one; a path = resume from that checkpoint (or run folder).
        epoch_callbacks: called after every epoch with the backbone (metrics are logged);
            ``run.knn_every`` adds the kNN monitor; they go to the trackers (``RunTracker``).

    After :meth:`fit`, ``self.method`` is the trained (unwrapped) method.
    """

    def __init__(
        self,
        cfg: Config,
        method: MethodBase | None = None,
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
        self.stop = run_dir.StopSignals()
        self._lock: Path | None = None
        self.tracker = tracking.RunTracker(cfg, self.output_dir)
        self._started_fresh = False
        self._made_dir = False

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg
        distributed.init_distributed(timeout_s=cfg.run.timeout_s)
        self.rank = distributed.rank()
        self.world = distributed.world_size()
        if self.rank == 0:  # the lock first: nothing in the folder is touched without it
            self._made_dir = not self.output_dir.exists()
            self._lock = run_dir.acquire_lock(self.output_dir)
            run_dir.claim_output_dir(self.output_dir, bool(self.resume), cfg.run.overwrite)
            self._started_fresh = not self.resume
            run_dir.clear_leftovers(self.output_dir)
        try:
            self.device = default_device(cfg.run.device)
        except ValueError as err:
            raise TrainingError(str(err)) from None
        seed_everything(cfg.run.seed)
        self.tracker.check()  # a tracker asked for and not installed: now, not after an epoch
        # ``is None``, not ``or``: an empty dataset is falsy and must never fall back to the
        # dataset the config describes (that trained silently on the whole pool)
        self.dataset = (
            self._dataset_arg if self._dataset_arg is not None else build.build_train_dataset(cfg)
        )
        self.epoch_callbacks += monitor.run_monitors(cfg, self.dataset)
        self.method = build.method_for(cfg, self.dataset, self._method_arg)
        self.train_counts = training_counts(
            cfg, self.dataset, given=self._dataset_arg is not None
        )  # in every checkpoint: probes group many/medium/few by them
        self.method.to(self.device)
        separate_rank_streams(cfg.run.seed, self.rank)  # same weights, other augmentations
        if cfg.run.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if distributed.is_main_process():
            build.warn_late_milestones(cfg)
        self.amp_dtype = build.autocast_dtype(cfg.run.precision, self.device)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.optimizer = build.build_optimizer(cfg, self.method)
        self.scheduler = build.build_scheduler(cfg, self.optimizer)
        self.local_batch = build.local_batch_size(cfg, self.world)
        self.sampler = build.build_sampler(cfg, self.dataset)
        self.batches = self._batch_source()
        self.steps_per_epoch = len(self.batches)
        if self.steps_per_epoch < 1:
            raise TrainingError(
                f"the training set gives {len(self.sampler)} images per rank, fewer than one "  # type: ignore[arg-type]
                f"batch of {self.local_batch}; lower optim.batch_size or use more data"
            )
        self.model = build.training_model(cfg, self.method, self.device)
        self.best = best_by_validation(cfg, self.method, self.output_dir, self.local_batch)
        self._maybe_resume()

    def _batch_source(self, seed_offset: int = 0) -> Any:
        return build.build_batch_source(
            self.cfg,
            self.dataset,
            self.sampler,
            batch_size=self.local_batch,
            device=self.device,
            rank=self.rank,
            seed_offset=seed_offset,
        )

    def _maybe_resume(self) -> None:
        path = resume_path(self.resume, self.output_dir)
        if path is None:
            self._started_fresh = True
            return
        state = load_for_resume(path, self.cfg, self.method, self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        mine = rank_rng(state, self.rank)
        if mine is not None:
            set_rng_state(mine)
        self.batches.load_state_dict(
            {**({"loader": mine["loader"]} if mine and "loader" in mine else {}),
             "batch_in_epoch": int(state.get("batch_in_epoch", 0))}
        )  # fmt: skip
        self.resumed_from = path
        log.info("resumed from %s at epoch %d step %d", path, self.epoch, self.step)

    # ------------------------------------------------------------ checkpoints
    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = {**rng_state(), "loader": self.batches.state_dict()["loader"]}
        if not distributed.is_distributed():
            return [mine]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, mine)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (see the module docstring)."""
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.epoch,
            "step": self.step,
            "sampler_epoch": self.epoch,
            "batch_in_epoch": self.batches.position,
            "rng": self._gather_rng(),
            "config": config_to_dict(self.cfg),
            "method": self.cfg.method.name,
            "backbone": self.cfg.model.backbone,
            "world_size": self.world,
            TRAIN_COUNTS: self.train_counts,
        }

    def _save(self) -> None:
        """Checkpoint (collective): numbered + ``last.pth`` at an epoch's end, only ``last.pth``
        mid-epoch."""
        state = self.state_dict()
        if distributed.is_main_process():
            try:
                if self.batches.position == 0:
                    save_checkpoint(self.output_dir, state, keep_last=self.cfg.run.keep_last)
                else:
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
    def _log(self, record: dict[str, Any], group: str = "train") -> None:
        self.history.append(record)
        self.tracker.log(record, group)  # rank 0's trackers, open once the run has started

    def fit(self) -> dict[str, Any]:
        """Train until ``optim.epochs`` (or ``run.max_steps``); returns a summary dict."""
        try:
            return self._fit()
        except BaseException:
            if self._lock is not None and self._started_fresh and self.step == 0:
                run_dir.forget_failed_start(self.output_dir)  # a retry is not blocked
            raise
        finally:
            self.tracker.close()
            run_dir.release_lock(self._lock)
            if self._made_dir and self.output_dir.is_dir() and not any(self.output_dir.iterdir()):
                self.output_dir.rmdir()  # a start that wrote nothing leaves no folder

    def _fit(self) -> dict[str, Any]:
        self._setup()
        cfg = self.cfg
        if self.epoch >= cfg.optim.epochs or (cfg.run.max_steps and self.step >= cfg.run.max_steps):
            return run_dir.finished_summary(
                self.output_dir, self.epoch, cfg.optim.epochs, self.step
            )
        if distributed.is_main_process():
            save_config(cfg, self.output_dir / "config.yaml")
            run_dir.prepare_metrics(self.output_dir, self.step)
            self.tracker.open(self.step)
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
        last_loss, ips, stop = float("nan"), 0.0, False
        with anomaly, self.stop:
            while self.epoch < cfg.optim.epochs and not stop:
                last_loss, ips, stop = self._train_epoch()
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
        metrics go to the trackers (group ``monitor``) at this epoch's last step."""
        backbone = getattr(self.method, "backbone", None)
        if not self.epoch_callbacks or not isinstance(backbone, nn.Module):
            return
        record: dict[str, Any] = {}
        for cb in self.epoch_callbacks:
            record.update(cb(backbone, self.epoch, self.cfg.optim.epochs, self.device))
        if record:
            self._log({"epoch": self.epoch, "step": self.step, **record}, group="monitor")

    def _stop_on_interrupt(self) -> None:
        """After a stop signal mid-epoch: checkpoint this step (one process; under torchrun the
        last checkpoint is kept) and raise KeyboardInterrupt, so that ``--resume`` continues."""
        if distributed.is_distributed():
            log.warning("interrupted; the last checkpoint in %s is kept", self.output_dir)
            raise KeyboardInterrupt
        try:
            self._save()
            log.warning(
                "interrupted at step %d (epoch %d, batch %d); %s is current: continue with "
                "--resume",
                self.step,
                self.epoch + 1,
                self.batches.position,
                self.output_dir / LAST_NAME,
            )
        except Exception as err:  # the interrupt wins; say what happened
            log.warning("interrupted; could not save a checkpoint (%s)", err)
        raise KeyboardInterrupt

    def _prefill_queue(self) -> None:
        """Fill a method's queue before the first step (``method.prefill``), without training.

        Uses a batch source of its own (its own seed streams, :data:`PREFILL_OFFSET`), so the
        training data order is the same with and without prefilling.
        """
        wanted = self.cfg.method.wants_prefill(get_method(self.cfg.method.name).prefill_by_default)
        if not wanted:
            return
        was_training = self.method.training
        self.method.train()
        used = self.method.prefill(iter(self._batch_source(seed_offset=PREFILL_OFFSET)))
        self.method.train(was_training)
        log.info("queue prefilled with %d batch(es) of keys before the first step", used)

    def _train_step(
        self, images: Any, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step on a device batch (images: (B, C, H, W) or a list of views;
        labels (B,)): forward, finite-loss check (TrainingError), backward, ``after_step()``.
        Returns the loss averaged over ranks and the method's output dict."""
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
                f"{self.epoch + 1}, batch {self.batches.position}); the last good checkpoint in "
                f"{str(self.output_dir)!r} is kept. Lower optim.base_lr, use run.precision=fp32, "
                "or set run.detect_anomaly=true to find the operation"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step()
        return loss_mean, out

    def _train_epoch(self) -> tuple[float, float, bool]:
        cfg = self.cfg
        self.method.train()
        self.batches.set_epoch(self.epoch)
        bar: Any = None
        if cfg.run.progress and distributed.is_main_process():
            from tqdm import tqdm

            bar = tqdm(
                total=self.steps_per_epoch,
                initial=self.batches.position,
                desc=f"epoch {self.epoch + 1}/{cfg.optim.epochs}",
                dynamic_ncols=True,
            )
        lr = self.optimizer.param_groups[0]["lr"]
        t0, window_imgs, loss_value, ips = time.perf_counter(), 0, float("nan"), 0.0
        try:
            for images, labels in self.batches:
                loss_mean, out = self._train_step(images, labels)
                self.step += 1
                faults.inject(self.step, self.rank)
                loss_value = float(loss_mean.item())
                window_imgs += self.local_batch * self.world
                mid_epoch = self.batches.position < self.steps_per_epoch
                if self.step % cfg.run.log_every == 0 or not mid_epoch:
                    dt = time.perf_counter() - t0
                    ips = window_imgs / dt if dt > 0 else 0.0
                    record: dict[str, Any] = {
                        "epoch": self.epoch + 1,
                        "step": self.step,
                        "loss": loss_value,
                        "lr": lr,
                        "images_per_s": ips,
                        **tracking.method_scalars(out),  # a method's loss terms beside its loss
                    }
                    self._log(record)
                    t0, window_imgs = time.perf_counter(), 0
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.4g}", img_s=f"{ips:.0f}")
                    bar.update(1)
                if self.stop.requested and mid_epoch:
                    self._stop_on_interrupt()
                if mid_epoch and cfg.run.max_steps and self.step >= cfg.run.max_steps:
                    self._save()
                    return loss_value, ips, True
                if (
                    mid_epoch
                    and cfg.run.save_every_steps
                    and (self.step % cfg.run.save_every_steps == 0)
                ):
                    self._save()
        finally:
            if bar is not None:
                bar.close()
        self.scheduler.step()
        self.epoch += 1
        self._run_epoch_callbacks()
        top1 = None if self.best is None else self.best.top1(self.method, self.device)
        self._save()
        if self.best is not None and top1 is not None:
            self._log({"epoch": self.epoch, "step": self.step, "val_top1": top1}, "monitor")
            self.best.update(self.epoch, top1)
        if self.stop.requested:
            log.warning("interrupted after epoch %d: %s is current", self.epoch, self.output_dir)
            raise KeyboardInterrupt
        stop = bool(cfg.run.max_steps) and self.step >= cfg.run.max_steps
        return loss_value, ips, stop
