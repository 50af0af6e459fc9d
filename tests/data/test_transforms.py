"""build_transform / TwoViews: shapes, channels, normalisation, determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.data.transforms import TRANSFORM_NAMES, TwoViews, build_transform
from balfeat.errors import ConfigError


def _img(size: int, mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


@pytest.mark.parametrize("name", TRANSFORM_NAMES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_small_images_shapes(name: str, channels: int, mode: str) -> None:
    out = build_transform(name, 28, channels)(_img(28, mode))
    assert out.dtype == torch.float32 and out.shape == (channels, 28, 28)


@pytest.mark.parametrize("name", TRANSFORM_NAMES)
def test_large_images_shapes(name: str) -> None:
    out = build_transform(name, 96, 3)(_img(120, "RGB"))
    assert out.shape == (3, 96, 96)


def test_eval_normalises_and_is_deterministic() -> None:
    img = _img(32, "L")
    t = build_transform("eval", 32, 1)
    a, b = t(img), t(img)
    assert torch.equal(a, b)
    raw = torch.from_numpy(np.array(img)).float() / 255
    torch.testing.assert_close(a[0], (raw - 0.2860) / 0.3530)
    big = build_transform("eval", 224, 3)
    assert "CenterCrop" in repr(big) and "Resize(size=256" in repr(big)


def test_moco_v2_blur_only_for_large_images() -> None:
    assert "GaussianBlur" not in repr(build_transform("moco_v2", 32, 3))
    assert "GaussianBlur" in repr(build_transform("moco_v2", 224, 3))
    assert "Grayscale" not in repr(build_transform("moco_v1", 32, 1))


def test_two_views_differ_and_follow_the_seed() -> None:
    img = _img(32, "RGB")
    tv = TwoViews(build_transform("moco_v2", 32, 3))
    torch.manual_seed(0)
    v1 = tv(img)
    torch.manual_seed(0)
    v2 = tv(img)
    assert len(v1) == 2 and not torch.equal(v1[0], v1[1])
    assert torch.equal(v1[0], v2[0]) and torch.equal(v1[1], v2[1])


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown transform"):
        build_transform("simclr", 32, 3)
    with pytest.raises(ConfigError, match="channels"):
        build_transform("eval", 32, 2)
