"""Any number of views: recipes per view, MultiView, and BCL's three crops (its authors'
``TwoCropTransform``: one RandAugment crop for the classifier, two SimCLR-like crops for the
contrastive term) on every input path that can run them, with a clear error where one cannot."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.data.decode import EncodedBatchAugment
from balfeat.data.randaugment import RandAugment
from balfeat.data.recipes import view_set
from balfeat.data.transforms import MultiView, TwoViews, build_view_transforms
from balfeat.engine import build
from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer
from balfeat.errors import BalfeatError, ConfigError
from balfeat.methods.bcl import BCL

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=32",
    "data.num_classes=4",
    "data.image_size=16",
    "data.channels=3",
    "data.num_workers=0",
    "model.backbone=resnet8",
    "model.small_images=true",
    "optim.batch_size=8",
    "optim.epochs=1",
    "run.max_steps=1",
    "run.progress=false",
    "run.device=cpu",
    "method.name=bcl",
]


def _ops(t: object) -> list[type]:
    return [type(op) for op in t.transforms]  # type: ignore[attr-defined]


def test_view_set_gives_each_crop_its_recipe() -> None:
    assert view_set("bcl_randcls_sim", 3) == ("randcls", "bcl_sim", "bcl_sim")
    assert view_set("bcl_randcls_sim", 2) == ("randcls", "bcl_sim")
    assert view_set("paco_randcls_sim", 1) == ("randcls",)
    assert view_set("moco_v2", 4) == ("moco_v2",) * 4
    with pytest.raises(ConfigError, match="views=0"):
        view_set("moco_v2", 0)


@pytest.mark.parametrize("tensor", [False, True], ids=["pil", "uint8"])
def test_three_views_three_pipelines_of_two_recipes(tensor: bool) -> None:
    t0, t1, t2 = build_view_transforms("bcl_randcls_sim", 32, 3, tensor=tensor, views=3)
    assert t1 is t2 and t0 is not t1  # two independent draws of one SimCLR-like recipe
    assert RandAugment in _ops(t0) and RandAugment not in _ops(t1)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    inp: Any = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous() if tensor else img
    views = MultiView([t0, t1, t2])(inp)
    assert len(views) == 3 and all(v.shape == (3, 32, 32) for v in views)
    assert not torch.equal(views[1], views[2])


def test_bcl_takes_method_views_3_and_keeps_2_by_default() -> None:
    two = load_config(None, [*TINY, "data.augmentation=bcl_randcls_sim"])
    assert two.method.views == 2 and isinstance(build.train_transform(two), TwoViews)
    three = load_config(None, [*TINY, "data.augmentation=bcl_randcls_sim", "method.views=3"])
    assert three.method.views == 3
    for tensor in (False, True):
        t = build.train_transform(three, tensor=tensor)
        assert isinstance(t, MultiView) and len(t.transforms) == 3
        assert RandAugment in _ops(t.transforms[0]) and t.transforms[1] is t.transforms[2]
    with pytest.raises(ConfigError, match=r"method\.views"):
        load_config(None, [*TINY, "method.views=4"])
    with pytest.raises(ConfigError, match="views"):
        load_config(None, ["method.name=moco_v2", "method.views=3"])


def test_bcl_three_views_classify_the_first_and_contrast_the_others() -> None:
    """In eval mode (BN with running statistics, so each image's features do not depend on its
    batch) the three-view loss is the two-view loss with the roles split as the authors do."""
    from balfeat.models.backbones import build_backbone

    torch.manual_seed(0)
    method = BCL(build_backbone("resnet8", small_images=True, in_channels=3), num_classes=4)
    method.set_class_counts(torch.tensor([8, 4, 2, 1]))
    method.eval()
    v0, v1, v2 = (torch.randn(6, 3, 16, 16) for _ in range(3))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        three = method([v0, v1, v2], y)
        contrast = method([v1, v2], y)  # the contrastive term of v1, v2
        classify = method([v0, v1], y)  # the classifier on v0
    assert torch.allclose(three["bcl"], contrast["bcl"], atol=1e-6)
    assert torch.allclose(three["ce"], classify["ce"], atol=1e-6)
    assert not torch.allclose(three["ce"], contrast["ce"])
    with pytest.raises(BalfeatError, match="views"):
        method([v0, v1, v2, v0], y)


def _spy_views(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = BCL.forward

    def forward(self: BCL, images: Any, labels: torch.Tensor) -> Any:
        seen.append(len(images))
        return real(self, images, labels)

    monkeypatch.setattr(BCL, "forward", forward)
    return seen


@pytest.mark.parametrize(
    "extra",
    [["data.augmentation=bcl_randcls_sim", "data.loader=pil"],
     ["data.augmentation=bcl_sim", "data.loader=device"]],
    ids=["pil", "device"],
)  # fmt: skip
def test_three_crops_train_on_the_array_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    seen = _spy_views(monkeypatch)
    cfg = load_config(None, [*TINY, *extra, "method.views=3", f"run.output_dir={tmp_path}"])
    trainer = Trainer(cfg)
    assert trainer.fit()["steps"] == 1
    assert seen == [3] and trainer.batches.on_device == ("data.loader=device" in extra)


def _jpeg_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"n{c}").mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / f"n{c}" / f"{i}.jpg", quality=90)
    return root


def _folder_cfg(root: Path, out: Path, decode: str, augmentation: str) -> Any:
    return load_config(
        None,
        [*TINY[5:], "data.dataset=imagenet", f"data.root={root}", f"data.decode={decode}",
         "data.image_size=16", "data.channels=3", f"data.augmentation={augmentation}",
         "optim.batch_size=4", "method.views=3", f"run.output_dir={out}"],
    )  # fmt: skip


def test_three_crops_train_on_the_decode_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _jpeg_folder(tmp_path / "imgs")
    seen = _spy_views(monkeypatch)
    # data.decode=cpu: uint8-tensor recipes, the authors' crops with RandAugment
    Trainer(_folder_cfg(root, tmp_path / "cpu", "cpu", "bcl_randcls_sim")).fit()
    # data.decode=gpu (nvJPEG swapped for the CPU decoder): three on-device crops
    monkeypatch.setattr(build, "resolve_decode", lambda cfg: "gpu")
    real = build.build_batch_decoder

    def on_cpu(cfg: Any, dataset: Any) -> Any:
        dec = real(cfg, dataset)
        dec.backend = "cpu"
        return dec

    monkeypatch.setattr(build, "build_batch_decoder", on_cpu)
    t = Trainer(_folder_cfg(root, tmp_path / "gpu", "gpu", "bcl_sim"))
    t.fit()
    assert isinstance(t.batches.decoder, EncodedBatchAugment) and t.batches.decoder.views == 3
    assert seen == [3, 3]


def test_paths_without_randaugment_refuse_the_authors_crops_clearly(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, "data.augmentation=bcl_randcls_sim", "method.views=3",
                             "data.loader=device"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.loader=device cannot run .*RandAugment"):
        build.uses_device_loader(cfg, build.build_train_dataset(cfg))
    gpu = _folder_cfg(tmp_path, tmp_path / "out", "gpu", "bcl_randcls_sim")
    with pytest.raises(ConfigError, match=r"data\.decode=gpu"):
        build.resolve_decode(gpu)


def test_encoded_batch_augment_makes_any_number_of_views() -> None:
    from balfeat.data.decode import collate_encoded

    buf = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(buf, format="JPEG")
    raw = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    batch, _ = collate_encoded([(raw, 0), (raw, 1)])
    aug = EncodedBatchAugment("bcl_sim", 16, 3, views=4, backend="cpu")
    out = aug(batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert len(out) == 4 and all(v.shape == (2, 3, 16, 16) for v in out)
    with pytest.raises(ConfigError, match="views"):
        EncodedBatchAugment("bcl_sim", 16, 3, views=0, backend="cpu")
