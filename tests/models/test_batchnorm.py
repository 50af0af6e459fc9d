"""split_forward: MoCo's one-process stand-in for shuffle BN, and its error on groups too small."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.models.batchnorm import split_forward


def test_split_forward_with_groups_too_small_for_batch_norm_says_what_to_change() -> None:
    """bn_splits=8 on a batch of 8: groups of one image, which BatchNorm1d cannot normalise."""
    head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(BalfeatError, match=r"method.bn_splits=8.*of 1 image\(s\).*at least 16"):
        split_forward(head, torch.randn(8, 4), 8)
    assert split_forward(head, torch.randn(16, 4), 8).shape == (16, 4)  # groups of 2: fine
