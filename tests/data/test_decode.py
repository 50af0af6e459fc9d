"""Tests of the JPEG decoder selection and its CPU fallback."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.data.decode import DecodeFallbackWarning, decode_jpegs, select_decode
from balfeat.errors import ConfigError


def _jpeg(h: int = 24, w: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["pil", "cpu"])
def test_cpu_backends_are_kept(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_decode(name, cuda_available=False) == name


def test_gpu_selected_with_cuda() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_decode("gpu", cuda_available=True) == "gpu"


def test_gpu_falls_back_to_cpu_with_a_warning() -> None:
    with pytest.warns(DecodeFallbackWarning, match="no CUDA device"):
        assert select_decode("gpu", cuda_available=False) == "cpu"


def test_unknown_backend_raises() -> None:
    with pytest.raises(ConfigError, match=r"data\.decode='nvjpeg'"):
        select_decode("nvjpeg")


@pytest.mark.parametrize("channels", [1, 3])
def test_pil_and_torchvision_decode_agree(channels: int) -> None:
    files = [_jpeg(seed=s) for s in range(3)]
    pil = decode_jpegs(files, "pil", channels)
    tv = decode_jpegs(files, "cpu", channels)
    for a, b in zip(pil, tv, strict=True):
        assert a.dtype == b.dtype == torch.uint8
        assert a.shape == b.shape == (channels, 24, 32)
        # both use libjpeg(-turbo); IDCT/colour-conversion differences stay within a few levels
        assert (a.int() - b.int()).abs().float().mean() < 3.0
