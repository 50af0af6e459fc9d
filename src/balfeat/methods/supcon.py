"""SupCon: against a labelled key queue (MoCo machinery) and in-batch (two views, one encoder).

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, https://arxiv.org/abs/2004.11362,
loss ``L^sup_out`` (eq. 2) with the contrast set ``A(i) = {k_i} ∪ queue`` of MoCo: the queue
variant that the TSC and PaCo papers use as their SupCon baseline (see
``balfeat.losses.supcon.supcon_queue_loss``). It is KCL (``loss_type="v1"``) with every same-class
queue key chosen (``posk >= K``), which ``tests/methods/test_methods_supcon.py`` checks on
training steps (loss and gradient).
Step order, shuffle-BN, prefill and resume behaviour are MoCo's / KCL's; by default the queue is
not prefilled: the TSC authors' starts as random keys labelled -1 (``moco/builder.py:224-225``).

The in-batch form (the paper's own setting, registry name ``supcon_inbatch``) contrasts the two
views of every image of the (global) batch with ``balfeat.losses.supcon.supcon_loss``, which
equals the authors' ``SupConLoss`` (github:HobbitLong/SupContrast) in loss and gradient (2e-15,
fp64). Their class multiplies the loss by ``T / base_temperature`` with ``base_temperature``
fixed at 0.07 while ``T`` is a flag (default 0.07: factor 1; the paper's T = 0.1: factor 1.43);
``SupConBatch`` applies no such factor, i.e. at T = 0.1 it trains like theirs with a learning
rate 1.43x smaller (``supcon_loss(..., base_temperature=0.07)`` gives their value). The queue
form equals the TSC authors' SupCon baseline (their ``KCL`` with every same-class key a
positive, github:LTH14/targeted-supcon) to 2e-15.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from balfeat import distributed
from balfeat.losses.supcon import supcon_loss, supcon_queue_loss
from balfeat.methods._gather import gather_rows
from balfeat.methods.base import MethodBase, from_constructor, register, resolve_params
from balfeat.methods.inputs import backbone_out_dim, check_batch
from balfeat.methods.moco import MoCo
from balfeat.methods.params import SupConBatchParams, SupConParams
from balfeat.models.backbones import Backbone
from balfeat.models.heads import LinearHead, MLPHead


class SupConQueue(MoCo):
    """MoCo whose positives are the query's own key and every queue key of its class.

    Args: as ``MoCo``; ``params`` is a :class:`~balfeat.methods.params.SupConParams` (MoCo's
    fields; defaults T 0.07 and an MLP head, as the TSC authors' SupCon baseline).

    ``forward`` returns ``{"loss", "positives"}`` (the mean number of queue keys of the query's
    class, i.e. the positives besides its own key).
    """

    uses_labels = True
    params_type = SupConParams

    def compute_loss(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """SupCon-queue loss of queries (B, dim), keys (B, dim) and labels (B,)."""
        loss = supcon_queue_loss(q, k, self.queue.keys, self.queue.labels, labels, self.T)
        with torch.no_grad():
            ql = self.queue.labels
            top = max(int(labels.max()), int(ql.max())) + 1
            counts = torch.bincount(ql[ql >= 0], minlength=top)  # (C,), no (B, K) mask
        return {"loss": loss, "positives": counts[labels].to(q.dtype).mean()}


register("supcon", views=2, params=SupConParams, label="SupCon (queue)")(
    from_constructor(SupConQueue)
)


class SupConBatch(MethodBase):
    """In-batch SupCon (``L^sup_out``, eq. 2 of Khosla et al.): one encoder, two views per image.

    Every view of the global batch is an anchor; its positives are the other views of its class
    (the other view of the same image included). No queue, no momentum encoder. With several
    processes the contrast set is the global batch (``balfeat.methods._gather``).

    Submodules ``backbone``, ``head``; buffer ``step``.

    Args:
        backbone: the encoder trunk.
        params: the settings (:class:`~balfeat.methods.params.SupConBatchParams`: ``dim``,
            ``T``, ``mlp``; defaults 128, 0.07 as the authors' ``--temp`` default, MLP); or pass
            them as keyword arguments.

    ``forward`` returns ``{"loss"}``.
    """

    views = 2
    uses_labels = True
    params_type = SupConBatchParams
    step: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        params: SupConBatchParams | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        p = self.params = resolve_params("SupCon", SupConBatchParams, params, overrides)
        self.backbone = backbone
        in_dim = backbone_out_dim(type(self).__name__, backbone)
        self.head: nn.Module = MLPHead(in_dim, p.dim) if p.mlp else LinearHead(in_dim, p.dim)
        self.register_buffer("step", torch.zeros(1, dtype=torch.long))
        self.T = p.T

    def forward(
        self, images: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """In-batch SupCon of ``[view_1, view_2]`` (each (B, C, H, W)) and labels (B,)."""
        check_batch("SupCon", images, labels, 2, True)
        b = labels.shape[0]
        z = F.normalize(self.head(self.backbone(torch.cat(list(images)))), dim=1)  # (2B, dim)
        z_all = torch.cat([gather_rows(z[:b]), gather_rows(z[b:])])
        labels_all = distributed.all_gather_concat(labels)
        return {"loss": supcon_loss(z_all, labels_all.repeat(2), self.T)}

    @torch.no_grad()
    def after_step(self) -> None:
        """Counts the step (nothing else to update)."""
        self.step += 1


register("supcon_inbatch", views=2, params=SupConBatchParams, label="SupCon (in-batch)")(
    from_constructor(SupConBatch)
)
