"""The losses' input policy seen through each registered method's ``forward``.

Before: a label equal to C raised a raw ``IndexError`` in SL and BCL; float16/bfloat16 images
outside autocast failed in the first layer with torch's dtype error; ``T = 1e-45`` gave NaN.
"""

from __future__ import annotations

import pytest
import torch
from method_standins import TinyBackbone
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.methods import get_method, method_names

C = 4
X = torch.randn(8, 1, 4, 4)
Y = torch.arange(8) % C


def _build(name: str, **settings: object) -> nn.Module:
    entry = get_method(name)
    params = entry.params()
    for key, value in {"K": 32, "bn_splits": 2, "target_steps": 20, **settings}.items():
        if hasattr(params, key):
            setattr(params, key, value)
    return entry.build(params, TinyBackbone(), C, 0)  # type: ignore[arg-type]


def _images(name: str, x: torch.Tensor = X) -> torch.Tensor | list[torch.Tensor]:
    return x if get_method(name).views == 1 else [x, x]


KNOW_C = ["sl", "bcl", "gpaco", "paco", "tsc"]
SUPERVISED = [n for n in method_names() if not n.startswith("moco")]


@pytest.mark.parametrize("name", KNOW_C)
def test_a_label_equal_to_c_is_refused(name: str) -> None:
    labels = Y.clone()
    labels[3] = C
    with pytest.raises(BalfeatError, match=rf"class id {C}, out of range"):
        _build(name)(_images(name), labels)


@pytest.mark.parametrize("name", SUPERVISED)
def test_a_negative_label_is_refused(name: str) -> None:
    labels = Y.clone()
    labels[3] = -1
    with pytest.raises(BalfeatError, match="negative class label -1"):
        _build(name)(_images(name), labels)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", method_names())
def test_half_images_outside_autocast_get_a_hint(name: str, dtype: torch.dtype) -> None:
    method = _build(name)
    with pytest.raises(BalfeatError, match=r"outside autocast; pass float32 images and wrap"):
        method(_images(name, X.to(dtype)), Y)


def test_half_images_inside_autocast_are_accepted() -> None:
    method = _build("sl")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(method(X.to(torch.bfloat16), Y)["loss"])


@pytest.mark.parametrize("t", [float("inf"), 0.0, -0.07, float("nan"), 1e-45])
@pytest.mark.parametrize("name", [n for n in method_names() if n != "sl"])
def test_a_temperature_not_finite_and_positive_is_refused(name: str, t: float) -> None:
    with pytest.raises(BalfeatError, match=r"\bT\b|temperature"):
        _build(name, T=t)(_images(name), Y)  # at construction, or at the first step


QUEUED = [n for n in method_names() if hasattr(get_method(n).params(), "K") and n != "gpaco"]


@pytest.mark.parametrize("name", QUEUED)  # GPaCo's K = 0 is its queue-free form, by design
def test_an_empty_queue_is_refused(name: str) -> None:
    with pytest.raises(BalfeatError, match="K"):
        _build(name, K=0)
