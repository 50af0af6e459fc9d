"""``data.decode`` in the trainer: image folders decoded by PIL, torchvision on the CPU, or as
encoded batches on the device (here run on the CPU), with the gpu -> cpu fallback."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.data.batches import BatchSource
from balfeat.data.decode import DecodeFallbackWarning, EncodedBatchAugment
from balfeat.engine import build
from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer
from balfeat.errors import ConfigError


def _jpeg_folder(root: Path, classes: int = 2, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"n{c:03d}").mkdir(parents=True)
        for i in range(per_class):
            h, w = int(rng.integers(30, 50)), int(rng.integers(30, 50))
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / f"n{c:03d}" / f"{i}.jpg", quality=90)
    return root


def _cfg(
    root: Path, out: Path, decode: str, method: str = "moco_v2", extra: tuple[str, ...] = ()
) -> Any:
    return load_config(
        None,
        [
            "data.dataset=imagenet",
            f"data.root={root}",
            f"data.decode={decode}",
            "data.image_size=16",
            "data.channels=3",
            "data.augmentation=moco_v2",
            "model.backbone=resnet8",
            "model.small_images=true",
            f"method.name={method}",
            *(["method.K=16", "method.dim=8", "method.bn_splits=2"] if method == "moco_v2" else []),
            "optim.batch_size=4",
            "optim.epochs=1",
            "run.max_steps=1",
            "run.device=cpu",
            "run.progress=false",
            f"run.output_dir={out}",
            *extra,
        ],
    )


def test_decode_is_a_checked_config_key(tmp_path: Path) -> None:
    assert load_config(None, []).data.decode == "pil"
    with pytest.raises(ConfigError, match="decode"):
        load_config(None, ["data.decode=nvjpeg"])


def test_cpu_decode_trains_a_step(tmp_path: Path) -> None:
    root = _jpeg_folder(tmp_path / "imgs")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecodeFallbackWarning)
        t = Trainer(_cfg(root, tmp_path / "out", "cpu"))
        t.fit()
    assert t.dataset.decode == "cpu"  # type: ignore[attr-defined]
    assert t.batches.decoder is None and t.step == 1
    views, _ = t.dataset[0]
    assert isinstance(views, list) and views[0].shape == (3, 16, 16)


def test_gpu_decode_without_cuda_falls_back_to_cpu_and_trains(tmp_path: Path) -> None:
    root = _jpeg_folder(tmp_path / "imgs")
    with pytest.warns(DecodeFallbackWarning, match="no CUDA device"):
        t = Trainer(_cfg(root, tmp_path / "out", "gpu"))
        t.fit()
    assert t.dataset.decode == "cpu"  # type: ignore[attr-defined]
    assert t.batches.decoder is None and t.step == 1


def _gpu_path_on_cpu(monkeypatch: pytest.MonkeyPatch) -> list[EncodedBatchAugment]:
    """Route data.decode=gpu through the encoded-batch path with the CPU decoder (no nvJPEG)."""
    monkeypatch.setattr(build, "resolve_decode", lambda cfg: "gpu")
    real = build.build_batch_decoder
    made: list[EncodedBatchAugment] = []

    def on_cpu(cfg: Any, dataset: Any) -> Any:
        dec = real(cfg, dataset)
        assert isinstance(dec, EncodedBatchAugment) and dec.views == cfg.method.views
        dec.backend = "cpu"
        made.append(dec)
        return dec

    monkeypatch.setattr(build, "build_batch_decoder", on_cpu)
    return made


@pytest.mark.parametrize("method", ["moco_v2", "sl"])
def test_encoded_batches_train_through_the_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """The gpu path end to end with nvJPEG swapped for the CPU decoder: the dataset yields
    encoded files, the loader keeps them as a list, the trainer decodes and augments them into
    ``method.views`` views on the device."""
    made = _gpu_path_on_cpu(monkeypatch)
    root = _jpeg_folder(tmp_path / "imgs")
    cfg = _cfg(root, tmp_path / "out", "gpu", method)
    t = Trainer(cfg)
    seen: list[Any] = []
    real_to_device = BatchSource.to_device

    def spy(self: BatchSource, images: Any, batch_index: int) -> Any:
        seen.append(images)
        return real_to_device(self, images, batch_index)

    monkeypatch.setattr(BatchSource, "to_device", spy)
    t.fit()
    assert made and t.step == 1
    from balfeat.data.decode import EncodedBatch

    assert isinstance(seen[0], EncodedBatch) and len(seen[0]) == 4
    assert all(x.ndim == 1 for x in seen[0].images)  # JPEG bytes reach the batch path
    out = real_to_device(t.batches, seen[0], 0)
    if method == "moco_v2":
        assert isinstance(out, list) and len(out) == 2 and out[0].shape == (4, 3, 16, 16)
    else:
        assert out.shape == (4, 3, 16, 16)


def test_encoded_batches_resume_mid_epoch_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The on-device augmentation of batch b depends on (seed, rank, epoch, b) only: a run cut
    in its second epoch and resumed ends with the uninterrupted run's weights."""
    _gpu_path_on_cpu(monkeypatch)
    root = _jpeg_folder(tmp_path / "imgs", classes=2, per_class=6)  # 12 images: 3 steps/epoch

    def fit(out: Path, extra: tuple[str, ...], resume: bool = False) -> Trainer:
        t = Trainer(_cfg(root, out, "gpu", "moco_v2", ("optim.epochs=2", *extra)), resume=resume)
        t.fit()
        return t

    full = fit(tmp_path / "full", ("run.max_steps=0",))
    fit(tmp_path / "cut", ("run.max_steps=4",))
    resumed = fit(tmp_path / "cut", ("run.max_steps=0",), resume=True)
    assert full.step == resumed.step == 6
    a, b = full.method.state_dict(), resumed.method.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
