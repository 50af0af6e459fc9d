"""RandAugment as the PaCo / GPaCo / BCL scripts configure it: parsing, each op on PIL images and
uint8 tensors, the op probability, the magnitude noise and seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.data.randaugment import (
    RANDAUGMENT_OPS,
    RandAugment,
    RandAugmentSpec,
    parse_randaugment,
)
from balfeat.errors import ConfigError


def _pil(seed: int = 0, size: tuple[int, int] = (20, 24)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def test_parse_the_authors_string_and_defaults() -> None:
    assert parse_randaugment("rand-n2-m10-mstd0.5") == RandAugmentSpec(2, 10.0, 0.5)
    assert parse_randaugment("rand-m9-n3") == RandAugmentSpec(3, 9.0, 0.0)
    assert parse_randaugment("rand") == RandAugmentSpec(2, 10.0, 0.0)
    for bad in ("augmix-m5", "rand-w0", "rand-m11", "rand-n0", "rand-mx"):
        with pytest.raises(ConfigError, match="RandAugment config"):
            parse_randaugment(bad)


def test_fifteen_ops_as_the_authors_list() -> None:
    assert len(RANDAUGMENT_OPS) == 15 and len(set(RANDAUGMENT_OPS)) == 15
    assert "Invert" in RANDAUGMENT_OPS and "SolarizeAdd" in RANDAUGMENT_OPS
    assert "Identity" not in RANDAUGMENT_OPS


@pytest.mark.parametrize("op", RANDAUGMENT_OPS)
@pytest.mark.parametrize("level", [0.0, 4.7, 10.0])
def test_every_op_keeps_type_size_and_mode(op: str, level: float) -> None:
    ra = RandAugment()
    img = _pil()
    out = ra.apply(img, op, level)
    assert isinstance(out, Image.Image) and out.size == img.size and out.mode == "RGB"
    t = ra.apply(_tensor(img), op, level)
    assert t.dtype == torch.uint8 and t.shape == (3, 20, 24)
    gray = ra.apply(img.convert("L"), op, level)
    assert gray.mode == "L" and gray.size == img.size
    assert ra.apply(_tensor(img)[:1], op, level).shape == (1, 20, 24)


@pytest.mark.parametrize("op", ["Invert", "Posterize", "Solarize", "SolarizeAdd", "Brightness"])
def test_pixel_ops_agree_on_pil_and_tensor(op: str) -> None:
    ra, img = RandAugment(), _pil(1)
    a = _tensor(ra.apply(img, op, 7.3)).int()
    b = ra.apply(_tensor(img), op, 7.3).int()
    assert (a - b).abs().max() <= 1, op


def test_levels_map_as_the_authors_scales() -> None:
    ra = RandAugment()
    x = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16).contiguous()
    # Solarize at m = 10: threshold 256, nothing changes; at m = 5: pixels >= 128 inverted
    assert torch.equal(ra.apply(x, "Solarize", 10.0), x)
    half = ra.apply(x, "Solarize", 5.0)
    assert torch.equal(half[x >= 128], 255 - x[x >= 128]) and torch.equal(half[x < 128], x[x < 128])
    # SolarizeAdd at m = 10: +110 below 128, clipped at 255
    add = ra.apply(x, "SolarizeAdd", 10.0)
    assert torch.equal(add[x < 128], x[x < 128] + 110) and torch.equal(add[x >= 128], x[x >= 128])
    # Posterize (TPU form): m = 10 keeps 4 bits, m = 5 keeps 2, m = 0 keeps none
    assert torch.equal(ra.apply(x, "Posterize", 10.0), x & 0xF0)
    assert torch.equal(ra.apply(x, "Posterize", 5.0), x & 0xC0)
    assert int(ra.apply(x, "Posterize", 0.0).max()) == 0
    # Brightness at m = 10: factor 1.9 (never darker)
    b = ra.apply(x, "Brightness", 10.0)
    assert torch.equal(b, (x.float() * 1.9).clamp(max=255).to(torch.uint8))


def test_translate_shifts_by_045_of_the_side_and_fills_with_the_mean() -> None:
    ra = RandAugment(fill=(124, 116, 104))
    x = torch.full((3, 20, 20), 7, dtype=torch.uint8)
    torch.manual_seed(0)
    out = ra.apply(x, "TranslateX", 10.0)
    filled = (out[0] == 124).all(dim=0)  # columns filled with the mean
    assert int(filled.sum()) == 9  # round(0.45 * 20)
    assert torch.equal(out[:, :, ~filled], x[:, :, ~filled])


def test_prob_zero_is_identity_and_prob_one_always_changes() -> None:
    img = _tensor(_pil(2))
    torch.manual_seed(0)
    assert all(torch.equal(RandAugment(prob=0.0)(img), img) for _ in range(20))
    # with prob 0.5 and two draws, a quarter of the images get no op at all (authors' form)
    torch.manual_seed(0)
    ra = RandAugment(num_ops=2, magnitude=9.0, magnitude_std=0.0)
    same = sum(torch.equal(ra(img), img) for _ in range(400))
    assert 60 < same < 150  # ~100 expected (+ the rare no-op draws)


def test_magnitude_noise_is_clipped_to_the_scale() -> None:
    seen: list[float] = []

    class Spy(RandAugment):
        def apply(self, img: object, op: str, level: float) -> object:
            seen.append(level)
            return img

    torch.manual_seed(0)
    spy = Spy(num_ops=2, magnitude=10.0, magnitude_std=0.5, prob=1.0)
    for _ in range(200):
        spy(_tensor(_pil(3)))
    levels = np.array(seen)
    assert levels.max() == 10.0 and levels.min() < 9.5
    assert 0.4 < np.mean(levels == 10.0) < 0.6  # half the draws are above m and clipped


def test_seeded_reproducibility_on_pil_and_tensor() -> None:
    ra = RandAugment(num_ops=2, magnitude=10.0, magnitude_std=0.5)
    img = _pil(4)
    outs = []
    for _ in range(2):
        torch.manual_seed(11)
        outs.append([np.array(ra(img)) for _ in range(10)] + [ra(_tensor(img)) for _ in range(10)])
    for a, b in zip(*outs, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    torch.manual_seed(12)
    other = [np.array(ra(img)) for _ in range(10)]
    assert any(not np.array_equal(a, b) for a, b in zip(outs[0][:10], other, strict=True))


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="num_ops"):
        RandAugment(num_ops=0)
    with pytest.raises(ConfigError, match="prob"):
        RandAugment(prob=1.5)
    with pytest.raises(ConfigError, match="uint8"):
        RandAugment()(torch.rand(3, 8, 8))


def _authors_geometric(
    img: Image.Image, op: str, level: float, sign: float, resample: int
) -> Image.Image:
    """The authors' PIL calls (written here from their description) for one sign and resample."""
    fill = (124, 116, 104)
    frac = level / 10.0
    if op == "Rotate":
        return img.rotate(sign * 30.0 * frac, resample=resample, fillcolor=fill)
    if op == "ShearX":
        data = (1, sign * 0.3 * frac, 0, 0, 1, 0)
    elif op == "ShearY":
        data = (1, 0, 0, sign * 0.3 * frac, 1, 0)
    elif op == "TranslateX":
        data = (1, 0, sign * 0.45 * frac * img.size[0], 0, 1, 0)
    else:
        data = (1, 0, 0, 0, 1, sign * 0.45 * frac * img.size[1])
    return img.transform(img.size, Image.AFFINE, data, resample=resample, fillcolor=fill)


@pytest.mark.parametrize("op", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"])
@pytest.mark.parametrize("level", [10.0, 8.7])
def test_geometric_ops_equal_the_authors_pil_calls(op: str, level: float) -> None:
    """Each output equals the authors' PIL call for one of the two signs and resamples (both
    drawn at random, with equal probability), and over seeds both signs occur."""
    ra, img = RandAugment(), _pil(6, size=(21, 27))
    signs = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = np.asarray(ra.apply(img, op, level)).astype(int)
        found = [
            (sign, res)
            for sign in (1.0, -1.0)
            for res in (Image.BILINEAR, Image.BICUBIC)
            if np.abs(out - np.asarray(_authors_geometric(img, op, level, sign, res))).max() <= 1
        ]
        assert found, (op, seed)
        signs.add(found[0][0])
    assert signs == {1.0, -1.0}


@pytest.mark.parametrize("level", [10.0, 9.3, 6.0])
def test_pixel_ops_equal_the_authors_pil_calls(level: float) -> None:
    from PIL import ImageEnhance, ImageOps

    ra, img = RandAugment(), _pil(7)
    frac = level / 10.0
    factor = 0.1 + 1.8 * frac
    threshold = int(256 * frac)
    reference = {
        "AutoContrast": ImageOps.autocontrast(img),
        "Equalize": ImageOps.equalize(img),
        "Invert": ImageOps.invert(img),
        "Posterize": ImageOps.posterize(img, int(4 * frac)),
        "Solarize": ImageOps.solarize(img, threshold),
        "Color": ImageEnhance.Color(img).enhance(factor),
        "Contrast": ImageEnhance.Contrast(img).enhance(factor),
        "Brightness": ImageEnhance.Brightness(img).enhance(factor),
        "Sharpness": ImageEnhance.Sharpness(img).enhance(factor),
    }
    for op, ref in reference.items():
        assert np.array_equal(np.asarray(ra.apply(img, op, level)), np.asarray(ref)), op
