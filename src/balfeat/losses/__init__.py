"""Losses of representation learning: InfoNCE (MoCo) and k-positive contrastive (KCL)."""

from balfeat.losses.contrastive import (
    Positives,
    given_positives,
    kcl_loss,
    kcl_select_positives,
    moco_loss,
    select_positives,
)

__all__ = [
    "Positives",
    "given_positives",
    "kcl_loss",
    "kcl_select_positives",
    "moco_loss",
    "select_positives",
]
