"""study.summary: changes from the balanced set paired by seed, their differences between methods,
and labels that say which protocol a row comes from when a study has several."""

from __future__ import annotations

import numpy as np
import pytest

from balfeat.study.summary import headline, paired_changes

TOP1 = {  # (method, set) -> top-1 per seed 0, 1, 2
    ("sl", "balanced"): [80.0, 78.0, 79.0],
    ("sl", "exp100"): [77.0, 76.5, 75.0],
    ("moco", "balanced"): [70.0, 72.0, 71.0],
    ("moco", "exp100"): [69.5, 71.0, 70.8],
}


def _rows(protocols: tuple[str, ...] = ("fast",)) -> list[dict[str, object]]:
    rows = []
    for p in protocols:
        for (m, s), vals in TOP1.items():
            for seed, v in enumerate(vals):
                ratio = 1.0 if s == "balanced" else 100.0
                rows.append(
                    {"protocol": p, "method": m, "set": s, "seed": seed,
                     "imbalance_ratio": ratio, "top1": v}
                )  # fmt: skip
    return rows


def test_changes_are_paired_by_seed_with_a_t_interval() -> None:
    out = paired_changes(_rows())
    sl = next(c for c in out["changes"] if c["method"] == "sl")
    d = np.array(TOP1[("sl", "exp100")]) - np.array(TOP1[("sl", "balanced")])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df), textbook table
    assert sl["interval"]["mean"] == pytest.approx(d.mean())
    assert sl["interval"]["half_width"] == pytest.approx(half)
    diff = out["differences"][0]
    dd = d - (np.array(TOP1[("moco", "exp100")]) - np.array(TOP1[("moco", "balanced")]))
    assert (diff["a"], diff["b"]) == ("sl", "moco")
    assert diff["interval"]["mean"] == pytest.approx(dd.mean())
    assert "sl's change minus moco's change (balanced → exp100)" in diff["text"]


def test_rows_of_several_protocols_are_labelled_by_protocol() -> None:
    out = paired_changes(_rows(("fast", "own")))
    texts = [c["text"] for c in out["changes"]]
    assert any(t.startswith("sl [fast], balanced → exp100") for t in texts)
    assert any(t.startswith("sl [own], balanced → exp100") for t in texts)
    lines = [ln for ln in headline(out) if ln]
    assert len(set(lines)) == len(lines), "no two lines of the finding read the same"
    one = paired_changes(_rows())
    assert one["changes"][0]["text"].startswith("sl, balanced")  # one protocol: no label
