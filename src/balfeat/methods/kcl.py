"""KCL: k-positive contrastive learning (MoCo whose positives include same-class queue keys).

Kang et al., "Exploring Balanced Feature Spaces for Representation Learning", ICLR 2021,
https://openreview.net/forum?id=OqtLIabPTit. Step order, shuffle-BN and resume behaviour are
MoCo's (see ``balfeat.methods.moco``); the queue also keeps each key's class.
"""

from __future__ import annotations

import torch

from balfeat import distributed
from balfeat.errors import BalfeatError
from balfeat.losses.contrastive import kcl_loss, select_positives
from balfeat.methods import from_constructor, register
from balfeat.methods.moco import MoCo
from balfeat.methods.params import KCLParams, check_arguments
from balfeat.models.backbones import Backbone


class KCL(MoCo):
    """MoCo with up to ``posk`` same-class queue keys as extra positives of each query.

    Before training call ``prefill(loader)`` to fill the label queue with real keys, as the
    reference does (otherwise early steps simply find fewer same-class keys).

    Args:
        backbone, backbone_k, dim, K, m, T, mlp, shuffle_bn, bn_splits: as ``MoCo``
            (paper defaults: dim 128, K 65536, m 0.999, T 0.07).
        posk: the most queue positives per query (paper: 6).
        loss_type: ``"v1"`` (paper), ``"v2"`` (unchosen same-class logits set to 0) or
            ``"sum"`` (-log of the summed positive probability); see ``kcl_loss``.
        selection: ``"random"`` (uniform among same-class keys) or ``"queue_order"`` (the first
            ``posk`` in queue index order).
        seed: seed of key shuffles and of the random selection (combined with step and rank).
    """

    uses_labels = True

    def __init__(
        self,
        backbone: Backbone,
        backbone_k: Backbone | None = None,
        dim: int = 128,
        K: int = 65536,
        m: float = 0.999,
        T: float = 0.07,
        mlp: bool = False,
        shuffle_bn: bool = True,
        bn_splits: int = 8,
        posk: int = 6,
        loss_type: str = "v1",
        selection: str = "random",
        seed: int = 0,
    ) -> None:
        check_arguments(KCLParams, "KCL", posk=posk, loss_type=loss_type, selection=selection)
        if posk > K:
            raise BalfeatError(
                f"KCL posk={posk} is larger than the queue (K={K} keys); lower posk (paper: 6) "
                "or raise K"
            )
        super().__init__(backbone, backbone_k, dim, K, m, T, mlp, shuffle_bn, bn_splits, seed)
        self.posk = posk
        self.loss_type = loss_type
        self.selection = selection

    def compute_loss(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """KCL loss. Returns ``{"loss": scalar, "positives": mean queue positives per query}``."""
        gen = self._device_generator(q.device, 2 + distributed.rank())
        positives = select_positives(  # sorts the label queue once for this step
            labels,
            self.queue.labels,
            self.posk,
            self.selection,  # type: ignore[arg-type]
            gen,
        )
        loss = kcl_loss(
            q,
            k,
            self.queue.keys,
            positives,
            self.T,
            self.loss_type,  # type: ignore[arg-type]
        )
        n_pos = (positives.positions >= 0).sum(dim=1).to(q.dtype).mean()
        return {"loss": loss, "positives": n_pos.detach()}


register("kcl", views=2, prefill_by_default=True, params=KCLParams)(from_constructor(KCL))
