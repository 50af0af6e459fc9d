"""Shared fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_SPLITS = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference-splits"


@pytest.fixture
def reference_splits() -> Path:
    """The folder of the reference split files; skips the test when it is absent."""
    if not (REFERENCE_SPLITS / "imagenet_lt8_train.txt").is_file():
        pytest.skip("../shared/reference-splits is not present")
    return REFERENCE_SPLITS.resolve()
