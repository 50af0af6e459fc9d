"""Bad things given to a method (registry build, constructor, forward, set_class_counts).

Before these checks: a backbone without ``out_dim`` raised AttributeError, ``num_classes=0``
built a method silently (SL: a 0-class classifier), missing or mismatched labels ended deep in
BatchNorm or the loss ("Expected more than 1 value per channel"), and negative, NaN or all-zero
class counts set a wrong class prior silently.
"""

from __future__ import annotations

import pytest
import torch
from method_standins import TinyBackbone
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.methods import get_method, method_names

QUEUE_KW = {"K": 32, "bn_splits": 2}


def _build(name: str, num_classes: int = 4, backbone: nn.Module | None = None) -> nn.Module:
    entry = get_method(name)
    params = entry.params()
    for key, value in QUEUE_KW.items():
        if hasattr(params, key):
            setattr(params, key, value)
    return entry.build(params, backbone or TinyBackbone(), num_classes, 0)  # type: ignore[arg-type]


class _NoOutDim(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


X = torch.randn(8, 1, 4, 4)
Y = torch.arange(8) % 4


def _batch(name: str) -> torch.Tensor | list[torch.Tensor]:
    return X if get_method(name).views == 1 else [X, X]


@pytest.mark.parametrize("name", method_names())
def test_build_refuses_zero_classes_and_a_backbone_without_out_dim(name: str) -> None:
    with pytest.raises(BalfeatError, match="num_classes must be an integer >= 1, got 0"):
        _build(name, num_classes=0)
    with pytest.raises(BalfeatError, match="_NoOutDim needs an integer attribute out_dim"):
        _build(name, backbone=_NoOutDim())


@pytest.mark.parametrize("name", [n for n in method_names() if not n.startswith("moco")])
def test_supervised_forward_names_missing_or_mismatched_labels(name: str) -> None:
    method = _build(name)
    with pytest.raises(BalfeatError, match=r"needs the labels \(B,\)"):
        method(_batch(name), None)
    with pytest.raises(BalfeatError, match=r"labels must be integer class ids of shape \(8,\)"):
        method(_batch(name), Y[:5])
    with pytest.raises(BalfeatError, match=r"got \(8, 1\)"):
        method(_batch(name), Y[:, None])
    with pytest.raises(BalfeatError, match=r"torch\.float32"):
        method(_batch(name), Y.float())


@pytest.mark.parametrize("name", [n for n in method_names() if get_method(n).views == 2])
def test_two_view_forward_names_views_of_other_sizes(name: str) -> None:
    with pytest.raises(BalfeatError, match="the two views hold 8 and 5 images"):
        _build(name)([X, X[:5]], Y)


def test_supervised_forward_refuses_a_list_of_views() -> None:
    with pytest.raises(BalfeatError, match=r"one image tensor .*method.views == 1"):
        _build("sl")([X, X], Y)


def test_moco_still_ignores_the_labels() -> None:
    method = _build("moco_v2")
    assert torch.isfinite(method([X, X], None)["loss"])


@pytest.mark.parametrize("name", ["paco", "gpaco", "bcl"])
@pytest.mark.parametrize(
    ("counts", "match"),
    [
        (torch.tensor([5, -1, 2, 1]), "finite numbers >= 0"),
        (torch.tensor([1.0, float("nan"), 1.0, 1.0]), "finite numbers >= 0"),
        (torch.zeros(4), "every class count is 0"),
        (torch.ones(4, 1), r"shape \(4, 1\) given for 4 classes"),
    ],
)
def test_set_class_counts_refuses_bad_counts(name: str, counts: torch.Tensor, match: str) -> None:
    method = _build(name)
    before = method.log_prior.clone()
    with pytest.raises(BalfeatError, match=match):
        method.set_class_counts(counts)
    torch.testing.assert_close(method.log_prior, before)
    method.set_class_counts([8, 4, 2, 0])  # a list, and a class without images, still work
