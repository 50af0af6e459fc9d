"""The one epoch loop on images, shared by the reference probe and full fine-tuning.

The reference probe (MoCo's ``main_lincls.py``) trains only the linear classifier: the backbone
stays in eval mode (BatchNorm running statistics must not move) and runs without gradients on
freshly augmented images every step. Fine-tuning (BalFeat's ``2full`` step) trains backbone and
classifier together with the backbone in train mode. Both validate every ``cfg.eval_every``
epochs (and after the last) and keep the best epoch by validation top-1 (:class:`BestEpoch`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from balfeat.classify.linear import (
    BestEpoch,
    ProbeConfig,
    ProbeResult,
    check_finite,
    set_lr,
    topk_hits,
)
from balfeat.data.prepare import dataset_targets
from balfeat.errors import BalfeatError, TrainingError


def balanced_sampler(dataset: Dataset[Any], repeat: int, seed: int) -> Sampler[int]:
    """The class-balanced sampler of one process (the reference's ``--balanced --bal_repeat``)."""
    from balfeat.data.samplers import ClassBalancedSampler

    return ClassBalancedSampler(
        dataset_targets(dataset), repeat=repeat, seed=seed, num_replicas=1, rank=0
    )


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without parameters)."""
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def snapshot_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of every parameter and buffer (BN running stats included)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def check_backbone_unchanged(
    backbone: nn.Module, snapshot: dict[str, torch.Tensor], where: str = "linear probe"
) -> None:
    """The reference sanity check: the frozen backbone must be exactly as before training.

    Raises:
        TrainingError: listing the weights or buffers (e.g. BN running stats) that changed.
    """
    now = backbone.state_dict()
    changed = [
        k
        for k, v in snapshot.items()
        if k not in now or now[k].shape != v.shape or not torch.equal(now[k].detach().cpu(), v)
    ]
    if changed:
        shown = ", ".join(changed[:8]) + (
            f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        )
        raise TrainingError(
            f"{where}: the frozen backbone changed during training ({len(changed)} tensors: "
            f"{shown}); a frozen backbone must run in eval mode with no gradient - check that "
            "its forward does not switch BatchNorm to train mode or update weights"
        )


def _val_logits(
    backbone: nn.Module, fc: nn.Module, loader: DataLoader[Any], dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) on the CPU and labels (N,) of a whole validation loader."""
    outs: list[torch.Tensor] = []
    labs: list[torch.Tensor] = []
    with torch.no_grad():
        for images, labels in loader:
            outs.append(fc(backbone(images.to(dev)).float()).cpu())
            labs.append(torch.as_tensor(labels, dtype=torch.int64))
    return torch.cat(outs), torch.cat(labs)


def train_on_images(
    backbone: nn.Module,
    classifier: nn.Module,
    train_dataset: Dataset[Any],
    val_dataset: Dataset[Any],
    cfg: ProbeConfig,
    device: torch.device | str | None = None,
    train_backbone: bool = False,
    protocol: str = "reference",
    num_workers: int = 0,
    drop_last: bool = False,
    log: Callable[[str], None] | None = None,
    keep: Literal["best", "last"] = "best",
) -> ProbeResult:
    """Train ``classifier`` (and, with ``train_backbone``, the backbone) on augmented images.

    Frozen (``train_backbone=False``): the backbone runs in eval mode without gradients, only the
    classifier is optimised, and afterwards every backbone weight and buffer is compared with its
    value before training (``main_lincls.py``'s ``sanity_check``). Fine-tuning: the backbone runs
    in train mode, both are optimised, and the best epoch is restored in both.

    Every epoch's order and augmentations are seeded by ``(cfg.seed, epoch)``; torch's global RNG
    is forked, so the caller's stream is left alone.

    Args:
        backbone: feature extractor (B, C, H, W) -> (B, D).
        classifier: (B, D) -> (B, C), trained in place (moved to the device).
        train_dataset: training images with the augmenting transform.
        val_dataset: validation images with the evaluation transform.
        cfg: hyper-parameters (``balanced`` samples class-balanced).
        device: where to run; defaults to the backbone's device.
        train_backbone: fine-tune the backbone too.
        protocol: name recorded in the result and the log lines.
        num_workers: DataLoader workers.
        drop_last: drop the last incomplete training batch.
        log: one line per validated epoch; also turns on a progress bar per epoch (stderr).
        keep: ``best``: the epoch of the best validation top-1; ``last``: the last epoch.

    Returns:
        The :class:`ProbeResult` of the kept epoch.

    Raises:
        TrainingError: a non-finite loss, or a frozen backbone that changed.
    """
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else module_device(backbone)
    backbone.to(dev)
    fc = classifier.to(dev)
    snap = None if train_backbone else snapshot_state(backbone)
    requires = [p.requires_grad for p in backbone.parameters()]
    for p in backbone.parameters():
        p.requires_grad_(train_backbone)
    params = (list(backbone.parameters()) if train_backbone else []) + list(fc.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sampler = balanced_sampler(train_dataset, cfg.repeat, cfg.seed) if cfg.balanced else None
    loader_gen = torch.Generator()
    pin = dev.type == "cuda"
    val_loader = DataLoader(
        val_dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=pin,
    )  # fmt: skip
    tracker = BestEpoch(keep)
    val_labels = torch.empty(0, dtype=torch.int64)
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        for epoch in range(cfg.epochs):
            lr = cfg.lr_at(epoch)
            set_lr(opt, lr)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            loader_gen.manual_seed(cfg.seed * 100003 + epoch)
            loader = DataLoader(
                train_dataset,
                batch_size=cfg.batch_size,
                shuffle=sampler is None,
                sampler=sampler,
                num_workers=num_workers,
                pin_memory=pin,
                generator=loader_gen,
                drop_last=drop_last,
            )
            backbone.train(train_backbone)
            fc.train()
            total_loss, hits, seen = 0.0, 0, 0
            batches: Any = loader
            if log is not None:  # a progress bar per epoch (off with --quiet)
                from tqdm import tqdm

                batches = tqdm(
                    loader,
                    desc=f"[{protocol}] epoch {epoch + 1}/{cfg.epochs}",
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                )
            with torch.random.fork_rng(devices=cuda_devices):
                torch.manual_seed(cfg.seed * 100003 + epoch)
                for images, labels in batches:
                    images = images.to(dev, non_blocking=True)
                    labels = torch.as_tensor(labels).to(dev, non_blocking=True)
                    with torch.set_grad_enabled(train_backbone):
                        feats = backbone(images)
                    logits = fc(feats.float())
                    loss = F.cross_entropy(logits, labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total_loss += float(loss.detach()) * len(labels)
                    hits += topk_hits(logits.detach(), labels)
                    seen += len(labels)
            record = {
                "epoch": float(epoch + 1),
                "lr": lr,
                "loss": total_loss / max(seen, 1),
                "train_top1": hits * 100.0 / max(seen, 1),
            }
            where = protocol if train_backbone else f"{protocol} probe"
            check_finite(record, where, epoch, "lower the learning rate (--lr)")
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                backbone.eval()
                fc.eval()
                vlog, val_labels = _val_logits(backbone, fc, val_loader, dev)
                top1 = topk_hits(vlog, val_labels) * 100.0 / max(len(val_labels), 1)
                record["val_top1"] = top1
                states = {"fc": fc.state_dict()}
                if train_backbone:
                    states["backbone"] = backbone.state_dict()
                tracker.update(epoch + 1, top1, vlog, states)
                if log is not None:
                    log(
                        f"[{protocol}] epoch {epoch + 1}/{cfg.epochs} lr {lr:.4g} "
                        f"loss {record['loss']:.4f} train {record['train_top1']:.2f} "
                        f"val {top1:.2f}"
                    )
            tracker.history.append(record)
    finally:
        for p, r in zip(backbone.parameters(), requires, strict=True):
            p.requires_grad_(r)
    if snap is not None:
        check_backbone_unchanged(backbone, snap, f"{protocol} probe")
    if not tracker.state:
        raise BalfeatError(f"{protocol}: no epoch was validated")
    fc.load_state_dict(tracker.state["fc"])
    if train_backbone:
        backbone.load_state_dict(tracker.state["backbone"])
    return ProbeResult(
        classifier=cast(nn.Linear, fc.cpu().eval()),  # an LWS module where LWS trains
        best_epoch=tracker.epoch,
        best_top1=tracker.top1,
        val_logits=tracker.logits,
        val_labels=val_labels,
        history=tracker.history,
        protocol=protocol,
        seconds=time.perf_counter() - start,
    )
