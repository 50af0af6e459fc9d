"""Losses of representation learning on long-tailed data, as functions and as modules.

Functions (tensors in, scalar out): ``moco_loss``, ``kcl_loss`` (with ``select_positives``),
``supcon_loss``, ``supcon_queue_loss``, ``tsc_loss``, ``bcl_loss``, ``paco_loss``, ``gpaco_loss``.
Modules (``nn.Module`` s that normalise their inputs and own their queue as buffers):
``KCLLoss``, ``SupConQueueLoss``, ``TSCLoss``, ``PaCoLoss``, ``SupConLoss``, ``BCLLoss``.
"""

from balfeat.losses.bcl import bcl_loss
from balfeat.losses.contrastive import (
    Positives,
    given_positives,
    kcl_loss,
    kcl_select_positives,
    moco_loss,
    select_positives,
)
from balfeat.losses.modules import (
    BCLLoss,
    KCLLoss,
    PaCoLoss,
    SupConLoss,
    SupConQueueLoss,
    TSCLoss,
)
from balfeat.losses.paco import gpaco_loss, paco_loss
from balfeat.losses.supcon import supcon_loss, supcon_queue_loss
from balfeat.losses.tsc import tsc_loss

__all__ = [
    "BCLLoss",
    "KCLLoss",
    "PaCoLoss",
    "Positives",
    "SupConLoss",
    "SupConQueueLoss",
    "TSCLoss",
    "bcl_loss",
    "given_positives",
    "gpaco_loss",
    "kcl_loss",
    "kcl_select_positives",
    "moco_loss",
    "paco_loss",
    "select_positives",
    "supcon_loss",
    "supcon_queue_loss",
    "tsc_loss",
]
