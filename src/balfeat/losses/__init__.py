"""Losses of representation learning: InfoNCE (MoCo) and k-positive contrastive (KCL)."""

from balfeat.losses.contrastive import kcl_loss, kcl_select_positives, moco_loss

__all__ = ["kcl_loss", "kcl_select_positives", "moco_loss"]
