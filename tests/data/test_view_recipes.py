"""Two-view augmentations (PaCo's randcls_sim, GPaCo's randcls_randclsstack, BCL's views, PaCo's
CIFAR views): one pipeline per view, PIL and uint8-tensor inputs, seeded reproducibility, the
loader choice (``data.loader=auto`` falls back to PIL, ``device`` is refused) and one PaCo step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.data.randaugment import RandAugment
from balfeat.data.recipes import (
    AUGMENTATION_NAMES,
    RECIPE_NAMES,
    VIEW_PAIRS,
    get_recipe,
    host_only,
    view_recipes,
)
from balfeat.data.transforms import Cutout, TwoViews, build_transform, build_view_transforms
from balfeat.engine import build
from balfeat.engine.config import load_config
from balfeat.errors import ConfigError

PAIRS = sorted(VIEW_PAIRS)


def _ops(t: object) -> list[type]:
    return [type(op) for op in t.transforms]  # type: ignore[attr-defined]


def _img(seed: int = 0, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_augmentation_names_and_the_config_literal_agree() -> None:
    from typing import get_args

    from balfeat.engine.config import AugmentationName

    assert set(get_args(AugmentationName)) == set(AUGMENTATION_NAMES)
    assert set(AUGMENTATION_NAMES) == set(RECIPE_NAMES) | set(VIEW_PAIRS)
    for first, second in VIEW_PAIRS.values():
        assert first in RECIPE_NAMES and second in RECIPE_NAMES


def test_the_authors_views() -> None:
    assert view_recipes("paco_randcls_sim") == ("randcls", "paco_sim")
    assert view_recipes("gpaco_randcls_randclsstack") == ("randcls", "randclsstack")
    assert view_recipes("bcl_randcls_sim") == ("randcls", "bcl_sim")
    assert view_recipes("moco_v2") == ("moco_v2", "moco_v2")
    rc, sim, bsim = get_recipe("randcls"), get_recipe("paco_sim"), get_recipe("bcl_sim")
    assert rc.randaugment == "rand-n2-m10-mstd0.5" and rc.crop_scale == (0.08, 1.0)
    assert (rc.brightness, rc.hue, rc.jitter_p, rc.grayscale_p) == (0.4, 0.0, 1.0, 0.0)
    assert sim.randaugment is None and (sim.blur_p, sim.grayscale_p, sim.hue) == (0.5, 0.2, 0.0)
    assert bsim.blur_sigma is None and (bsim.jitter_p, bsim.hue) == (0.8, 0.1)
    cifar = get_recipe("cifar_autoaug_cutout")
    assert (cifar.pad_crop, cifar.autoaugment, cifar.cutout) == (4, "cifar10", 16)
    with pytest.raises(ConfigError, match="unknown augmentation 'nope'"):
        view_recipes("nope")


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("tensor", [False, True], ids=["pil", "uint8"])
def test_the_two_views_come_from_different_pipelines(name: str, tensor: bool) -> None:
    t_q, t_k = build_view_transforms(name, 224, 3, tensor=tensor)
    assert t_q is not t_k
    q_ops, k_ops = _ops(t_q), _ops(t_k)
    assert q_ops != k_ops
    if name != "paco_cifar_autoaug_sim":
        assert RandAugment in q_ops  # the query / classifier view has RandAugment
    if name in ("paco_randcls_sim", "bcl_randcls_sim"):
        assert RandAugment not in k_ops
    if name == "gpaco_randcls_randclsstack":
        assert RandAugment in k_ops
    if name == "paco_cifar_autoaug_sim":
        assert Cutout in q_ops and Cutout not in k_ops
    # a one-recipe name: the same pipeline for both views
    a, b = build_view_transforms("moco_v2", 32, 3, tensor=tensor)
    assert a is b


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("size", [224, 32])
def test_pil_and_uint8_inputs_give_normalised_views(name: str, size: int) -> None:
    img = _img(size=48)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    for tensor, inp in ((False, img), (True, x)):
        views = TwoViews(*build_view_transforms(name, size, 3, tensor=tensor))(inp)
        assert len(views) == 2
        for v in views:
            assert v.shape == (3, size, size) and v.dtype == torch.float32
            assert torch.isfinite(v).all()


@pytest.mark.parametrize("tensor", [False, True], ids=["pil", "uint8"])
def test_two_views_follow_the_seed(tensor: bool) -> None:
    tv = TwoViews(*build_view_transforms("paco_randcls_sim", 32, 3, tensor=tensor))
    img = _img(5)
    inp = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous() if tensor else img
    torch.manual_seed(3)
    first = [tv(inp) for _ in range(4)]
    torch.manual_seed(3)
    again = [tv(inp) for _ in range(4)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(first[0][0], first[0][1])


def test_build_transform_refuses_a_two_view_name() -> None:
    with pytest.raises(ConfigError, match="build_view_transforms"):
        build_transform("paco_randcls_sim", 32, 3)
    assert isinstance(build_transform("randcls", 32, 3), object)


def test_cutout_zeroes_one_clipped_square() -> None:
    torch.manual_seed(0)
    for _ in range(20):
        out = Cutout(16)(torch.ones(3, 32, 32))
        zero = out[0] == 0
        rows, cols = zero.any(dim=1).sum(), zero.any(dim=0).sum()
        assert 0 < int(zero.sum()) <= 256 and int(zero.sum()) == int(rows * cols)
        assert torch.equal(out[0], out[2])


def test_host_only() -> None:
    assert host_only("paco_randcls_sim") and host_only("randclsstack")
    assert host_only("paco_cifar_autoaug_sim")
    assert not host_only("moco_v2") and not host_only("paco_sim") and not host_only("bcl_sim")


# -- the engine: train_transform, loader choice ---------------------------------------------------

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=32",
    "data.num_classes=4",
    "data.image_size=16",
    "data.num_workers=0",
    "model.backbone=resnet8",
    "model.small_images=true",
    "optim.batch_size=8",
    "optim.epochs=1",
    "run.max_steps=1",
    "run.progress=false",
    "run.device=cpu",
]
PACO = ["method.name=paco", "method.K=16", "method.bn_splits=2"]


def test_train_transform_gives_two_pipelines_for_a_two_view_method() -> None:
    cfg = load_config(None, [*TINY, *PACO, "data.augmentation=paco_randcls_sim"])
    t = build.train_transform(cfg)
    assert isinstance(t, TwoViews) and t.transform is not t.transform_k
    assert RandAugment in _ops(t.transform) and RandAugment not in _ops(t.transform_k)
    tt = build.train_transform(cfg, tensor=True)
    assert isinstance(tt, TwoViews) and RandAugment in _ops(tt.transform)
    # a one-view method takes the first view
    sl = load_config(None, [*TINY, "method.name=sl", "data.augmentation=paco_randcls_sim"])
    assert RandAugment in _ops(build.train_transform(sl))
    # a one-recipe name keeps one pipeline for both views (as before)
    moco = build.train_transform(load_config(None, [*TINY, *PACO, "data.augmentation=moco_v2"]))
    assert moco.transform is moco.transform_k


def test_loader_auto_falls_back_to_pil_and_device_is_refused() -> None:
    plain = load_config(None, [*TINY, *PACO, "data.augmentation=moco_v2"])
    ds = build.build_train_dataset(plain)
    assert build.uses_device_loader(plain, ds)  # in-memory array + device recipe
    for name in ("paco_randcls_sim", "paco_cifar_autoaug_sim", "randcls"):
        cfg = load_config(None, [*TINY, *PACO, f"data.augmentation={name}"])
        ds = build.build_train_dataset(cfg)
        assert not build.uses_device_loader(cfg, ds)
        dev = load_config(None, [*TINY, *PACO, f"data.augmentation={name}", "data.loader=device"])
        with pytest.raises(ConfigError, match=f"data.loader=device.*{name}.*RandAugment"):
            build.uses_device_loader(dev, ds)


def test_gpu_decode_is_refused_for_a_randaugment_recipe() -> None:
    cfg = load_config(None, [*TINY, *PACO, "data.augmentation=paco_randcls_sim", "data.decode=gpu"])
    with pytest.raises(ConfigError, match=r"data\.decode=gpu"):
        build.resolve_decode(cfg)


@pytest.mark.parametrize(
    "method,aug",
    [("paco", "paco_randcls_sim"), ("gpaco", "gpaco_randcls_randclsstack"),
     ("bcl", "bcl_randcls_sim"), ("paco", "paco_cifar_autoaug_sim")],
)  # fmt: skip
def test_one_trainer_step_with_the_authors_views(method: str, aug: str, tmp_path: Path) -> None:
    from balfeat.engine.config import overrides_for
    from balfeat.engine.trainer import Trainer

    extra = overrides_for(method, ["method.K=16", "method.bn_splits=2"])
    cfg = load_config(
        None,
        [*TINY, f"method.name={method}", *extra, f"data.augmentation={aug}",
         f"run.output_dir={tmp_path}"],
    )  # fmt: skip
    trainer = Trainer(cfg)
    summary = trainer.fit()
    assert summary["steps"] == 1 and np.isfinite(summary["final_loss"])
    assert trainer.batches.on_device is False
