"""Any registered balfeat method as a Lightning ``LightningModule`` (extra ``balfeat[lightning]``).

A thin adapter: the method does the work; Lightning runs the loop. What it maps:

- ``training_step``: ``method(images, labels)["loss"]``; every scalar of the method's output
  dict is logged (``train/loss``, ``train/acc``, ...).
- ``on_train_batch_end``: ``method.after_step()`` (momentum update and queue update of the MoCo
  family, BCL's step count), called once after every optimiser step, as balfeat's own trainer
  does.
- ``configure_optimizers``: the SGD and the per-epoch learning-rate schedule of
  :func:`balfeat.engine.build.build_optimizer` / :func:`~balfeat.engine.build.build_scheduler`
  from the same ``optim.*`` values (``lr = base_lr * batch_size / 256``, warm-up, cosine or
  step).
- ``on_train_start``: the key queue is prefilled when ``method.prefill`` asks for it (MoCo family),
  from the trainer's own training loader (balfeat's trainer uses a loader of its own there, so
  the data order of the first epoch differs from ``balfeat pretrain``).
- ``set_class_counts`` (PaCo, GPaCo, BCL) is called with the training counts given to the
  constructor.

Checkpoints: Lightning saves the module's state dict, which holds the method's queues, pointers
and momentum encoder as buffers, so resuming through Lightning restores them. Mixed precision,
devices and DDP are Lightning's; the methods gather across ranks through ``torch.distributed``
as they do under ``balfeat pretrain``.

Example::

    import lightning as L
    from balfeat.engine.config import load_config, overrides_for
    from balfeat.integrations.lightning import BalfeatModule, train_loader

    cfg = load_config(None, overrides_for("kcl", ["method.name=kcl", "data.dataset=synthetic"]))
    loader = train_loader(cfg)
    module = BalfeatModule(cfg, num_classes=loader.dataset.num_classes)
    trainer = L.Trainer(max_epochs=cfg.optim.epochs, use_distributed_sampler=False)
    trainer.fit(module, loader)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from balfeat import distributed
from balfeat.engine import build
from balfeat.engine.config import Config
from balfeat.errors import ConfigError

_HINT = "the Lightning adapter needs lightning: pip install 'balfeat[lightning]'"


def _lightning_module_class() -> Any:
    """``lightning.pytorch.LightningModule``, or ``None`` without the extra."""
    try:
        import lightning.pytorch as pl
    except ImportError:
        return None
    return pl.LightningModule


_LightningModule = _lightning_module_class()
_Base: Any = _LightningModule if _LightningModule is not None else nn.Module


class BalfeatModule(_Base):
    """A ``LightningModule`` around a registered balfeat method.

    Args:
        cfg: a resolved config (:func:`balfeat.engine.config.load_config`); ``method.*`` and
            ``model.*`` build the method, ``optim.*`` the optimiser and schedule.
        num_classes: classes of the training labels.
        method: an already built method to wrap instead of building one from ``cfg``.
        class_counts: training images per class, (C,), for the methods that use the class prior
            (PaCo, GPaCo, BCL: required there, as ``balfeat pretrain`` computes it).

    Raises:
        ConfigError: lightning is not installed, or a method that needs ``class_counts`` got none.
    """

    def __init__(
        self,
        cfg: Config,
        num_classes: int,
        method: nn.Module | None = None,
        class_counts: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        if _LightningModule is None:
            raise ConfigError(_HINT)
        super().__init__()
        self.cfg = cfg
        self.method = method if method is not None else build.build_method(cfg, num_classes)
        # the logit-adjusted methods keep the prior in a ``log_prior`` buffer (uniform until set)
        if class_counts is None and hasattr(self.method, "log_prior"):
            raise ConfigError(
                f"method {cfg.method.name!r} uses the class prior: pass class_counts (training "
                "images per class) to BalfeatModule"
            )
        set_counts = getattr(self.method, "set_class_counts", None)
        if class_counts is not None and callable(set_counts):
            set_counts(torch.as_tensor(class_counts, dtype=torch.int64))

    def forward(self, images: Any, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The method's forward: ``{"loss": scalar, ...}``."""
        out: dict[str, torch.Tensor] = self.method(images, labels)
        return out

    def training_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One batch ``(images, labels)``; returns the loss Lightning back-propagates."""
        images, labels = batch
        out = self(images, labels)
        size = int(labels.shape[0])
        for key, value in out.items():
            if value.dim() == 0:
                self.log(f"train/{key}", value.detach().float(), batch_size=size)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """``method.after_step()`` after the optimiser step (momentum, queue, step count)."""
        after_step = getattr(self.method, "after_step", None)
        if after_step is not None:
            after_step()

    def on_train_start(self) -> None:
        """Prefill the key queue where ``method.prefill`` asks for it, before the first step."""
        from balfeat.methods import get_method

        prefill = getattr(self.method, "prefill", None)
        wanted = self.cfg.method.wants_prefill(get_method(self.cfg.method.name).prefill_by_default)
        if prefill is None or not wanted or self.global_step > 0:
            return
        prefill(iter(self.trainer.train_dataloader))  # it moves the batches to its device

    def configure_optimizers(self) -> dict[str, Any]:
        """balfeat's SGD and per-epoch schedule from ``optim.*``."""
        optimizer = build.build_optimizer(self.cfg, self.method)
        scheduler = build.build_scheduler(self.cfg, optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "frequency": 1},
        }


def train_loader(cfg: Config, world_size: int = 1, seed_offset: int = 0) -> DataLoader[Any]:
    """The training ``DataLoader`` of ``balfeat pretrain`` for ``cfg`` (dataset, transform with
    the method's views, ``data.balanced`` sampler, batch ``optim.batch_size / world_size``,
    seeded workers). ``loader.dataset`` has ``targets`` and ``num_classes``.

    balfeat's samplers shard by rank themselves (build the loader after the process group is
    up) and Lightning calls their ``set_epoch``: give ``L.Trainer(use_distributed_sampler=False)``
    so Lightning does not shard them a second time.
    """
    # Lightning moves host batches itself: the DataLoader path, never the on-device loader
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, loader="pil"))
    dataset = build.build_train_dataset(cfg)
    source = build.build_batch_source(
        cfg,
        dataset,
        build.build_sampler(cfg, dataset),
        batch_size=build.local_batch_size(cfg, world_size),
        device=torch.device("cpu"),
        rank=distributed.rank(),
        seed_offset=seed_offset,
    )
    loader = source.host_loader()
    assert isinstance(loader, DataLoader)  # data.loader=pil
    return loader
