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
        DeviceArrayLoader(np.zeros((3, 4, 4), np.uint8), [0, 1, 2], 2, views=0, device="cpu")
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


# -- distribution equality with the PIL path on the same images --------------------------------
#
# Design: each test feeds the SAME uint8 image N times through the PIL recipe
# (balfeat.data.transforms.build_transform) and through DeviceAugment.from_recipe, reads one
# per-sample statistic off every output (the image is built so that the statistic is a function
# of a single augmentation parameter), and compares the two samples with a two-sample
# Kolmogorov-Smirnov statistic. With n = m = N the 0.1% critical value is 1.95 * sqrt(2 / N);
# the seeds are fixed, so the test is deterministic, and a wrong range, probability or
# parametrisation (e.g. area uniform vs side uniform, ratio vs log ratio) moves D far above it.

_N = 1200
_KS_CRIT = 1.95 * (2.0 / _N) ** 0.5


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def _pil_outputs(image: np.ndarray, recipe: str, size: int, channels: int) -> torch.Tensor:
    from PIL import Image

    from balfeat.data.transforms import build_transform

    torch.manual_seed(0)
    t = build_transform(recipe, size, channels)
    pil = Image.fromarray(image)
    return torch.stack([t(pil) for _ in range(_N)])


def _device_outputs(image: np.ndarray, recipe: str, size: int, channels: int) -> torch.Tensor:
    aug = DeviceAugment.from_recipe(recipe, size, channels)
    batch = torch.from_numpy(image).unsqueeze(0).expand(_N, *image.shape).contiguous()
    return aug(batch, torch.Generator().manual_seed(1))


def _ramp_image(side: int = 64) -> np.ndarray:
    """RGB: R rises left to right, G top to bottom, B constant (pixel centres)."""
    ramp = np.round(255 * (np.arange(side) + 0.5) / side).astype(np.uint8)
    img = np.zeros((side, side, 3), dtype=np.uint8)
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    img[..., 2] = 128
    return img


def _crop_stats(out: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample (area fraction, aspect ratio, flipped) from outputs of :func:`_ramp_image`."""
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    x = out * std + mean
    dx = (x[:, 0, :, -1] - x[:, 0, :, 0]).mean(1) * size / (size - 1)
    dy = (x[:, 1, -1, :] - x[:, 1, 0, :]).mean(1) * size / (size - 1)
    w, h = dx.abs(), dy.abs()
    return (w * h).numpy(), (w / h).numpy(), (dx < 0).numpy()


@pytest.mark.parametrize("recipe", ["supervised", "moco_v2"])
def test_crop_scale_aspect_and_flip_match_pil(recipe: str) -> None:
    size, img = 32, _ramp_image()
    if recipe == "supervised":  # crop + flip only: the whole recipe on both paths
        pil = _pil_outputs(img, recipe, size, 3)
        dev = _device_outputs(img, recipe, size, 3)
    else:
        # colour jitter/gray would scramble the ramps: compare the recipe's geometry (crop and
        # flip of the same table entry) on both paths
        from PIL import Image
        from torchvision import transforms as T

        from balfeat.data.recipes import get_recipe

        r = get_recipe(recipe)
        assert r.crop_scale is not None
        t = T.Compose(
            [
                T.RandomResizedCrop(size, scale=r.crop_scale, ratio=r.crop_ratio),
                T.RandomHorizontalFlip(r.flip_p),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        torch.manual_seed(0)
        pil_img = Image.fromarray(img)
        pil = torch.stack([t(pil_img) for _ in range(_N)])
        aug = DeviceAugment(size, 3, r.crop_scale, r.crop_ratio, flip_p=r.flip_p)
        batch = torch.from_numpy(img).unsqueeze(0).expand(_N, *img.shape).contiguous()
        dev = aug(batch, torch.Generator().manual_seed(1))
    pa, pr, pf = _crop_stats(pil, size)
    da, dr, df = _crop_stats(dev, size)
    assert _ks(pa, da) < _KS_CRIT, "crop area fraction distribution differs from PIL"
    assert _ks(np.log(pr), np.log(dr)) < _KS_CRIT, "crop aspect distribution differs from PIL"
    # flip rate: both within 4 standard errors of 0.5 and of each other
    se = (0.25 / _N) ** 0.5
    assert abs(pf.mean() - 0.5) < 4 * se and abs(df.mean() - 0.5) < 4 * se
    assert abs(pf.mean() - df.mean()) < 4 * se * 2**0.5
    # the statistic is really sensitive: the full-image crop would give area 1 everywhere
    assert pa.min() < 0.5 and da.min() < 0.5


@pytest.mark.parametrize("recipe", ["longtail", "moco_v2"])
def test_brightness_jitter_matches_pil(recipe: str) -> None:
    """On a constant gray image crop, flip and contrast are identities, so the output level
    divided by the input level is the brightness factor (1 when the jitter is not applied)."""
    img = np.full((32, 32), 128, dtype=np.uint8)
    pil = _pil_outputs(img, recipe, 32, 1)
    dev = _device_outputs(img, recipe, 32, 1)

    def factor(out: torch.Tensor) -> np.ndarray:
        level = (out * GRAY_STD[0] + GRAY_MEAN[0]).mean(dim=(1, 2, 3))
        return (level / (128 / 255)).numpy()

    fp, fd = factor(pil), factor(dev)
    assert _ks(fp, fd) < _KS_CRIT + 0.02, "brightness factor distribution differs from PIL"
    for f in (fp, fd):
        assert f.min() > 0.6 - 0.02 and f.max() < 1.4 + 0.02
        assert f.min() < 0.65 and f.max() > 1.35  # the whole range [0.6, 1.4] is used
    if recipe == "moco_v2":  # jitter applied with p 0.8: about 20% exactly unchanged
        for f in (fp, fd):
            assert abs(np.mean(np.abs(f - 1) < 2e-3) - 0.2) < 0.05


def test_recipe_table_is_shared() -> None:
    from balfeat.data.recipes import RECIPE_NAMES, get_recipe
    from balfeat.data.transforms import TRANSFORM_NAMES

    assert set(TRANSFORM_NAMES) == set(RECIPE_NAMES)
    # every recipe runs on the device but those with RandAugment, which are refused by name
    host = {n for n in RECIPE_NAMES if get_recipe(n).host_only}
    assert host == {"randcls", "randclsstack", "cifar_autoaug_cutout"}
    assert set(DEVICE_RECIPES) == set(RECIPE_NAMES) - host
    for name in host:
        with pytest.raises(ConfigError, match=f"{name}.*RandAugment"):
            DeviceAugment.from_recipe(name, 32, 3)
    assert "none" in RECIPE_NAMES
    for name in DEVICE_RECIPES:
        aug, r = DeviceAugment.from_recipe(name, 32, 3), get_recipe(name)
        assert (aug.crop_scale, aug.flip_p, aug.jitter_p) == (r.crop_scale, r.flip_p, r.jitter_p)
        assert (aug.brightness, aug.hue, aug.grayscale_p) == (r.brightness, r.hue, r.grayscale_p)
    with pytest.raises(ConfigError, match="unknown augmentation recipe"):
        DeviceAugment.from_recipe("nope", 32, 3)


# -- loader: resume, shards, drop_last, class balance -------------------------------------------


def _loader(**kw: object) -> DeviceArrayLoader:
    imgs = _images(n=50, size=12, channels=3, seed=3)
    labels = np.arange(50) % 5
    args: dict = dict(batch_size=8, transform=DeviceAugment.from_recipe("moco_v2", 12, 3),
                      views=2, device="cpu", seed=7)  # fmt: skip
    args.update(kw)
    return DeviceArrayLoader(imgs, labels, **args)


def test_mid_epoch_resume_gives_the_rest_of_the_epoch_exactly() -> None:
    full = _loader()
    full.set_epoch(3)
    batches = list(full)
    resumed = _loader(start_batch=4)
    resumed.set_epoch(3)
    rest = list(resumed)
    assert len(rest) == len(resumed) == len(batches) - 4
    for (v_a, y_a), (v_b, y_b) in zip(batches[4:], rest, strict=True):
        assert torch.equal(y_a, y_b)
        assert torch.equal(v_a[0], v_b[0]) and torch.equal(v_a[1], v_b[1])


def test_drop_last_as_the_trainer() -> None:
    loader = _loader(drop_last=True)
    assert len(loader) == 50 // 8
    assert all(len(y) == 8 for _, y in loader)
    assert len(_loader(drop_last=False)) == 7


def test_two_ranks_get_disjoint_equal_shards() -> None:
    from balfeat.data.samplers import ShardedSampler

    seen = []
    for rank in (0, 1):
        sampler = ShardedSampler(48, shuffle=True, seed=7, num_replicas=2, rank=rank)
        imgs = np.arange(48, dtype=np.uint8).reshape(48, 1, 1).repeat(4, 1).repeat(4, 2)
        loader = DeviceArrayLoader(imgs, np.arange(48), batch_size=6, sampler=sampler,
                                   device="cpu", seed=7, drop_last=True)  # fmt: skip
        loader.set_epoch(2)
        seen.append(torch.cat([y for _, y in loader]).tolist())
    assert len(seen[0]) == len(seen[1]) == 24
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(48))


def test_class_balanced_loader_follows_the_sampler() -> None:
    labels = np.array([0] * 40 + [1] * 8 + [2] * 2)
    imgs = _images(n=50, size=8, channels=1, seed=1)
    sampler = ClassBalancedSampler(labels, num_samples=300, seed=5, num_replicas=1, rank=0)
    loader = DeviceArrayLoader(imgs, labels, batch_size=10, sampler=sampler, device="cpu",
                               seed=5, drop_last=True)  # fmt: skip
    loader.set_epoch(1)
    got = torch.cat([y for _, y in loader]).numpy()
    sampler.set_epoch(1)
    assert got.tolist() == labels[list(sampler)][: len(got)].tolist()
    counts = np.bincount(got, minlength=3)
    assert counts.max() - counts.min() <= 3  # balanced over classes despite 40:8:2
