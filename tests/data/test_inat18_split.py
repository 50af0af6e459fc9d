"""The published iNaturalist 2018 val list reads with balfeat's split reader."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from balfeat.data.splits import read_split

CANDIDATES = [
    Path(__file__).resolve().parents[2] / ".." / "shared" / "reference-splits",
    Path("/work/shared/reference-splits"),
]


def _val_list() -> Path:
    for folder in CANDIDATES:
        if (folder / "iNaturalist18_val.txt").is_file():
            return folder / "iNaturalist18_val.txt"
    pytest.skip("iNaturalist18_val.txt (../shared/reference-splits) is not present")


def test_inat18_val_list() -> None:
    entries = read_split(_val_list(), num_classes=8142)
    assert len(entries) == 24426
    counts = Counter(e.label for e in entries)
    assert len(counts) == 8142 and set(counts.values()) == {3}  # 3 val images per class
    # path = train_val2018/<supercategory>/<class id>/<hash>.jpg, label = the class id
    assert all(e.path.startswith("train_val2018/") for e in entries)
    assert all(e.path.split("/")[2] == str(e.label) for e in entries)
