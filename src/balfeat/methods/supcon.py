"""SupCon against a labelled key queue: MoCo machinery, every same-class key is a positive.

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, https://arxiv.org/abs/2004.11362,
loss ``L^sup_out`` (eq. 2) with the contrast set ``A(i) = {k_i} ∪ queue`` of MoCo: the queue
variant that the TSC and PaCo papers use as their SupCon baseline (see
``balfeat.losses.supcon.supcon_queue_loss``). It is KCL (``loss_type="v1"``) with every same-class
queue key chosen (``posk >= K``), which ``tests/methods/test_methods_supcon.py`` checks on
training steps (loss and gradient).
Step order, shuffle-BN, prefill and resume behaviour are MoCo's / KCL's.
"""

from __future__ import annotations

from typing import Any

import torch

from balfeat.losses.supcon import supcon_queue_loss
from balfeat.methods import register
from balfeat.methods.moco import MoCo, moco_kwargs
from balfeat.models.backbones import Backbone


class SupConQueue(MoCo):
    """MoCo whose positives are the query's own key and every queue key of its class.

    Args:
        backbone, backbone_k, dim, K, m, T, mlp, shuffle_bn, bn_splits, seed: as ``MoCo``.

    ``forward`` returns ``{"loss", "positives"}`` (the mean number of queue keys of the query's
    class, i.e. the positives besides its own key).
    """

    uses_labels = True

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


@register("supcon", views=2, prefill_by_default=True)
def build_supcon(params: Any, backbone: Backbone, num_classes: int, seed: int) -> SupConQueue:
    """Registry builder: SupCon against the label queue (prefilled like KCL's)."""
    return SupConQueue(backbone, seed=seed, **moco_kwargs(params))
