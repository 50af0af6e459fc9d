"""A tiny image folder of PNG files with split lists in the reference format (tests only).

Images come from the embedded Fashion-MNIST when it is installed, else from synthetic class
patterns; either way they are written as 1-channel PNG files under ``train/`` and ``val/`` in the
ImageFolder layout. The lists follow ``../shared/reference-splits/README.md``: train lists
``/c3/c3_0007.png 3`` relative to ``train/``, the test list ``val/c3/c3_0001.png 3`` relative to
the root, class sets ``/c3``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10
PER_CLASS_TRAIN = 24
PER_CLASS_TEST = 8


def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from balfeat.data import catalog

        d = catalog.load_arrays("fashion-mnist", "", option="test", root_key="root")
        return d.train_x, d.train_y, d.test_x, d.test_y
    except Exception:  # no Fashion-MNIST here: class-dependent noise patterns
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (CLASSES, 28, 28))

        def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
            y = np.repeat(np.arange(CLASSES), n)
            x = np.clip(base[y] + rng.normal(0, 40, (len(y), 28, 28)), 0, 255).astype(np.uint8)
            return x, y

        tx, ty = draw(PER_CLASS_TRAIN)
        vx, vy = draw(PER_CLASS_TEST)
        return tx, ty, vx, vy


def _write(root: Path, sub: str, x: np.ndarray, y: np.ndarray, per_class: int) -> list[list[str]]:
    """Write ``per_class`` images of each class; return each class's paths (relative to sub)."""
    paths: list[list[str]] = []
    for c in range(CLASSES):
        idx = np.flatnonzero(y == c)[:per_class]
        (root / sub / f"c{c}").mkdir(parents=True, exist_ok=True)
        mine = []
        for i, j in enumerate(idx):
            rel = f"c{c}/c{c}_{i:04d}.png"
            Image.fromarray(x[j]).save(root / sub / rel)
            mine.append(rel)
        paths.append(mine)
    return paths


def lt_counts(n_max: int, ratio: float) -> list[int]:
    """Exponential counts, class 0 the largest."""
    return [int(n_max * ratio ** (-c / (CLASSES - 1))) for c in range(CLASSES)]


def build_image_folder(root: Path) -> dict[str, Path]:
    """Write the folder and its lists under ``root``; return the list files by name.

    Lists: ``bal.txt`` (12 per class), ``lt.txt`` (24 .. 2 per class, ratio 12), ``probe.txt``
    (the other 12 per class, balanced), ``test.txt`` (8 per class),
    ``clsset.txt`` / ``clsset_comp.txt`` (classes 0-4 / 5-9).
    """
    tx, ty, vx, vy = _arrays()
    train = _write(root, "train", tx, ty, PER_CLASS_TRAIN)
    val = _write(root, "val", vx, vy, PER_CLASS_TEST)

    def lines(chosen: list[list[str]], prefix: str) -> str:
        return "".join(f"{prefix}{p} {c}\n" for c, ps in enumerate(chosen) for p in ps)

    files = {
        "bal": lines([ps[:12] for ps in train], "/"),
        "lt": lines([ps[:n] for ps, n in zip(train, lt_counts(24, 12.0), strict=True)], "/"),
        "probe": lines([ps[12:] for ps in train], "/"),
        "test": lines(val, "val/"),
        "clsset": "".join(f"/c{c}\n" for c in range(5)),
        "clsset_comp": "".join(f"/c{c}\n" for c in range(5, CLASSES)),
    }
    out: dict[str, Path] = {}
    for name, text in files.items():
        path = root / f"{name}.txt"
        path.write_text(text)
        out[name] = path
    return out
