"""BCL: balanced contrastive learning jointly with a logit-adjusted classifier.

Zhu et al., "Balanced Contrastive Learning for Long-Tailed Visual Recognition", CVPR 2022,
https://arxiv.org/abs/2207.09052 (the loss and its class-averaging / class-complement parts are in
``balfeat.losses.bcl``). One encoder (no queue, no momentum encoder): the backbone feature goes to
a projection head (contrastive features, ``dim``) and to the classifier ``fc``; the classifier
weights pass through a prototype head of the same shape as the projection head to give the class
prototypes. Loss ``λ·CE_LA(fc(view_1)) + μ·BCL([z_1, z_2], prototypes)``.

Compared with the authors' code (github:FlamieZhu/Balanced-Contrastive-Learning, ``main.py``,
``loss/contrastive.py``, ``loss/logitadjust.py``, ``models/resnext.py``), checked on identical
inputs in fp64: ``bcl_total`` equals ``α·LogitAdjust + β·BalSCL`` in loss and gradients (≤ 1e-15).
The same: the classifier is their ``NormedLinear`` by default (``cosine_classifier``:
``30·cos(feature, w_c)``, their ``--use_norm True``); the prototypes are the prototype head applied
to the classifier's raw weight vectors, then normalised; the prior is ``log π`` of the training
counts (τ = 1); evaluation uses the classifier's logits without adjustment (``classify``).
Views: the authors feed three crops per image (``main.py`` ``TwoCropTransform``: one RandAugment
crop to the classifier, two SimCLR-like crops to the contrastive term, all three through the
backbone as one batch); ``method.views=3`` with ``data.augmentation=bcl_randcls_sim`` does the
same. The default ``method.views=2`` keeps balfeat's earlier two-view BCL (the classifier sees
the first of the two contrastive views), so existing results hold. Their projection head
``head`` and prototype head ``head_fc`` are both
``Linear(F, F)-BatchNorm1d(F)-ReLU-Linear(F, feat_dim)`` (``models/resnext.py:290-292,
301-302``, ``F`` the backbone feature size, ``feat_dim`` 1024);
``head_bn=True`` builds both so (the recipes set it; the default False keeps the BN-free heads of
earlier configs and checkpoints). The prototype head's BN normalises over the C class vectors
(their ``head_fc(fc.weight.T)``), the same on every rank. With several processes the
contrastive term is computed over the global batch (``balfeat.methods._gather``), the
cross-entropy over the local batch (DDP averages it), so N processes compute what one does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from balfeat import distributed
from balfeat.losses.bcl import bcl_loss, logit_adjusted_ce
from balfeat.methods._gather import gather_rows
from balfeat.methods.base import from_constructor, register, resolve_params
from balfeat.methods.inputs import check_batch
from balfeat.methods.paco import HeadClassifier
from balfeat.methods.params import HeadParams
from balfeat.models.backbones import Backbone
from balfeat.models.heads import make_head
from balfeat.typed_config import bounds


@dataclass
class BCLParams(HeadParams):
    """``bcl``: the ``method`` section of BCL (Zhu et al. 2022, Eq. 9).

    Head fields with the authors' values (``dim`` 1024: their ``--feat_dim``; T 0.07; MLP
    heads), and:

    Attributes:
        ce_weight: ``λ``, weight of the logit-adjusted cross-entropy branch (authors: 1.0).
        bcl_weight: ``μ``, weight of the balanced contrastive term (authors: 0.35).
        cosine_classifier: the authors' cosine classifier ``30·cos(f, w_c)`` (their default
            ``--use_norm True``); False: a plain linear layer.
        head_bn: a ``BatchNorm1d`` in the projection and the prototype MLP heads,
            ``Linear-BN-ReLU-Linear``, as the authors' ``head`` / ``head_fc``
            (``models/resnext.py:291, 301``); needs ``mlp``.
        views: crops per image: 2 (the classifier sees the first contrastive view) or 3 (the
            authors': a classifier crop and two contrastive crops).
    """

    name: str = "bcl"
    dim: int = field(default=1024, metadata=bounds(ge=1))
    mlp: bool = True
    ce_weight: float = field(default=1.0, metadata=bounds(ge=0))
    bcl_weight: float = field(default=0.35, metadata=bounds(ge=0))
    cosine_classifier: bool = True
    head_bn: bool = False
    views: int = field(default=2, metadata=bounds(ge=2, le=3))


class CosineClassifier(nn.Linear):
    """``scale · cos(f, w_c)`` for each class ``c`` (no bias): BCL's classifier.

    A ``Linear`` whose ``weight`` (C, in_dim) holds the class vectors ``w_c``, initialised as
    random unit vectors; only their direction enters the logits, their raw values also feed
    BCL's prototype head.

    Args:
        in_dim: feature size.
        num_classes: C.
        scale: ``s`` (authors: 30).
    """

    def __init__(self, in_dim: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__(in_dim, num_classes, bias=False)
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp(min=1e-12))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_dim) -> (B, C)."""
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


class BCL(HeadClassifier):
    """Balanced contrastive learning with a logit-adjusted cross-entropy branch.

    Submodules ``backbone``, ``head`` (projection), ``fc`` (classifier), ``proto_head``
    (classifier weights -> prototypes); buffers ``log_prior`` (C,) and ``step``.

    Args:
        backbone: the encoder trunk.
        num_classes: C.
        params: the settings (:class:`BCLParams`: ``dim``, ``T``, ``mlp``, ``ce_weight`` (λ),
            ``bcl_weight`` (μ), ``cosine_classifier`` (``fc`` is a :class:`CosineClassifier`),
            ``head_bn``); or pass them as keyword arguments. With ``head_bn`` the prototype
            head's BN sees the C class vectors as its batch (C >= 2 in training); under DDP the
            projection head's BN is per rank, as the backbone's (the authors train with
            DataParallel, whose BN is per GPU too).

    ``forward`` returns ``{"loss", "ce", "bcl", "acc"}`` (``acc``: top-1 of ``fc`` on view 1).
    """

    params_type = BCLParams
    params: BCLParams

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        params: BCLParams | None = None,
        **overrides: Any,
    ) -> None:
        p = resolve_params("BCL", BCLParams, params, overrides)
        super().__init__(backbone, num_classes, params=p, head_bn=p.head_bn)
        in_dim = backbone.out_dim
        if p.cosine_classifier:
            self.fc = CosineClassifier(in_dim, num_classes)
        self.cosine_classifier = p.cosine_classifier
        self.proto_head: nn.Module = make_head(in_dim, p.dim, p.mlp, batch_norm=p.head_bn)
        self.ce_weight, self.bcl_weight = p.ce_weight, p.bcl_weight

    def prototypes(self) -> torch.Tensor:
        """Normalised class prototypes (class-complement). Shape: (C, dim)."""
        return F.normalize(self.proto_head(self.fc.weight), dim=1)

    def forward(
        self, images: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """BCL loss of the views (each (B, C, H, W)) and labels (B,).

        Two views ``[v1, v2]``: the classifier on ``v1``, the contrastive term on both. Three
        views ``[v0, v1, v2]`` (the authors'): the classifier on ``v0``, the contrastive term on
        ``v1`` and ``v2``.
        """
        n = len(images) if isinstance(images, (list, tuple)) else 1
        check_batch(type(self).__name__, images, labels, n if n in (2, 3) else 2, True)
        b = labels.shape[0]
        feat = self.backbone(torch.cat(list(images)))  # (nB, F), one BN batch
        first = 0 if n == 2 else b  # where the contrastive views start
        z = F.normalize(self.head(feat[first:]), dim=1)  # (2B, dim)
        logits = self.fc(feat[:b])  # (B, C)
        ce = logit_adjusted_ce(logits, labels, self.log_prior)  # local mean; DDP averages
        # the contrastive term over the global batch (2 ranks compute what 1 process does)
        z_all = torch.cat([gather_rows(z[:b]), gather_rows(z[b:])])  # (2 W B, dim)
        labels_all = distributed.all_gather_concat(labels)
        con = bcl_loss(z_all, labels_all.repeat(2), self.prototypes(), self.T)
        loss = self.ce_weight * ce + self.bcl_weight * con
        acc = (logits.detach().argmax(1) == labels).to(z.dtype).mean()
        return {"loss": loss, "ce": ce.detach(), "bcl": con.detach(), "acc": acc}

    @torch.no_grad()
    def after_step(self) -> None:
        """Counts the step (nothing else to update)."""
        self.step += 1


register("bcl", views=2, params=BCLParams, label="BCL")(from_constructor(BCL))
