"""Tests of the device-resident small-image loader and its batched augmentation (on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from balfeat.data.device_data import (
    DEVICE_RECIPES,
    DeviceArrayLoader,
    DeviceAugment,
    _hsv_to_rgb,
    _rgb_to_hsv,
)
from balfeat.data.samplers import ClassBalancedSampler
from balfeat.data.transforms import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD
from balfeat.errors import ConfigError, DataError


def _images(n: int = 12, size: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _normalised(
    images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    x = torch.from_numpy(images).float() / 255.0
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@pytest.mark.parametrize("recipe", DEVICE_RECIPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_dtypes(recipe: str, channels: int) -> None:
    imgs = _images(10, 16, channels)
    aug = DeviceAugment.from_recipe(recipe, 12, channels)
    loader = DeviceArrayLoader(imgs, np.arange(10) % 3, 4, transform=aug, device="cpu", seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    x, y = batches[0]
    assert x.shape == (4, channels, 12, 12) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.shape == (4,)
    assert batches[-1][0].shape[0] == 2
    assert torch.isfinite(x).all()


def test_two_views_differ_and_labels_preserved() -> None:
    imgs = _images(9, 16, 3)
    labels = np.array([5, 1, 2, 3, 4, 0, 1, 2, 3])
    aug = DeviceAugment.from_recipe("moco_v2", 16, 3)
    loader = DeviceArrayLoader(imgs, labels, 4, transform=aug, views=2, device="cpu", seed=3)
    seen_idx: list[int] = []
    for views, y in loader:
        assert isinstance(views, list) and len(views) == 2
        assert views[0].shape == views[1].shape
        assert not torch.allclose(views[0], views[1])
        seen_idx.extend(y.tolist())
    # every image visited once: the multiset of labels equals the dataset's
    assert sorted(seen_idx) == sorted(labels.tolist())


def test_labels_follow_their_images() -> None:
    # each image is constant = its label * 10; check the label of every batch row matches
    n = 20
    imgs = np.repeat((np.arange(n) * 10).astype(np.uint8)[:, None, None], 8, 1).repeat(8, 2)
    loader = DeviceArrayLoader(imgs, np.arange(n), 6, transform=None, device="cpu", seed=7)
    for x, y in loader:
        assert torch.allclose(x[:, 0, 0, 0] * 255.0, (y * 10).float(), atol=1e-4)


def test_determinism_per_seed_and_epoch() -> None:
    imgs = _images(8, 16, 3)
    aug = DeviceAugment.from_recipe("moco_v2", 16, 3)

    def run(seed: int, epoch: int) -> list[torch.Tensor]:
        loader = DeviceArrayLoader(imgs, np.zeros(8), 4, transform=aug, views=2, device="cpu",
                                   seed=seed)  # fmt: skip
        loader.set_epoch(epoch)
        return [torch.cat([*v, y[:, None, None, None].float().expand(-1, 3, 16, 1)], -1)
                for v, y in loader]  # fmt: skip

    a, b = run(0, 1), run(0, 1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    c = run(0, 2)
    assert not all(torch.allclose(p, q) for p, q in zip(a, c, strict=True))
    d = run(1, 1)
    assert not all(torch.allclose(p, q) for p, q in zip(a, d, strict=True))


def test_augmentation_varies_per_sample() -> None:
    # the same image repeated: every row of one batch must come out different
    one = _images(1, 16, 3)
    imgs = np.repeat(one, 8, axis=0)
    aug = DeviceAugment.from_recipe("moco_v2", 16, 3)
    x = aug(torch.from_numpy(imgs), torch.Generator().manual_seed(0))
    flat = x.flatten(1)
    dists = torch.cdist(flat, flat)
    off_diag = dists[~torch.eye(8, dtype=torch.bool)]
    assert (off_diag > 1e-3).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_when_disabled(channels: int) -> None:
    imgs = _images(6, 16, channels)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
    expected = _normalised(imgs, mean, std)
    # the "eval" recipe at the input size
    x = DeviceAugment.from_recipe("eval", 16, channels)(torch.from_numpy(imgs))
    assert torch.allclose(x, expected, atol=1e-5)
    # a crop of the whole image without flip goes through grid_sample and is still the identity
    full = DeviceAugment(16, channels, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0)
    assert torch.allclose(full(torch.from_numpy(imgs)), expected, atol=1e-4)


def test_flip_only_flips() -> None:
    imgs = _images(4, 8, 3)
    flip = DeviceAugment(8, 3, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0)
    expected = _normalised(imgs, IMAGENET_MEAN, IMAGENET_STD).flip(-1)
    assert torch.allclose(flip(torch.from_numpy(imgs)), expected, atol=1e-4)


def test_crop_is_a_resized_subregion() -> None:
    # a 2x2 block pattern: a crop scaled to its own area keeps values inside the input's range
    imgs = _images(16, 16, 1)
    aug = DeviceAugment(8, 1, crop_scale=(0.2, 0.5), flip_p=0.0, mean=(0.0,), std=(1.0,))
    x = aug(torch.from_numpy(imgs), torch.Generator().manual_seed(1))
    assert x.shape == (16, 1, 8, 8)
    assert x.min() >= 0.0 and x.max() <= 1.0
    # crops differ in position/scale between samples of the same image
    same = np.repeat(imgs[:1], 6, 0)
    y = aug(torch.from_numpy(same), torch.Generator().manual_seed(2))
    assert not torch.allclose(y[0], y[1])


def test_jitter_factors_follow_torchvision() -> None:
    # brightness only, applied always: output = clamp(x * f) with f in [0.6, 1.4]
    imgs = np.full((32, 4, 4, 3), 100, dtype=np.uint8)
    aug = DeviceAugment(4, 3, crop_scale=None, flip_p=0.0, brightness=0.4, mean=(0.0,) * 3,
                        std=(1.0,) * 3)  # fmt: skip
    x = aug(torch.from_numpy(imgs), torch.Generator().manual_seed(0))
    f = x[:, 0, 0, 0] / (100 / 255)
    assert f.min() >= 0.6 - 1e-5 and f.max() <= 1.4 + 1e-5
    assert f.std() > 0.05
    # saturation 0 factor-range check: a gray image is unchanged by saturation and hue
    gray = np.full((4, 4, 4, 3), 77, dtype=np.uint8)
    sat = DeviceAugment(4, 3, crop_scale=None, flip_p=0.0, saturation=0.9, hue=0.5,
                        mean=(0.0,) * 3, std=(1.0,) * 3)  # fmt: skip
    out = sat(torch.from_numpy(gray), torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full_like(out, 77 / 255), atol=1e-5)


def test_hsv_round_trip_matches_torchvision() -> None:
    from torchvision.transforms import functional as TF

    x = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5)
    shifted = _rgb_to_hsv(x)
    shifted[:, 0] = torch.remainder(shifted[:, 0] + 0.2, 1.0)
    assert torch.allclose(_hsv_to_rgb(shifted), TF.adjust_hue(x, 0.2), atol=1e-4)


def test_grayscale_p_one_makes_channels_equal() -> None:
    imgs = _images(4, 8, 3)
    aug = DeviceAugment(8, 3, crop_scale=None, flip_p=0.0, grayscale_p=1.0, mean=(0.0,) * 3,
                        std=(1.0,) * 3)  # fmt: skip
    x = aug(torch.from_numpy(imgs))
    assert torch.allclose(x[:, 0], x[:, 1]) and torch.allclose(x[:, 1], x[:, 2])


def test_sampler_and_set_epoch_forwarded() -> None:
    labels = np.array([0] * 10 + [1] * 2)
    sampler = ClassBalancedSampler(labels, num_samples=12, seed=0, num_replicas=1, rank=0)
    loader = DeviceArrayLoader(_images(12, 8, 1), labels, 4, sampler=sampler, device="cpu")
    loader.set_epoch(5)
    assert sampler.epoch == 5
    ys = torch.cat([y for _, y in loader])
    assert len(ys) == 12 and 0 < int((ys == 1).sum()) < 12
    # a plain index list works too, and drop_last drops the tail
    plain = DeviceArrayLoader(_images(12, 8, 1), labels, 5, sampler=[0, 1, 2, 3, 4, 5, 11],
                              device="cpu", drop_last=True)  # fmt: skip
    out = list(plain)
    assert len(out) == len(plain) == 1
    assert out[0][1].tolist() == [0, 0, 0, 0, 0]


def test_unshuffled_order_and_unnormalised_output() -> None:
    imgs = _images(5, 8, 3)
    loader = DeviceArrayLoader(imgs, np.arange(5), 5, shuffle=False, device="cpu")
    x, y = next(iter(loader))
    assert y.tolist() == [0, 1, 2, 3, 4]
    assert torch.allclose(x, torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0)


def test_bad_inputs_raise() -> None:
    with pytest.raises(DataError, match="uint8"):
        DeviceArrayLoader(np.zeros((3, 4, 4), np.float32), [0, 1, 2], 2, device="cpu")
    with pytest.raises(DataError, match="labels"):
        DeviceArrayLoader(np.zeros((3, 4, 4), np.uint8), [0, 1], 2, device="cpu")
    with pytest.raises(ConfigError, match="views"):
        DeviceArrayLoader(np.zeros((3, 4, 4), np.uint8), [0, 1, 2], 2, views=3, device="cpu")
    with pytest.raises(ConfigError, match="recipe"):
        DeviceAugment.from_recipe("simclr", 32, 3)
    with pytest.raises(DataError, match="channels"):
        DeviceAugment.from_recipe("moco_v2", 8, 3)(torch.zeros(2, 8, 8, dtype=torch.uint8))


def test_crop_area_matches_torchvision_random_resized_crop() -> None:
    from torchvision.transforms import RandomResizedCrop

    aug = DeviceAugment(32, 3, crop_scale=(0.2, 1.0))
    w, h, cx, cy = aug._crop_boxes(4000, 32, 40, torch.Generator().manual_seed(0))
    assert (cx - w >= -1 - 1e-6).all() and (cx + w <= 1 + 1e-6).all()
    assert (cy - h >= -1 - 1e-6).all() and (cy + h <= 1 + 1e-6).all()
    ours = (w * h).mean().item()
    torch.manual_seed(0)
    img = torch.zeros(3, 32, 40)
    boxes = [RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]
    ref = float(np.mean([b[2] * b[3] / (32 * 40) for b in boxes]))
    assert abs(ours - ref) < 0.03


@pytest.mark.slow
def test_batches_feed_a_two_view_method() -> None:
    from balfeat.methods.moco import MoCo
    from balfeat.models.backbones import build_backbone

    torch.manual_seed(0)
    model = MoCo(build_backbone("resnet8", small_images=True, in_channels=1), dim=16, K=32)
    loader = DeviceArrayLoader(_images(8, 12, 1), np.arange(8) % 2, 8, views=2, device="cpu",
                               transform=DeviceAugment.from_recipe("moco_v2", 12, 1))  # fmt: skip
    views, y = next(iter(loader))
    out = model(views, y)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
