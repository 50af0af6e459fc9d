"""KCL: k-positive contrastive learning (MoCo whose positives include same-class queue keys).

Kang et al., "Exploring Balanced Feature Spaces for Representation Learning", ICLR 2021,
https://openreview.net/forum?id=OqtLIabPTit. Step order, shuffle-BN and resume behaviour are
MoCo's (see ``balfeat.methods.moco``); the queue also keeps each key's class.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from balfeat import distributed
from balfeat.errors import BalfeatError
from balfeat.losses.contrastive import kcl_loss, select_positives
from balfeat.methods.base import from_constructor, register, resolve_params
from balfeat.methods.moco import MoCo
from balfeat.methods.params import KCLParams, PositivesParams
from balfeat.models.backbones import Backbone


class KCL(MoCo):
    """MoCo with up to ``posk`` same-class queue keys as extra positives of each query.

    Before training call ``prefill(loader)`` to fill the label queue with real keys, as the
    reference does (otherwise early steps simply find fewer same-class keys).

    Args:
        backbone, backbone_k, seed: as ``MoCo`` (``seed`` also seeds the random selection,
            combined with step and rank).
        params: the settings (:class:`~balfeat.methods.params.KCLParams`: MoCo's plus ``posk``,
            ``selection`` and ``loss_type``; ``v2`` sets unchosen same-class logits to 0,
            ``sum`` is -log of the summed positive probability, see ``kcl_loss``); or pass them
            as keyword arguments (``KCL(backbone, posk=3)``).
    """

    uses_labels = True
    params_type: ClassVar[type[PositivesParams]] = KCLParams

    def __init__(
        self,
        backbone: Backbone,
        *,
        params: PositivesParams | None = None,
        backbone_k: Backbone | None = None,
        seed: int = 0,
        **overrides: Any,
    ) -> None:
        p = resolve_params(type(self).__name__, self.params_type, params, overrides)
        if p.posk > p.K:
            raise BalfeatError(
                f"{type(self).__name__} posk={p.posk} is larger than the queue (K={p.K} keys); "
                "lower posk (paper: 6) or raise K"
            )
        super().__init__(backbone, params=p, backbone_k=backbone_k, seed=seed)
        self.posk = p.posk
        # TSC's section has no loss_type: its authors' loss is always v1
        self.loss_type = p.loss_type if isinstance(p, KCLParams) else "v1"
        self.selection = p.selection

    def compute_loss(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """KCL loss. Returns ``{"loss": scalar, "positives": mean queue positives per query}``."""
        gen = self._device_generator(q.device, 2 + distributed.rank())
        # sorts the label queue once for this step
        positives = select_positives(labels, self.queue.labels, self.posk, self.selection, gen)
        loss = kcl_loss(q, k, self.queue.keys, positives, self.T, self.loss_type)
        n_pos = (positives.positions >= 0).sum(dim=1).to(q.dtype).mean()
        return {"loss": loss, "positives": n_pos.detach()}


register("kcl", views=2, params=KCLParams, prefill_by_default=True, label="KCL")(
    from_constructor(KCL)
)
