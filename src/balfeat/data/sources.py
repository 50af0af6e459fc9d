"""Where datasets come from: Fashion-MNIST (found or fetched without network access other than
apt), IDX files, and MNIST/Fashion-MNIST/CIFAR-10/100 folders in torchvision's layout.

Fashion-MNIST is looked for, in order, in

1. a directory the user names (``root=`` / ``--dir``);
2. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
3. the user cache ``$BALFEAT_CACHE/fashion-mnist``, else ``$XDG_CACHE_HOME/balfeat/fashion-mnist``,
   else ``~/.cache/balfeat/fashion-mnist``;

and otherwise fetched with ``apt-get download dataset-fashion-mnist`` + ``dpkg-deb -x`` into the
cache (no root needed). Nothing else touches the network. The first load decompresses the IDX files
into ``.npy`` arrays in the cache; later loads read those (tens of milliseconds).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from balfeat.atomic import atomic_write_bytes
from balfeat.errors import DataError

FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(i) for i in range(10)]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class ImageData(NamedTuple):
    """A train/test pair of in-memory image arrays.

    Attributes:
        train_x: uint8, shape (N, H, W) or (N, H, W, 3).
        train_y: int64, shape (N,).
        test_x: uint8, shape (M, H, W) or (M, H, W, 3).
        test_y: int64, shape (M,).
        class_names: one name per class.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """C, the number of class names."""
        return len(self.class_names)


def load_npz_arrays(
    path: str | os.PathLike[str], pairs: tuple[tuple[str, str], ...]
) -> dict[str, np.ndarray]:
    """Read image/label array pairs from a NumPy ``.npz`` archive and check them.

    Args:
        path: the ``.npz`` file (``np.savez(path, images=..., labels=...)``).
        pairs: ``(images key, labels key)`` pairs to read, e.g. ``(("images", "labels"),)`` or
            ``(("train_x", "train_y"), ("test_x", "test_y"))``.

    Returns:
        ``{key: array}``; images uint8 Shape: (N, H, W) or (N, H, W, C) with C = 1 or 3, labels
        int64 Shape: (N,).

    Raises:
        DataError: naming the file and the key: not an ``.npz`` archive, a missing key, images
            that are not uint8 (N, H, W[, C]), labels that are not non-negative integers (a
            float label such as 0.5 is not truncated), or a count of labels that differs from the
            count of images.
    """
    import zipfile

    keys = [k for pair in pairs for k in pair]
    wanted = f"an .npz archive with arrays {', '.join(keys)}"
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err}); give {wanted}") from None
    except (ValueError, EOFError, zipfile.BadZipFile):  # numpy's text speaks of pickles
        raise DataError(f"{path}: not a NumPy archive; give {wanted} (np.savez)") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a .npy file holds one array; give {wanted} (np.savez)")
    out: dict[str, np.ndarray] = {}
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise DataError(
                f"{path}: array(s) {', '.join(missing)} missing (it holds "
                f"{', '.join(archive.files) or 'none'}); give {wanted}"
            )
        for k in keys:
            try:
                out[k] = archive[k]
            except (ValueError, OSError) as err:
                raise DataError(f"{path}: array {k!r} cannot be read ({err})") from None
    for xk, yk in pairs:
        x, y = out[xk], out[yk]
        if (
            x.dtype != np.uint8
            or x.ndim not in (3, 4)
            or (x.ndim == 4 and x.shape[-1] not in (1, 3))
        ):
            raise DataError(
                f"{path}: {xk!r} must be uint8 images of shape (N, H, W) or (N, H, W, C) with "
                f"C = 1 or 3, got {x.dtype} {x.shape}"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"{path}: {yk!r} must hold one label per image ({len(x)}), got shape {y.shape}"
            )
        if y.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
            if len(bad):
                raise DataError(
                    f"{path}: {yk}[{int(bad[0])}] = {float(y[bad[0]])} is not a whole number; "
                    "labels are class ids 0..C-1"
                )
        elif y.dtype.kind not in "iub":
            raise DataError(f"{path}: {yk!r} must hold integer class ids, got {y.dtype}")
        if len(y) and y.min() < 0:
            i = int(np.argmin(y))
            raise DataError(f"{path}: {yk}[{i}] = {y[i]} is negative; labels are 0..C-1")
        out[yk] = y.astype(np.int64)
    return out


def cache_root() -> Path:
    """``$BALFEAT_CACHE``, else ``$XDG_CACHE_HOME/balfeat``, else ``~/.cache/balfeat``."""
    if os.environ.get("BALFEAT_CACHE"):
        return Path(os.environ["BALFEAT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "balfeat"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed (``.gz``) or raw.

    Raises:
        DataError: a bad magic number or a size that does not match the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: header says shape {shape} ({expected} bytes) but {len(data) - header} "
            "bytes follow; the file is truncated or corrupt, fetch it again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _has_fashion_mnist(folder: Path) -> bool:
    return all(_idx_file(folder, s) is not None for s in FASHION_MNIST_FILES.values())


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding the four Fashion-MNIST IDX files, or None when none is found.

    Args:
        root: a folder the user names. It is checked first and must hold the files (directly,
            in ``fashion-mnist/``, ``FashionMNIST/raw/`` or ``usr/share/datasets/fashion-mnist/``).

    Raises:
        DataError: ``root`` is given but holds no Fashion-MNIST files.
    """
    if root is not None:
        r = Path(root).expanduser()
        for cand in (
            r,
            r / "fashion-mnist",
            r / "FashionMNIST" / "raw",
            r / "usr/share/datasets/fashion-mnist",
        ):
            if _has_fashion_mnist(cand):
                return cand
        raise DataError(
            f"no Fashion-MNIST files in {r}: expected {', '.join(FASHION_MNIST_FILES.values())} "
            "(optionally .gz); leave the directory out to use the system copy, the cache, or fetch"
        )
    for cand in (SYSTEM_FASHION_MNIST, cache_root() / "fashion-mnist"):
        if _has_fashion_mnist(cand):
            return cand
    return None


def fetch_fashion_mnist(dest: str | os.PathLike[str] | None = None) -> Path:
    """Download the Debian package with ``apt-get download`` and unpack it with ``dpkg-deb -x``.

    No root is needed. The files land in ``dest`` (default: the user cache
    ``cache_root()/fashion-mnist``).

    Raises:
        DataError: apt/dpkg are missing, apt has no package lists (run ``sudo apt-get update``
            once), or the download failed.
    """
    dest = Path(dest) if dest is not None else cache_root() / "fashion-mnist"
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(
                f"cannot fetch Fashion-MNIST: {tool} is not installed (not a Debian/Ubuntu system)."
                " Download train/t10k images/labels IDX files yourself and pass --dir"
            )
    with tempfile.TemporaryDirectory(prefix="balfeat-fetch-") as tmp:
        proc = subprocess.run(
            ["apt-get", "download", DEBIAN_PACKAGE],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(Path(tmp).glob(f"{DEBIAN_PACKAGE}_*.deb"))
        if proc.returncode != 0 or not debs:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            detail = msg[-1] if msg else f"exit code {proc.returncode}"
            if "Unable to locate" in (proc.stderr or "") or "no installation candidate" in (
                proc.stderr or ""
            ):
                raise DataError(
                    f"apt does not know the package {DEBIAN_PACKAGE} ({detail}); its package "
                    "lists are missing or stale: run `sudo apt-get update` once, then retry "
                    "(or pass --dir with the IDX files)"
                )
            raise DataError(f"apt-get download {DEBIAN_PACKAGE} failed: {detail}")
        unpack = Path(tmp) / "unpacked"
        proc = subprocess.run(
            ["dpkg-deb", "-x", str(debs[-1]), str(unpack)],
            capture_output=True,
            text=True,
            check=False,
        )
        src = unpack / "usr/share/datasets/fashion-mnist"
        if proc.returncode != 0 or not _has_fashion_mnist(src):
            raise DataError(f"unpacking {debs[-1].name} failed: {proc.stderr.strip()}")
        dest.mkdir(parents=True, exist_ok=True)
        for stem in FASHION_MNIST_FILES.values():
            f = _idx_file(src, stem)
            assert f is not None
            tmp_dest = dest / f".{f.name}.tmp"
            shutil.copyfile(f, tmp_dest)
            os.replace(tmp_dest, dest / f.name)
    return dest


def _array_cache_dir(source: Path) -> Path:
    files = [_idx_file(source, s) for s in FASHION_MNIST_FILES.values()]
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_root() / "fashion-mnist" / "arrays" / digest


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    atomic_write_bytes(path, lambda fh: np.save(fh, arr))


def load_idx_folder(
    folder: Path, files: dict[str, str], cache: bool = True
) -> dict[str, np.ndarray]:
    """Read IDX files ``{key: stem}`` from ``folder``, through a ``.npy`` cache when ``cache``."""
    cache_dir = _array_cache_dir(folder) if cache else None
    if cache_dir is not None and all((cache_dir / f"{k}.npy").is_file() for k in files):
        try:
            return {k: np.load(cache_dir / f"{k}.npy") for k in files}
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    out: dict[str, np.ndarray] = {}
    for key, stem in files.items():
        f = _idx_file(folder, stem)
        if f is None:
            raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")
        arr = read_idx(f)
        out[key] = arr.astype(np.int64) if arr.ndim == 1 else arr
    if cache_dir is not None:
        try:
            for key, arr in out.items():
                _save_npy_atomic(cache_dir / f"{key}.npy", arr)
        except OSError:
            pass  # a read-only cache only costs speed
    return out


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None, fetch: bool = True, cache: bool = True
) -> ImageData:
    """Fashion-MNIST as uint8 arrays: train (60000, 28, 28), test (10000, 28, 28), int64 labels.

    Args:
        root: a folder holding the IDX files; default: search (see the module docstring).
        fetch: fetch with apt when nothing is found (default True).
        cache: keep decompressed ``.npy`` copies in the user cache for fast later loads.

    Raises:
        DataError: not found and not fetchable; the message says what to do.
    """
    folder = find_fashion_mnist(root)
    if folder is None:
        if not fetch:
            raise DataError(
                "Fashion-MNIST not found (looked in /usr/share/datasets/fashion-mnist and "
                f"{cache_root() / 'fashion-mnist'}); run `balfeat data fetch fashion-mnist` or "
                "pass a directory"
            )
        folder = fetch_fashion_mnist()
    arrays = load_idx_folder(folder, FASHION_MNIST_FILES, cache=cache)
    return ImageData(
        arrays["train_x"],
        arrays["train_y"],
        arrays["test_x"],
        arrays["test_y"],
        list(FASHION_MNIST_CLASSES),
    )


def _norm_name(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _unpickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"missing {path}; is this torchvision's CIFAR layout (download=True)?")
    try:  # a truncated download fails inside pickle with many exception types
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        if not isinstance(batch, dict):
            raise TypeError(f"holds a {type(batch).__name__}, not a dict")
        return dict(batch)
    except Exception as err:
        raise DataError(
            f"{path} cannot be read as a CIFAR batch ({type(err).__name__}: {err}); the file is "
            "truncated or corrupt - delete the CIFAR folder and download it again"
        ) from None


def _cifar_images(batch: dict[str, Any]) -> np.ndarray:
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    except (KeyError, ValueError) as err:
        raise DataError(
            f"a CIFAR batch file holds no (N, 3072) uint8 'data' array ({type(err).__name__}: "
            f"{err}); the download is corrupt - delete the CIFAR folder and download it again"
        ) from None


def load_torchvision_layout(name: str, root: str | os.PathLike[str]) -> ImageData:
    """Load a dataset stored as torchvision stores it (no torchvision import, no download).

    Layouts: ``root/MNIST/raw/*-ubyte[.gz]``, ``root/FashionMNIST/raw/*-ubyte[.gz]``,
    ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``,
    ``root/cifar-100-python/{train,test,meta}`` (fine labels).

    Args:
        name: ``mnist``, ``fashion-mnist``, ``cifar10`` or ``cifar100`` (case, -, _ ignored).
        root: the folder passed to torchvision as ``root``.

    Returns:
        :class:`ImageData`; MNIST-like images are (N, 28, 28), CIFAR ones (N, 32, 32, 3).
    """
    key = _norm_name(name)
    root = Path(root)
    if key in ("mnist", "fashionmnist"):
        folder = root / ("MNIST" if key == "mnist" else "FashionMNIST") / "raw"
        if not folder.is_dir():
            raise DataError(f"no {folder}; expected torchvision's {name} layout under {root}")
        a = load_idx_folder(folder, FASHION_MNIST_FILES, cache=False)
        names = MNIST_CLASSES if key == "mnist" else FASHION_MNIST_CLASSES
        return ImageData(a["train_x"], a["train_y"], a["test_x"], a["test_y"], list(names))
    if key == "cifar10":
        base = root / "cifar-10-batches-py"
        train = [_unpickle(base / f"data_batch_{i}") for i in range(1, 6)]
        test = _unpickle(base / "test_batch")
        meta = _unpickle(base / "batches.meta")
        return ImageData(
            np.concatenate([_cifar_images(b) for b in train]),
            np.concatenate([np.asarray(b["labels"], np.int64) for b in train]),
            _cifar_images(test),
            np.asarray(test["labels"], np.int64),
            list(meta["label_names"]),
        )
    if key == "cifar100":
        base = root / "cifar-100-python"
        tr, te, me = (_unpickle(base / n) for n in ("train", "test", "meta"))
        return ImageData(
            _cifar_images(tr),
            np.asarray(tr["fine_labels"], np.int64),
            _cifar_images(te),
            np.asarray(te["fine_labels"], np.int64),
            list(me["fine_label_names"]),
        )
    raise DataError(f"unknown dataset {name!r}; choose mnist, fashion-mnist, cifar10 or cifar100")
