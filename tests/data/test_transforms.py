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


# -- the tensor form (data.decode=cpu) -------------------------------------------------------


def _jpeg_pair(h: int = 120, w: int = 160) -> tuple[Image.Image, torch.Tensor]:
    """A photograph-like JPEG opened by PIL and decoded by torchvision."""
    import io

    from balfeat.data.decode import decode_image_bytes

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [128 + 80 * np.sin(0.03 * xx + 0.02 * yy), 128 + 80 * np.cos(0.02 * xx),
         100 + 50 * np.sin(0.05 * yy)], -1,
    ) + rng.normal(0, 5, (h, w, 3))  # fmt: skip
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    return Image.open(io.BytesIO(data)).convert("RGB"), decode_image_bytes(data)


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [("eval", 96, 3), ("eval", 28, 1), ("none", 64, 3), ("supervised", 64, 3),
     ("longtail", 64, 3), ("moco_v1", 64, 3), ("moco_v2", 96, 3), ("moco_v2", 32, 1)],
)  # fmt: skip
def test_tensor_transform_gives_the_pil_tensor_under_the_same_seed(
    name: str, size: int, channels: int
) -> None:
    """Same ops in the same order drawing from the same torch RNG: with one seed the uint8-tensor
    recipe and the PIL recipe give the same tensor up to rounding (PIL rounds to uint8 after
    every op; libjpeg builds differ), while another seed gives a clearly different one."""
    from balfeat.data.transforms import build_tensor_transform

    pil_img, tensor_img = _jpeg_pair()
    pil_t = build_transform(name, size, channels)
    ten_t = build_tensor_transform(name, size, channels)
    random_recipe = name not in ("eval", "none")
    for seed in range(6):
        torch.manual_seed(seed)
        a = pil_t(pil_img)
        torch.manual_seed(seed)
        b = ten_t(tensor_img)
        assert b.dtype == a.dtype == torch.float32 and b.shape == a.shape
        # normalised units; 0.05 is about 3 grey levels on average
        assert (a - b).abs().mean() < 0.05, f"seed {seed}"
        if random_recipe:
            torch.manual_seed(seed + 100)
            assert (a - ten_t(tensor_img)).abs().mean() > 0.1


def test_tensor_transform_channels_and_errors() -> None:
    from balfeat.data.transforms import TensorChannels, build_tensor_transform

    gray = torch.randint(0, 256, (1, 40, 40), dtype=torch.uint8)
    out = build_tensor_transform("moco_v2", 32, 3)(gray)
    assert out.shape == (3, 32, 32)
    rgba = torch.randint(0, 256, (4, 40, 40), dtype=torch.uint8)
    assert TensorChannels(3)(rgba).shape == (3, 40, 40)
    assert TensorChannels(1)(rgba).shape == (1, 40, 40)
    with pytest.raises(ConfigError):
        build_tensor_transform("fancy", 32, 3)


def test_separable_blur_equals_torchvision_blur_under_one_seed() -> None:
    from torchvision import transforms as T

    from balfeat.data.transforms import SeparableGaussianBlur

    x = torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(0))
    for seed in range(3):
        torch.manual_seed(seed)
        ref = T.GaussianBlur(9, sigma=(0.1, 2.0))(x)
        torch.manual_seed(seed)
        out = SeparableGaussianBlur(9, (0.1, 2.0))(x)
        assert torch.allclose(out, ref, atol=1e-5)
        assert not torch.allclose(out, x, atol=1e-3)
    with pytest.raises(ConfigError, match="odd"):
        SeparableGaussianBlur(4, (0.1, 2.0))


def test_separable_blur_on_pil_images_is_torchvision_blur_to_a_grey_level() -> None:
    """The PIL path (moco_v2 at 224 px) blurs with the same sigma draw and kernel as torchvision;
    only a pixel at a .5 rounding boundary may differ, by one level."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    from balfeat.data.transforms import SeparableGaussianBlur

    rng = np.random.RandomState(0)
    for mode, shape in (("RGB", (60, 50, 3)), ("L", (60, 50))):
        img = Image.fromarray(rng.randint(0, 256, shape, dtype=np.uint8), mode=mode)
        for seed in range(3):
            torch.manual_seed(seed)
            ref = np.asarray(T.GaussianBlur(23, sigma=(0.1, 2.0))(img)).astype(int)
            torch.manual_seed(seed)
            out = SeparableGaussianBlur(23, (0.1, 2.0))(img)
            assert isinstance(out, Image.Image) and out.mode == mode
            diff = np.abs(np.asarray(out).astype(int) - ref)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
            assert np.abs(np.asarray(out).astype(int) - np.asarray(img)).max() > 0
