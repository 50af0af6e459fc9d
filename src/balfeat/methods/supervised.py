"""Supervised learning (SL): a backbone and a linear classifier trained with cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.methods.base import MethodBase, from_constructor, register, resolve_params
from balfeat.methods.inputs import backbone_out_dim, check_batch, check_num_classes
from balfeat.methods.params import SupervisedParams
from balfeat.models.backbones import Backbone


class Supervised(MethodBase):
    """Backbone + linear classifier ``head`` (``nn.Linear``: keys ``head.weight``/``head.bias``).

    With ``freeze_backbone`` the backbone gets no gradient (the classifier re-training of
    BalFeat's ``main_sl.py --pretrained``); its BatchNorm layers stay in training mode, as the
    authors', so their running statistics follow the re-training data, unless ``frozen_bn``
    keeps the whole backbone in eval mode (a linear probe).

    Args:
        backbone: feature extractor with ``out_dim``.
        num_classes: number of classes C.
        params: the settings (:class:`~balfeat.methods.params.SupervisedParams`:
            ``freeze_backbone``, train only the classifier; ``frozen_bn``, BatchNorm statistics
            frozen too); or pass them as keyword arguments.
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
        self.frozen_bn = freeze_backbone and p.frozen_bn
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        if self.frozen_bn:
            self.backbone.eval()

    def train(self, mode: bool = True) -> Supervised:
        """Set train/eval mode; with ``frozen_bn`` the backbone always stays in eval mode."""
        super().train(mode)
        if self.frozen_bn:
            self.backbone.eval()
        return self

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's logits. Shape: (B, C, H, W) -> (B, num_classes).

        Used by ``run.keep_best`` (validation after every epoch). The registry's
        ``has_classifier`` stays False: a study probes SL's backbone as every other's.
        """
        return self.head(self.backbone(images))

    @torch.no_grad()
    def load_classifier(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Start the classifier from a pre-trained one (``model.init_classifier``), as the
        authors' re-training, which loads ``fc`` with the backbone (``main_sl.py:101-118``).

        Args:
            weight: Shape: (num_classes, features).
            bias: Shape: (num_classes,), or None (the classifier's bias is kept).

        Raises:
            BalfeatError: a weight or bias of another shape.
        """
        want = tuple(self.head.weight.shape)
        if tuple(weight.shape) != want or (
            bias is not None and self.head.bias is not None and bias.shape != want[:1]
        ):
            raise BalfeatError(
                f"model.init_classifier: the checkpoint's classifier has shape "
                f"{tuple(weight.shape)}, this run's is {want} (classes x features); train with "
                "the same number of classes or set model.init_classifier=false"
            )
        self.head.weight.copy_(weight)
        if bias is not None and self.head.bias is not None:
            self.head.bias.copy_(bias)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy of the classifier.

        Args:
            images: Shape: (B, C, H, W).
            labels: class ids. Shape: (B,).

        Returns:
            ``{"loss": scalar, "logits": (B, num_classes)}``.
        """
        check_batch("Supervised", images, labels, 1, True, num_classes=self.head.out_features)
        if self.freeze_backbone:  # BN statistics still move in training mode (not frozen_bn)
            with torch.no_grad():
                feats = self.backbone(images)
        else:
            feats = self.backbone(images)
        logits = self.head(feats)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


register("sl", views=1, params=SupervisedParams, label="SL (supervised)")(
    from_constructor(Supervised)
)
