"""The image-folder scan: a split read off ``root/<class>/<image>`` folders, as the reference's
folder datasets (torchvision's ``ImageFolder``) see them, when no split file is given."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from balfeat.data.splits import SplitEntry
from balfeat.errors import DataError, SplitFormatError

logger = logging.getLogger(__name__)

#: Image file endings of a folder scan (as torchvision's ImageFolder).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)


def scan_image_folder(root: str | os.PathLike[str]) -> list[SplitEntry]:
    """Entries of every image under ``root/<class>/``, as the reference's folder datasets see them.

    Classes are the sorted sub-folder names, labelled 0..C-1 in that order; images are sorted by
    name within a class; paths are ``/<class>/<file>`` (relative to ``root``, the form of the
    reference's train lists). This is what a recipe with an empty ``data.train_split`` trains on
    (e.g. the class-set runs: every ImageNet train image of the classes in ``data.class_set``).

    Hidden folders and files (``.ipynb_checkpoints/``, macOS ``._x.jpg``) are skipped. Files that
    are not images (by their ending, see :data:`IMAGE_EXTENSIONS`) and files directly under
    ``root`` are skipped with a warning that counts them. Folder names are sorted as strings, as
    torchvision's ``ImageFolder`` does: with numbered folders ``1, 2, 10`` the labels follow
    ``1, 10, 2``, which a warning points out.

    Raises:
        SplitFormatError: ``root`` is not a folder, or holds no class folder with images.
        DataError: a class folder holds no image (it would be a class without images, or shift
            the labels of the classes after it).
    """
    base = Path(root)
    if base.is_file():
        raise SplitFormatError(
            f"data root {str(base)!r} is a file; with no split file it must be a folder of class "
            "sub-folders (e.g. ImageNet train/), or pass the file as the split"
        )
    if not base.is_dir():
        raise SplitFormatError(
            f"image folder {str(base)!r} does not exist; with no split file, data.root must be a "
            "folder of class sub-folders (e.g. ImageNet train/)"
        )
    entries: list[SplitEntry] = []
    ignored: list[str] = []
    classes: list[str] = []
    for d in sorted(base.iterdir(), key=lambda d: d.name):
        if d.name.startswith("."):
            continue
        if d.is_dir():
            classes.append(d.name)
        else:
            ignored.append(d.name)
    empty: list[str] = []
    for label, cls in enumerate(classes):
        names = []
        for f in sorted((base / cls).iterdir(), key=lambda f: f.name):
            if f.name.startswith("."):
                continue
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                names.append(f.name)
            else:
                ignored.append(f"{cls}/{f.name}")
        if not names:
            empty.append(cls)
        entries.extend(SplitEntry(f"/{cls}/{n}", label) for n in names)
    if not entries:
        raise SplitFormatError(
            f"image folder {str(base)!r} holds no class sub-folder with images "
            f"({', '.join(IMAGE_EXTENSIONS)})"
        )
    if empty:
        shown = ", ".join(repr(c) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(
            f"image folder {str(base)!r}: {len(empty)} class folder(s) hold no image "
            f"({', '.join(IMAGE_EXTENSIONS)}): {shown}; each sub-folder is a class - add its "
            "images or remove the folder"
        )
    if ignored:
        logger.warning(
            "image folder %s: skipped %d file(s) that are not images or not in a class folder, "
            "e.g. %s",
            base,
            len(ignored),
            ", ".join(ignored[:3]),
        )
    if all(c.isdigit() for c in classes) and classes != sorted(classes, key=int):
        logger.warning(
            "image folder %s: the class folders are numbers, labelled in string order (%s): "
            "label 1 is folder %r; write a split file to choose other labels",
            base,
            ", ".join(classes[:4]) + (" ..." if len(classes) > 4 else ""),
            classes[1],
        )
    return entries
