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
import logging
import time
import warnings
from collections.abc import Iterator
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
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from balfeat.engine.config import Config, config_to_dict, save_config
from balfeat.engine.metrics_log import MetricsLog
from balfeat.errors import CheckpointError, TrainingError

log = logging.getLogger("balfeat.engine")


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
    ) -> None:
        self.cfg = cfg
        self._method_arg = method
        self._dataset_arg = train_dataset
        self.resume = resume
        self.output_dir = Path(cfg.run.output_dir)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._metrics: MetricsLog | None = None

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg
        distributed.init_distributed(timeout_s=cfg.run.timeout_s)
        self.rank = distributed.rank()
        self.world = distributed.world_size()
        try:
            self.device = default_device(cfg.run.device)
        except ValueError as err:
            raise TrainingError(str(err)) from None
        seed_everything(cfg.run.seed)

        self.dataset = self._dataset_arg or build.build_train_dataset(cfg)
        num_classes = int(getattr(self.dataset, "num_classes", 0)) or int(
            np.asarray(self.dataset.targets).max() + 1  # type: ignore[attr-defined]
        )
        self.method = self._method_arg or build.build_method(cfg, num_classes)
        self.method.to(self.device)
        if cfg.run.channels_last:
            self.method.to(memory_format=torch.channels_last)

        self.amp_dtype: torch.dtype | None = None
        if cfg.run.amp != "none":
            if self.device.type != "cuda":
                warnings.warn(
                    f"run.amp={cfg.run.amp} needs a GPU; training in float32 on {self.device.type}",
                    stacklevel=2,
                )
            else:
                self.amp_dtype = torch.bfloat16 if cfg.run.amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )

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
            path = Path(self.resume)
        state = load_checkpoint(
            path,
            map_location=self.device,
            expect_method=self.cfg.method.name,
            expect_backbone=self.cfg.model.backbone,
        )
        try:
            self.method.load_state_dict(state["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this method/architecture: {err}"
            ) from None
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
            if batch_in_epoch == 0:
                save_checkpoint(self.output_dir, state, keep_last=self.cfg.run.keep_last)
            else:  # mid-epoch: only the ``last.pth`` pointer moves
                atomic_save(state, self.output_dir / LAST_NAME)
        distributed.barrier()

    # ------------------------------------------------------------------ train
    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if distributed.is_main_process():
            if self._metrics is None:
                self._metrics = MetricsLog(self.output_dir)
            self._metrics.write(record)

    def fit(self) -> dict[str, Any]:
        """Train until ``optim.epochs`` (or ``run.max_steps``); returns a summary dict."""
        self._setup()
        cfg = self.cfg
        if distributed.is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")
            if self.step == 0:  # a fresh run does not append to an older run's metrics
                (self.output_dir / "metrics.jsonl").unlink(missing_ok=True)
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
        with anomaly:
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

    def _prefill_by_default(self) -> bool:
        """Whether the registered method asks for a prefilled queue (``method.prefill=auto``)."""
        from balfeat.methods import get_method

        return get_method(self.cfg.method.name).prefill_by_default

    def _prefill_queue(self) -> None:
        """Fill a method's queue before the first step (``method.prefill``), without training.

        Uses a loader of its own (seeded from ``run.seed``, not the training loader's generator),
        so the training data order is the same with and without prefilling.
        """
        cfg = self.cfg
        prefill = getattr(self.method, "prefill", None)
        wanted = cfg.method.prefill == "always" or (
            cfg.method.prefill == "auto" and self._prefill_by_default()
        )
        if prefill is None or not wanted:
            return
        generator = torch.Generator()
        generator.manual_seed(cfg.run.seed + 7919 + 1000003 * self.rank)
        loader = build.build_loader(
            cfg,
            self.dataset,
            self.sampler,
            self.local_batch,
            generator,
            pin_memory=self.device.type == "cuda",
        )

        def batches() -> Iterator[tuple[Any, torch.Tensor]]:
            for images, labels in loader:
                yield _to_device(images, self.device, cfg.run.channels_last), labels

        was_training = self.method.training
        self.method.train()
        used = prefill(batches())
        self.method.train(was_training)
        log.info("queue prefilled with %d batch(es) of keys before the first step", used)

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
        cfg = self.cfg
        images = _to_device(images, self.device, cfg.run.channels_last)
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
                f"{str(self.output_dir)!r} is kept. Lower optim.base_lr, use run.amp=none, "
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
        loader = build.build_loader(
            cfg,
            self.dataset,
            sampler,
            self.local_batch,
            self.loader_generator,
            pin_memory=self.device.type == "cuda",
        )
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
        self._save(0)
        stop = bool(cfg.run.max_steps) and self.step >= cfg.run.max_steps
        return loss_value, ips, stop
