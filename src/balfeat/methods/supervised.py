"""Supervised learning (SL): a backbone and a linear classifier trained with cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from balfeat.methods.base import MethodBase, from_constructor, register, resolve_params
from balfeat.methods.inputs import backbone_out_dim, check_batch, check_num_classes
from balfeat.methods.params import SupervisedParams
from balfeat.models.backbones import Backbone


class Supervised(MethodBase):
    """Backbone + linear classifier ``head`` (``nn.Linear``: keys ``head.weight``/``head.bias``).

    With ``freeze_backbone`` the backbone gets no gradient and stays in eval mode (BatchNorm
    statistics frozen), which is the linear-probe / classifier-retraining setting.

    Args:
        backbone: feature extractor with ``out_dim``.
        num_classes: number of classes C.
        params: the settings (:class:`~balfeat.methods.params.SupervisedParams`:
            ``freeze_backbone``, train only the classifier); or pass them as keyword arguments.
        bias: whether the classifier has a bias.
    """

    views = 1
    uses_labels = True
    params_type = SupervisedParams

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        params: SupervisedParams | None = None,
        bias: bool = True,
        **overrides: Any,
    ) -> None:
        super().__init__()
        p = self.params = resolve_params("Supervised", SupervisedParams, params, overrides)
        freeze_backbone = p.freeze_backbone
        self.backbone = backbone
        check_num_classes("Supervised", num_classes)
        self.head = nn.Linear(backbone_out_dim("Supervised", backbone), num_classes, bias=bias)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> Supervised:
        """Set train/eval mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy of the classifier.

        Args:
            images: Shape: (B, C, H, W).
            labels: class ids. Shape: (B,).

        Returns:
            ``{"loss": scalar, "logits": (B, num_classes)}``.
        """
        check_batch("Supervised", images, labels, 1, True, num_classes=self.head.out_features)
        if self.freeze_backbone:
            with torch.no_grad():
                feats = self.backbone(images)
        else:
            feats = self.backbone(images)
        logits = self.head(feats)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


register("sl", views=1, params=SupervisedParams, label="SL (supervised)")(
    from_constructor(Supervised)
)
