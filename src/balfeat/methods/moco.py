"""MoCo: momentum contrast with a queue of negative keys.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
https://arxiv.org/abs/1911.05722 (v1, ``mlp=False``); Chen et al., "Improved Baselines with
Momentum Contrastive Learning", https://arxiv.org/abs/2003.04297 (v2, ``mlp=True``).

Order of a training step (the same in 1 and N processes):

1. ``forward(images, labels)``: queries ``q`` from ``backbone``/``head``; keys ``k`` from
   ``backbone_k``/``head_k`` without gradient, with shuffle-BN across ranks when distributed,
   or (one process) shuffled and forwarded in ``bn_splits`` groups, the single-process stand-in
   of shuffle-BN from MoCo's CIFAR demo (the key head too when it has a BatchNorm, PaCo's
   ``head_bn``, as the whole key encoder sees one rank's shuffled batch in the reference);
   loss against the current queue. The keys (gathered over ranks) are kept as pending.
2. the trainer runs ``backward`` and ``optimizer.step()``.
3. ``after_step()``: momentum update of the key encoder, then the pending keys are enqueued.

The reference updates the key encoder at the start of the next forward and enqueues at the end of
the same forward; doing both in ``after_step`` is the same computation (the key encoder used at
step t+1 has seen the same updates), keeps the queue unmodified while autograd still needs it
(no ``K x dim`` copy per step) and leaves a checkpoint written after a step fully up to date.
Randomness (key shuffles, KCL's selection) comes from generators seeded with ``(seed, step)``,
and ``step`` is a buffer, so resuming from a checkpoint is exact.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from balfeat import distributed
from balfeat.losses.contrastive import moco_loss
from balfeat.methods.base import MethodBase, from_constructor, register, resolve_params
from balfeat.methods.inputs import backbone_out_dim, check_batch
from balfeat.methods.params import MoCoParams, MoCoV2Params, QueueParams
from balfeat.models.backbones import Backbone
from balfeat.models.batchnorm import batch_shuffle_ddp, batch_unshuffle_ddp, split_forward
from balfeat.models.heads import make_head
from balfeat.models.momentum import momentum_update
from balfeat.models.queue import KeyQueue


def _has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class MoCo(MethodBase):
    """Momentum contrast (InfoNCE against a queue of ``K`` keys).

    Submodules: ``backbone``, ``head`` (trained), ``backbone_k``, ``head_k`` (momentum copies),
    ``queue`` (``KeyQueue``); buffer ``step``.

    One class, registered twice: ``moco_v1`` reads :class:`~balfeat.methods.params.MoCoParams`
    (T 0.07, linear head), ``moco_v2`` :class:`~balfeat.methods.params.MoCoV2Params` (T 0.2, MLP
    head). Built from Python without ``params`` it is MoCo v1.

    Args:
        backbone: query encoder trunk (``out_dim`` features).
        params: the settings (``dim``, ``K``, ``m``, ``T``, ``mlp``, ``shuffle_bn``,
            ``bn_splits``: :class:`~balfeat.methods.params.QueueParams`, whose docstring says
            what each means); or pass them as keyword arguments (``MoCo(backbone, K=4096)``).
        backbone_k: key encoder trunk; default a deep copy of ``backbone``. Its weights are
            overwritten with ``backbone``'s.
        seed: seed of the key shuffles (and of KCL's positive selection).
    """

    views = 2
    uses_labels = False
    params_type: ClassVar[type[QueueParams]] = MoCoParams
    params: QueueParams
    step: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        params: QueueParams | None = None,
        backbone_k: Backbone | None = None,
        seed: int = 0,
        **overrides: Any,
    ) -> None:
        super().__init__()
        p = self.params = resolve_params(type(self).__name__, self.params_type, params, overrides)
        dim, K, m, T = p.dim, p.K, p.m, p.T
        self.backbone = backbone
        in_dim = backbone_out_dim(type(self).__name__, backbone)
        self.head: nn.Module = make_head(in_dim, dim, p.mlp)
        self.backbone_k = copy.deepcopy(backbone) if backbone_k is None else backbone_k
        self.backbone_k.load_state_dict(backbone.state_dict())
        self.head_k = copy.deepcopy(self.head)
        for param in [*self.backbone_k.parameters(), *self.head_k.parameters()]:
            param.requires_grad_(False)
        gen = torch.Generator().manual_seed(seed)
        self.queue = KeyQueue(K, dim, with_labels=self.uses_labels, generator=gen)
        self.register_buffer("step", torch.zeros(1, dtype=torch.long))
        self.dim, self.K, self.m, self.T = dim, K, m, T
        self.shuffle_bn, self.bn_splits, self.seed = p.shuffle_bn, p.bn_splits, seed
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def _generator(self, salt: int) -> torch.Generator:
        """A CPU generator seeded by (seed, step, salt): the same after resuming."""
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + int(self.step) * 7919 + salt) % (2**63 - 1)
        )

    def _device_generator(self, device: torch.device, salt: int) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + int(self.step) * 7919 + salt) % (2**63 - 1))
        return gen

    @torch.no_grad()
    def encode_keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """L2-normalised keys of this rank's images, with shuffle-BN / split-BN.

        Shape: (B, C, H, W) -> (B, dim).
        """
        if self.shuffle_bn and distributed.is_distributed():
            x, idx_unshuffle = batch_shuffle_ddp(im_k, self._generator(1))
            k = F.normalize(self.head_k(self.backbone_k(x)), dim=1)
            return batch_unshuffle_ddp(k, idx_unshuffle)
        if self.shuffle_bn and self.bn_splits > 1 and self.training:
            perm = torch.randperm(im_k.shape[0], generator=self._generator(1)).to(im_k.device)
            if _has_batchnorm(self.head_k):  # PaCo's head_bn: its BN sees the groups too
                encoder = nn.Sequential(self.backbone_k, self.head_k)
                k = F.normalize(split_forward(encoder, im_k[perm], self.bn_splits), dim=1)
            else:
                feats = split_forward(self.backbone_k, im_k[perm], self.bn_splits)
                k = F.normalize(self.head_k(feats), dim=1)
            return k[torch.argsort(perm)]
        return F.normalize(self.head_k(self.backbone_k(im_k)), dim=1)

    def encode_queries(self, im_q: torch.Tensor) -> torch.Tensor:
        """L2-normalised queries. Shape: (B, C, H, W) -> (B, dim)."""
        return F.normalize(self.head(self.backbone(im_q)), dim=1)

    def _check_views(
        self, images: Sequence[torch.Tensor] | torch.Tensor, labels: Any = None
    ) -> None:
        check_batch(type(self).__name__, images, labels, 2, self.uses_labels)

    def compute_loss(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """InfoNCE of ``q`` against ``k`` and the queue. Returns ``{"loss": scalar}``."""
        return {"loss": moco_loss(q, k, self.queue.keys, self.T)}

    def forward(
        self, images: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Contrastive loss of a batch of two views.

        Args:
            images: ``[view_q, view_k]``, each Shape: (B, C, H, W).
            labels: class ids (unused by MoCo, used by KCL). Shape: (B,).

        Returns:
            ``{"loss": scalar, ...}``.
        """
        self._check_views(images, labels)
        im_q, im_k = images
        q = self.encode_queries(im_q)
        k = self.encode_keys(im_k)
        out = self.compute_loss(q, k, labels)
        if self.training:
            keys_all = distributed.all_gather_concat(k.detach())
            labels_all = distributed.all_gather_concat(labels) if self.uses_labels else None
            self._pending = (keys_all, labels_all)
        return out

    @torch.no_grad()
    def after_step(self) -> None:
        """Momentum update of ``backbone_k``/``head_k``, then enqueue the last forward's keys."""
        momentum_update(self.backbone, self.backbone_k, self.m)
        momentum_update(self.head, self.head_k, self.m)
        if self._pending is not None:
            keys, labels = self._pending
            self.queue.enqueue(keys, labels)
            self._pending = None
        self.step += 1

    @torch.no_grad()
    def prefill(
        self,
        batches: Iterable[tuple[Sequence[torch.Tensor], torch.Tensor]],
        max_batches: int | None = None,
    ) -> int:
        """Fill the queue with keys of ``batches`` before training, without any update.

        As the reference KCL does before its first epoch (``K // global_batch`` batches through
        the model in train mode with ``update_key=False``), so that the label queue holds real
        classes from the first step. The reference runs the full forward, so the query encoder's
        BatchNorm running statistics move too: the query view goes through the query encoder
        here as well (no gradient, no optimiser step). Stops once ``K`` keys were enqueued or
        ``max_batches`` were used.

        Args:
            batches: ``(views, labels)`` pairs as the training loader yields them; the key view
                ``views[1]`` is used. Moved to the queue's device.
            max_batches: upper bound on the batches consumed.

        Returns:
            The number of batches used.
        """
        device = self.queue.keys.device
        used = 0
        for views, labels in batches:
            if self.queue.full or (max_batches is not None and used >= max_batches):
                break
            self._check_views(views, labels)
            with torch.no_grad():
                self.encode_queries(views[0].to(device))  # BN statistics, as the reference
            k = self.encode_keys(views[1].to(device))
            keys_all = distributed.all_gather_concat(k)
            labels_all = (
                distributed.all_gather_concat(labels.to(device)) if self.uses_labels else None
            )
            self.queue.enqueue(keys_all, labels_all)
            used += 1
        return used


# one module, two registrations: each with its own defaults (T, mlp); the recipes differ in
# augmentation and schedule too
register("moco_v1", views=2, params=MoCoParams, label="MoCo v1")(from_constructor(MoCo))
register("moco_v2", views=2, params=MoCoV2Params, label="MoCo v2")(from_constructor(MoCo))
