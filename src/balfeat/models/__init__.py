"""Backbones, heads, key queues, momentum updates and BatchNorm variants of the methods."""

from balfeat.models.backbones import BACKBONE_NAMES, Backbone, build_backbone
from balfeat.models.batchnorm import (
    SplitBatchNorm,
    batch_shuffle_ddp,
    batch_unshuffle_ddp,
    convert_split_batchnorm,
    split_forward,
)
from balfeat.models.heads import LinearHead, MLPHead
from balfeat.models.momentum import momentum_update
from balfeat.models.queue import KeyQueue

__all__ = [
    "BACKBONE_NAMES",
    "Backbone",
    "KeyQueue",
    "LinearHead",
    "MLPHead",
    "SplitBatchNorm",
    "batch_shuffle_ddp",
    "batch_unshuffle_ddp",
    "build_backbone",
    "convert_split_batchnorm",
    "momentum_update",
    "split_forward",
]
