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
    assert "SL (supervised)'s change minus moco's change (balanced → exp100)" in diff["text"]


def test_rows_of_several_protocols_are_labelled_by_protocol() -> None:
    out = paired_changes(_rows(("fast", "own")))
    texts = [c["text"] for c in out["changes"]]
    assert any(t.startswith("SL (supervised) [fast], balanced → exp100") for t in texts)
    assert any(t.startswith("SL (supervised) [own], balanced → exp100") for t in texts)
    lines = [ln for ln in headline(out) if ln]
    assert len(set(lines)) == len(lines), "no two lines of the finding read the same"
    one = paired_changes(_rows())
    assert one["changes"][0]["text"].startswith(
        "SL (supervised), balanced"
    )  # one protocol: no label


def _pc_row(m: str, s: str, seed: int, acc: list[float], counts: list[int]) -> dict[str, object]:
    groups = {"many": acc[0], "medium": acc[1], "few": acc[2]}
    return {"protocol": "fast", "method": m, "set": s, "seed": seed, "top1": sum(acc) / 3,
            "imbalance_ratio": 1.0 if s == "balanced" else 100.0, **groups,
            "train_counts": counts, "per_class_accuracy": acc}  # fmt: skip


def test_paired_balancedness_against_a_hand_computed_case() -> None:
    from balfeat.study.summary import paired_balancedness

    lt, bal = [100, 10, 1], [37, 37, 37]
    ln = np.log(np.array(lt, dtype=float))  # 4.605, 2.303, 0
    rows = [
        # seed 0: the change is exactly 2 * ln(count) - 3; seed 1: exactly 1 * ln(count) + 0.5
        _pc_row("m", "balanced", 0, [60.0, 80.0, 90.0], bal),
        _pc_row("m", "exp100", 0, list(np.array([60.0, 80.0, 90.0]) + 2 * ln - 3), lt),
        _pc_row("m", "balanced", 1, [50.0, 70.0, 95.0], bal),
        _pc_row("m", "exp100", 1, list(np.array([50.0, 70.0, 95.0]) + ln + 0.5), lt),
    ]
    (entry,) = paired_balancedness(rows)
    assert (entry["method"], entry["set"], entry["baseline"]) == ("m", "exp100", "balanced")
    t1 = 12.706204736174705  # t(0.975, 1 df), textbook table
    # slopes 2 and 1 -> mean 1.5, sd 0.7071, half-width t * sd / sqrt(2) = t * 0.5
    assert entry["slope"]["mean"] == pytest.approx(1.5)
    assert entry["slope"]["half_width"] == pytest.approx(t1 * 0.5)
    # many (class 0) changes: 2 * 4.6052 - 3 = 6.2103 and 4.6052 + 0.5 = 5.1052
    many = [2 * ln[0] - 3, ln[0] + 0.5]
    assert entry["many"]["mean"] == pytest.approx(np.mean(many))
    assert entry["many"]["half_width"] == pytest.approx(t1 * np.std(many, ddof=1) / np.sqrt(2))
    assert entry["few"]["mean"] == pytest.approx((-3 + 0.5) / 2)
    # SDCLR's std, of the three group changes, per seed, then averaged over seeds
    stds = [np.std(2 * ln - 3), np.std(ln + 0.5)]
    assert entry["group_std"]["mean"] == pytest.approx(np.mean(stds))


def test_paired_balancedness_without_per_class_rows_has_no_slope() -> None:
    from balfeat.study.summary import paired_balancedness

    rows = [{k: v for k, v in r.items() if k != "per_class_accuracy"} for r in _rows()]
    for r in rows:
        r.update(many=r["top1"], medium=r["top1"] - 1, few=r["top1"] - 2)
    entries = paired_balancedness(rows)
    assert {e["method"] for e in entries} == {"sl", "moco"}
    assert all(e["slope"] is None and e["many"] is not None for e in entries)


def test_control_row_is_the_baseline_of_gains_and_not_a_compared_method() -> None:
    from balfeat.study.summary import findings

    rows = _rows()
    control = {"balanced": [66.0, 67.0, 65.0], "exp100": [66.5, 66.0, 66.0]}
    for s, vals in control.items():
        for seed, v in enumerate(vals):
            rows.insert(
                0,
                {
                    "protocol": "fast",
                    "method": "control",
                    "set": s,
                    "seed": seed,
                    "imbalance_ratio": 1.0 if s == "balanced" else 100.0,
                    "top1": v,
                },
            )
    out = findings(rows)
    gain = next(g for g in out["control_gains"] if (g["method"], g["set"]) == ("sl", "exp100"))
    d = np.array(TOP1[("sl", "exp100")]) - np.array(control["exp100"])
    assert gain["interval"]["mean"] == pytest.approx(d.mean())
    assert gain["interval"]["std"] == pytest.approx(d.std(ddof=1))
    assert {g["method"] for g in out["control_gains"]} == {"sl", "moco"}
    assert [(d["a"], d["b"]) for d in out["differences"]] == [("sl", "moco")]
    lines = headline(out)
    assert lines[0].startswith("Gain over the untrained control")
    assert any("SL (supervised)'s gain over the untrained control on exp100" in ln for ln in lines)


def test_headline_states_the_minimum_detectable_effect_and_seeds_needed() -> None:
    from balfeat.evaluation.statistics import minimum_detectable_effect, seeds_for_half_width

    out = paired_changes(_rows())
    lines = headline(out)
    sl = next(c for c in out["changes"] if c["method"] == "sl")
    sd = sl["interval"]["std"]
    assert sl["sizing"]["mde"] == pytest.approx(minimum_detectable_effect(sd, 3))
    assert sl["sizing"]["seeds_for_1pt"] == seeds_for_half_width(sd, 1.0)
    text = next(ln for ln in lines if ln.startswith("- SL (supervised), balanced → exp100: sd"))
    assert f"MDE {sl['sizing']['mde']:.2f} points" in text
    assert f"{sl['sizing']['seeds_for_1pt']} seeds for ±1 point" in text
    # with 3 seeds neither change (-2.83 [-5.96, +0.29]; -0.57) nor their difference is a finding
    assert all("not distinguishable" in ln for ln in lines if "95% CI" in ln)
    assert any(ln.startswith("No difference between methods") for ln in lines)
    assert not any("(findings)" in ln for ln in lines)


def test_a_difference_is_called_a_finding_only_when_its_interval_excludes_zero() -> None:
    rows = _rows()
    for r in rows:  # sl now loses 3 points +- 0.1 on every seed: its change is a finding
        if (r["method"], r["set"]) == ("sl", "exp100"):
            r["top1"] = TOP1[("sl", "balanced")][int(r["seed"])] - 3.0 + 0.1 * int(r["seed"])
    lines = headline(paired_changes(rows))
    sl = next(ln for ln in lines if ln.startswith("- SL (supervised), balanced → exp100: -2.90"))
    assert "lower, distinguishable from zero at 95%" in sl
    moco = next(ln for ln in lines if ln.startswith("- moco, balanced → exp100"))
    assert "not distinguishable from zero" in moco
    finding = next(ln for ln in lines if "(findings)" in ln)
    assert "SL (supervised) vs moco" in finding and "not a finding" in finding
