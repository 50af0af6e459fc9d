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


# -- CPU decoding of any file, and the encoded-batch (gpu) path run on the CPU ------------------


def _photo(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth colour image with a little noise (JPEG-friendly, like a photograph)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            128 + 80 * np.sin(0.03 * xx + 0.02 * yy),
            128 + 80 * np.cos(0.02 * xx),
            100 + 50 * np.sin(0.05 * yy),
        ],
        -1,
    )
    return (img + rng.normal(0, 5, img.shape)).clip(0, 255).astype(np.uint8)


def _encode(img: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_decode_image_bytes_reads_jpeg_png_and_pil_only_formats(fmt: str) -> None:
    from balfeat.data.decode import decode_image_bytes, is_jpeg

    img = _photo(30, 40)
    data = _encode(img, fmt)
    assert is_jpeg(data) == (fmt == "JPEG")
    x = decode_image_bytes(data, 3)
    assert x.dtype == torch.uint8 and x.shape == (3, 30, 40)
    ref = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    tol = 3.0 if fmt == "JPEG" else 0.0  # PNG and BMP are lossless: exact
    assert (x.int() - ref.int()).abs().float().mean() <= tol
    assert decode_image_bytes(data, 1).shape == (1, 30, 40)


def test_decode_image_bytes_raises_on_garbage() -> None:
    from balfeat.data.decode import decode_image_bytes

    with pytest.raises(OSError):
        decode_image_bytes(b"\xff\xd8\xff" + b"not really a jpeg" * 10)


def test_collate_keeps_files_as_a_list_and_pins() -> None:
    from balfeat.data.decode import EncodedBatch, collate_encoded

    a = torch.frombuffer(bytearray(_encode(_photo(20, 30))), dtype=torch.uint8)
    b = torch.zeros(3, 8, 9, dtype=torch.uint8)
    batch, labels = collate_encoded([(a, 3), (b, 1)])
    assert isinstance(batch, EncodedBatch) and len(batch) == 2
    assert batch.images[0] is a and batch.images[1] is b
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 1]


def test_crop_boxes_fit_and_follow_torchvision_scale() -> None:
    from balfeat.data.tensor_ops import crop_boxes

    n = 4000
    h = torch.full((n,), 300, dtype=torch.int64)
    w = torch.full((n,), 400, dtype=torch.int64)
    boxes = crop_boxes(h, w, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    top, left, ch, cw = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + ch <= 300).all() and (left + cw <= 400).all() and (ch > 0).all()
    # torchvision's draws on the same image size (its global RNG)
    from torchvision import transforms as T

    torch.manual_seed(0)
    ref = torch.tensor(
        [
            T.RandomResizedCrop.get_params(torch.empty(1, 300, 400), [0.2, 1.0], [3 / 4, 4 / 3])
            for _ in range(n)
        ]
    )
    area = (ch * cw).double() / (300 * 400)
    ref_area = (ref[:, 2] * ref[:, 3]).double() / (300 * 400)
    assert _ks(area.numpy(), ref_area.numpy()) < 1.95 * (2.0 / n) ** 0.5
    log_r = torch.log(cw.double() / ch.double())
    ref_log_r = torch.log(ref[:, 3].double() / ref[:, 2].double())
    assert _ks(log_r.numpy(), ref_log_r.numpy()) < 1.95 * (2.0 / n) ** 0.5
    # a long thin image needs the fallback: the centre crop with the aspect clamped
    tiny = crop_boxes(torch.tensor([10]), torch.tensor([1000]), (0.9, 1.0), (1.0, 1.0),
                      torch.Generator().manual_seed(0))  # fmt: skip
    assert tiny.tolist() == [[0, 495, 10, 10]]


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def test_gaussian_blur_batch_matches_torchvision() -> None:
    from torchvision.transforms import functional as TF

    from balfeat.data.tensor_ops import gaussian_blur_batch

    x = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 1.7, 1.0])
    apply = torch.tensor([True, True, False])
    out = gaussian_blur_batch(x, sigma, apply, 5)
    for i in range(2):
        ref = TF.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2)
        assert torch.allclose(out[i], ref, atol=1e-5)
    assert torch.equal(out[2], x[2])


def test_encoded_batch_augment_eval_matches_pil_eval() -> None:
    """The gpu path's geometry (decode, resize shorter side, centre crop) gives the PIL eval
    transform's tensor, whether the item is a JPEG's bytes or an image decoded on the CPU."""
    from balfeat.data.decode import EncodedBatchAugment, collate_encoded, decode_image_bytes
    from balfeat.data.transforms import build_transform

    data = _encode(_photo(120, 160))
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    batch, _ = collate_encoded([(raw, 0), (decode_image_bytes(data), 0)])
    aug = EncodedBatchAugment("eval", 96, 3, backend="cpu")
    out = aug(batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    ref = build_transform("eval", 96, 3)(Image.open(io.BytesIO(data)))
    assert out.shape == (2, 3, 96, 96) and out.dtype == torch.float32
    for x in out:
        assert (x - ref).abs().mean() < 0.02  # normalised units: about one grey level
    small = EncodedBatchAugment("none", 16, 1, backend="cpu")(
        batch, torch.device("cpu"), torch.Generator()
    )
    assert small.shape == (2, 1, 16, 16)


def _ramp_jpegless(side: int = 64) -> torch.Tensor:
    """RGB uint8 (3, side, side): R rises left to right, G top to bottom, B constant."""
    ramp = torch.round(255 * (torch.arange(side) + 0.5) / side).to(torch.uint8)
    img = torch.zeros(3, side, side, dtype=torch.uint8)
    img[0] = ramp.view(1, -1)
    img[1] = ramp.view(-1, 1)
    img[2] = 128
    return img


def test_encoded_batch_augment_crop_and_flip_distribution_matches_pil() -> None:
    """Per-op statistics of the gpu path (run on the CPU) against the PIL recipe on one image:
    crop area, aspect (from the ramps' slopes) and flip rate, two-sample KS at the 0.1% level."""
    from torchvision import transforms as T

    from balfeat.data.decode import EncodedBatch, EncodedBatchAugment
    from balfeat.data.recipes import IMAGENET_MEAN, IMAGENET_STD

    n, size = 800, 32
    img = _ramp_jpegless()
    aug = EncodedBatchAugment("supervised", size, 3, views=2, backend="cpu")
    q, k = aug(EncodedBatch([img] * n), torch.device("cpu"), torch.Generator().manual_seed(1))
    assert not torch.allclose(q, k)  # two independent views
    torch.manual_seed(0)
    t = T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
        T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    pil_img = Image.fromarray(img.permute(1, 2, 0).numpy())
    pil = torch.stack([t(pil_img) for _ in range(n)])

    def stats(out: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = out * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(
            1, 3, 1, 1
        )
        dx = (x[:, 0, :, -1] - x[:, 0, :, 0]).mean(1) * size / (size - 1)
        dy = (x[:, 1, -1, :] - x[:, 1, 0, :]).mean(1) * size / (size - 1)
        w, h = dx.abs(), dy.abs()
        return (w * h).numpy(), np.log((w / h).numpy()), (dx < 0).numpy()

    crit = 1.95 * (2.0 / n) ** 0.5
    pa, pr, pf = stats(pil)
    for view in (q, k):
        da, dr, df = stats(view)
        assert _ks(pa, da) < crit, "crop area distribution differs from PIL"
        assert _ks(pr, dr) < crit, "crop aspect distribution differs from PIL"
        se = (0.25 / n) ** 0.5
        assert abs(df.mean() - 0.5) < 4 * se and abs(pf.mean() - df.mean()) < 4 * se * 2**0.5
        assert da.min() < 0.2  # sensitive: small crops do occur


def test_encoded_batch_augment_brightness_and_blur_match_pil() -> None:
    """moco_v2 at 64 px on a constant image: the level gives the brightness factor (jitter with
    p 0.8 on both paths); on a checkerboard the blur (p 0.5) flattens the pattern."""
    from balfeat.data.decode import EncodedBatch, EncodedBatchAugment
    from balfeat.data.recipes import GRAY_MEAN, GRAY_STD
    from balfeat.data.transforms import build_transform

    n = 600
    flat = torch.full((1, 64, 64), 128, dtype=torch.uint8)
    aug = EncodedBatchAugment("moco_v2", 64, 1, backend="cpu")
    dev = aug(EncodedBatch([flat] * n), torch.device("cpu"), torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    t = build_transform("moco_v2", 64, 1)
    pil = torch.stack([t(Image.fromarray(flat[0].numpy())) for _ in range(n)])

    def factor(out: torch.Tensor) -> np.ndarray:
        return ((out * GRAY_STD[0] + GRAY_MEAN[0]).mean(dim=(1, 2, 3)) / (128 / 255)).numpy()

    fp, fd = factor(pil), factor(dev)
    assert _ks(fp, fd) < 1.95 * (2.0 / n) ** 0.5 + 0.02
    for f in (fp, fd):
        assert abs(np.mean(np.abs(f - 1) < 2e-3) - 0.2) < 0.06  # jitter skipped 20% of the time
    # blur: a fine checkerboard keeps its contrast unless blurred
    board = ((torch.arange(64).view(-1, 1) + torch.arange(64).view(1, -1)) % 2 * 255).to(
        torch.uint8
    )
    nb = 300
    blur_only = EncodedBatchAugment("moco_v2", 64, 1, backend="cpu")
    blur_only.post.brightness = blur_only.post.contrast = 0.0
    blur_only.post.flip_p = 0.0
    out = blur_only(EncodedBatch([board.unsqueeze(0)] * nb), torch.device("cpu"),
                    torch.Generator().manual_seed(3))  # fmt: skip
    spread = out.std(dim=(1, 2, 3))
    blurred = (spread < 0.5 * spread.max()).float().mean().item()
    assert abs(blurred - 0.5) < 4 * (0.25 / nb) ** 0.5


def test_encoded_batch_augment_is_seeded_and_names_a_bad_file() -> None:
    from balfeat.data.decode import EncodedBatch, EncodedBatchAugment
    from balfeat.errors import DataError

    raw = torch.frombuffer(bytearray(_encode(_photo(40, 50))), dtype=torch.uint8)
    aug = EncodedBatchAugment("moco_v2", 24, 3, backend="cpu")
    batch = EncodedBatch([raw, raw, raw])

    def run(seed: int) -> torch.Tensor:
        return aug(batch, torch.device("cpu"), torch.Generator().manual_seed(seed))

    assert torch.equal(run(5), run(5)) and not torch.allclose(run(5), run(6))
    bad = torch.frombuffer(bytearray(b"\xff\xd8\xff" + b"x" * 50), dtype=torch.uint8)
    with pytest.raises(DataError, match=r"cannot decode image 1 of a batch of 2"):
        aug(EncodedBatch([raw, bad]), torch.device("cpu"), torch.Generator())
    with pytest.raises(ConfigError):
        EncodedBatchAugment("moco_v2", 24, 3, backend="pil")  # type: ignore[arg-type]
