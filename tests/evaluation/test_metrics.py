"""Metrics against hand-computed cases."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from balfeat.errors import BalfeatError
from balfeat.evaluation.metrics import (
    ShotGrouping,
    balancedness,
    evaluate,
    parse_grouping,
    per_class_accuracy,
    shot_accuracy,
    shot_groups,
    topk_accuracy,
    write_results,
)


def one_hot_logits(preds: list[int], c: int) -> np.ndarray:
    out = np.zeros((len(preds), c), dtype=np.float32)
    out[np.arange(len(preds)), preds] = 1.0
    return out


def test_topk_hand_case() -> None:
    logits = np.array(
        [
            [0.9, 0.05, 0.03, 0.02],  # top1 0, top2 {0,1}
            [0.1, 0.2, 0.6, 0.1],  # top1 2, top2 {2,1}
            [0.4, 0.3, 0.2, 0.1],  # top1 0, top2 {0,1}
        ]
    )
    labels = np.array([0, 1, 3])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(100 / 3)
    assert acc[2] == pytest.approx(200 / 3)
    assert acc[5] == pytest.approx(100.0)  # k > C: everything counts


def test_per_class_accuracy_with_missing_class() -> None:
    preds = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([0, 1, 1, 2, 2, 0])
    acc, counts = per_class_accuracy(preds, labels, num_classes=4)
    np.testing.assert_array_equal(counts, [2, 2, 2, 0])
    np.testing.assert_allclose(acc[:3], [50.0, 50.0, 100.0])
    assert math.isnan(acc[3])


def test_per_class_rejects_out_of_range_labels() -> None:
    with pytest.raises(BalfeatError, match="labels must lie"):
        per_class_accuracy(np.array([0, 1]), np.array([0, 5]), num_classes=3)


def test_shot_groups_thresholds() -> None:
    counts = np.array([500, 101, 100, 20, 19, 1])
    np.testing.assert_array_equal(shot_groups(counts), [0, 0, 1, 1, 2, 2])
    # Reference convention: 20 images is few-shot.
    np.testing.assert_array_equal(shot_groups(counts, "reference"), [0, 0, 1, 2, 2, 2])
    np.testing.assert_array_equal(shot_groups(counts, "50,5"), [0, 0, 0, 1, 1, 2])


def test_shot_groups_thirds_by_rank() -> None:
    counts = np.array([10, 60, 30, 50, 20, 40])
    # ranks by count desc: 60(1), 50(3), 40(5), 30(2), 20(4), 10(0)
    ids = shot_groups(counts, "thirds")
    np.testing.assert_array_equal(ids, [2, 0, 1, 0, 2, 1])


def test_parse_grouping_errors() -> None:
    with pytest.raises(BalfeatError, match="cannot parse"):
        parse_grouping("lots")
    with pytest.raises(BalfeatError, match="overlap"):
        ShotGrouping(many_above=10, few_below=50)


def test_shot_accuracy_empty_group_is_none() -> None:
    counts = np.array([200, 150, 50, 40])  # no few-shot classes
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    preds = np.array([0, 0, 1, 0, 2, 0, 0, 0])
    out = shot_accuracy(preds, labels, counts)
    assert out["many"] == pytest.approx((100 + 50) / 2)
    assert out["medium"] == pytest.approx((50 + 0) / 2)
    assert out["few"] is None
    assert out["groups"]["few"]["num_classes"] == 0
    assert out["groups"]["many"]["classes"] == [0, 1]


def test_balancedness_hand_case() -> None:
    counts = np.array([math.e**3, math.e**2, math.e**1])  # log counts 3, 2, 1
    acc = np.array([90.0, 70.0, 50.0])  # slope 20 per log-unit, perfectly correlated
    out = balancedness(acc, counts, [90.0, 70.0, None])
    assert out["slope"] == pytest.approx(20.0)
    assert out["pearson"] == pytest.approx(1.0)
    assert out["group_std"] == pytest.approx(10.0)  # std of [90, 70]


def test_balancedness_degenerate() -> None:
    out = balancedness(np.array([80.0, 80.0]), np.array([10, 10]), [80.0, None, None])
    assert out == {"group_std": None, "slope": None, "pearson": None}
    out = balancedness(np.array([80.0, 80.0]), np.array([10, 100]), None)
    assert out["slope"] == pytest.approx(0.0)
    assert out["pearson"] is None  # accuracy does not vary


def test_evaluate_and_write_results(tmp_path) -> None:  # type: ignore[no-untyped-def]
    counts = np.array([300, 50, 5])
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = one_hot_logits([0, 0, 1, 0, 0, 0], 3)
    res = evaluate(logits, labels, counts, class_names=["a", "b", "c"])
    assert res["top1"] == pytest.approx(50.0)
    assert res["top5"] == pytest.approx(100.0)
    assert (res["many"], res["medium"], res["few"]) == pytest.approx((100.0, 50.0, 0.0))
    assert res["mean_class_accuracy"] == pytest.approx(50.0)
    assert res["balancedness"]["group_std"] == pytest.approx(np.std([100.0, 50.0, 0.0]))
    assert res["per_class"][1] == {
        "class": 1,
        "name": "b",
        "train_count": 50,
        "test_count": 2,
        "accuracy": 50.0,
    }
    res["protocol"] = "fast"
    res["nan_value"] = float("nan")
    jpath, cpath = write_results(tmp_path / "out", res)
    loaded = json.loads(jpath.read_text())
    assert loaded["nan_value"] is None
    assert loaded["protocol"] == "fast"
    rows = list(csv.reader(cpath.open()))
    assert rows[0] == ["class", "name", "train_count", "test_count", "accuracy"]
    assert rows[3] == ["2", "c", "5", "2", "0.0000"]
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_evaluate_empty_groups_serialise_as_null(tmp_path) -> None:  # type: ignore[no-untyped-def]
    counts = np.array([1000, 2000])
    labels = np.array([0, 1])
    res = evaluate(one_hot_logits([0, 0], 2), labels, counts)
    assert res["medium"] is None and res["few"] is None
    jpath, _ = write_results(tmp_path, res)
    text = jpath.read_text()
    loaded = json.loads(text)
    assert loaded["few"] is None and '"few": null' in text


def test_evaluate_shape_errors() -> None:
    with pytest.raises(BalfeatError, match="len\\(train_counts\\)"):
        evaluate(np.zeros((2, 3)), np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(BalfeatError, match="class names"):
        evaluate(np.zeros((2, 2)), np.array([0, 1]), np.array([1, 2]), class_names=["x"])


_L = np.random.default_rng(0).normal(size=(6, 3))
_Y = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: topk_accuracy(_L, _Y + 0.5), "labels must be whole"),
        (lambda: topk_accuracy(_L, _Y, ks=(0,)), "every k >= 1"),
        (lambda: topk_accuracy(_L * np.nan, _Y), "NaN in 6 of 6 rows"),
        (lambda: per_class_accuracy(_L, _Y + 0.7), "labels must be whole"),
        (lambda: per_class_accuracy(np.array([0.5, 1, 2, 0, 1, 2]), _Y), "predictions"),
        (lambda: shot_accuracy(_L, _Y, np.ones((3, 1))), r"1-D \(C,\)"),
        (lambda: shot_accuracy(_L, _Y, [10, 5]), "2 classes but logits have 3"),
        (lambda: shot_accuracy(_L, _Y, [10, -5, 1]), r"-5 \(class 1\)"),
        (lambda: shot_accuracy(_L, _Y, [10.7, 5.2, 1]), "train_counts must be whole"),
        (lambda: shot_accuracy(_L, _Y, [np.nan, 5, 1]), "train_counts must be whole"),
        (lambda: balancedness([50, 60, 70], [10, 5]), "class_accuracy has 3"),
        (lambda: balancedness([50, 60, 70], [10, -5, 3]), ">= 0"),
        (lambda: evaluate(_L, _Y, [10, -5, 1]), ">= 0"),
    ],
)
def test_bad_metric_inputs_are_named(call: object, match: str) -> None:
    """Before: float labels/predictions were truncated (1.7 -> 1), negative or fractional
    counts grouped silently, k=0 gave 0 %, NaN logits ranked, and mismatched lengths ended in a
    numpy broadcast error."""
    with pytest.raises(BalfeatError, match=match):
        call()  # type: ignore[operator]


def test_whole_float_labels_and_float_counts_of_balancedness_still_accepted() -> None:
    assert topk_accuracy(_L, _Y.astype(np.float32), ks=(1,)) == topk_accuracy(_L, _Y, ks=(1,))
    assert balancedness([50.0, 60.0], [math.e, math.e**2])["slope"] == pytest.approx(10.0)


def test_evaluate_names_the_classes_without_test_samples() -> None:
    res = evaluate(_L[:4], _Y[:4] % 2, [100, 50, 5])
    assert res["classes_without_test"] == [2]
    assert res["per_class"][2]["accuracy"] is None and res["few"] is None


def test_change_slope_removes_class_difficulty() -> None:
    from balfeat.evaluation.metrics import change_slope

    counts = np.array([1000, 100, 10, 1])
    hardness = np.array([-20.0, 5.0, -3.0, 10.0])  # how hard each class is, whatever its count
    balanced = 80.0 + hardness
    imbalanced = balanced + 1.5 * np.log(counts)  # the imbalance adds 1.5 points per ln(count)
    assert change_slope(imbalanced, balanced, counts) == pytest.approx(1.5)
    assert balancedness(imbalanced, counts)["slope"] != pytest.approx(1.5)  # the raw one is off
    assert change_slope(balanced, balanced, counts) == pytest.approx(0.0)
    with pytest.raises(BalfeatError):
        change_slope(balanced, balanced[:3], counts)
