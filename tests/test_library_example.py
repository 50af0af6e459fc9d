"""The plain-PyTorch example of the README (section "Use as a library") runs, with its step count
lowered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from balfeat.data.sources import find_fashion_mnist

DOC = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    section = DOC.read_text().split("## Use as a library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's 'Use as a library' holds exactly one python block"
    return blocks[0]


def test_the_example_is_about_25_lines_with_a_visible_step_count() -> None:
    code = _example()
    assert re.search(r"^steps = \d+", code, flags=re.M)
    statements = [ln for ln in code.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(statements) <= 40


def test_the_example_trains_kcl_for_a_few_steps() -> None:
    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not installed; run `balfeat data fetch fashion-mnist`")
    code = re.sub(r"^steps = \d+", "steps = 3", _example(), count=1, flags=re.M)
    scope: dict[str, object] = {"__name__": "library_example"}
    torch.manual_seed(0)
    exec(compile(code, str(DOC), "exec"), scope)
    criterion = scope["criterion"]
    assert int(criterion.queue_ptr) == 3 * 128  # type: ignore[attr-defined]
    assert (criterion.queue_labels[: 3 * 128] >= 0).all()  # type: ignore[attr-defined]
    assert torch.isfinite(scope["loss"])  # type: ignore[arg-type]
