"""Studies: parsing, imbalance family, resumability (finished cells are skipped), report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from balfeat.data.imbalance import family_counts
from balfeat.data.prepare import subset_by_counts
from balfeat.engine.checkpoint import find_last_checkpoint, load_checkpoint
from balfeat.errors import ConfigError
from balfeat.study import cells as cells_mod
from balfeat.study import run as run_mod
from balfeat.study.run import run_study
from balfeat.study.spec import StudySpec, load_study, study_from_mapping

TINY_STUDY: dict[str, Any] = {
    "name": "tiny study",
    "dataset": "synthetic",
    "synthetic_size": 240,
    "image_size": 12,
    "seed": 0,
    "family": {"total": 60, "sets": {"balanced": 1, "exp10": 10}},
    "probe_per_class": 5,
    "test_max": 40,
    "grouping": "thirds",
    "base": {
        "data": {"num_classes": 3, "num_workers": 0},
        "model": {"backbone": "resnet8"},
        "optim": {"epochs": 1, "batch_size": 16, "base_lr": 0.05},
        "run": {"device": "cpu", "keep_last": 1},
    },
    "methods": {
        "sl": {"method": {"name": "sl"}, "data": {"augmentation": "none"}},
        "moco_v2": {
            "method": {"name": "moco_v2", "K": 32, "dim": 16, "bn_splits": 2},
            "data": {"augmentation": "supervised"},
        },
    },
    "probes": {"fast": {"epochs": 3, "lr": 0.5, "batch_size": 32}},
}


def test_family_counts_same_total_and_ratio() -> None:
    for ratio in (1.0, 10.0, 100.0):
        counts = family_counts(10, 4000, ratio, seed=0)
        assert len(counts) == 10
        assert 4000 - 10 < sum(counts) <= 4000
        assert max(counts) / min(counts) == pytest.approx(ratio, rel=0.15)
    # the same class is the head for every ratio
    a, b = family_counts(10, 4000, 10.0), family_counts(10, 4000, 100.0)
    assert a.index(max(a)) == b.index(max(b))


def test_subset_by_counts_picks_exact_counts() -> None:
    import numpy as np

    labels = np.repeat(np.arange(3), 10)
    idx = subset_by_counts(labels, [10, 4, 1], seed=0)
    assert np.bincount(labels[idx], minlength=3).tolist() == [10, 4, 1]
    with pytest.raises(Exception, match="class 2 has 10"):
        subset_by_counts(labels, [1, 1, 11], seed=0)


def test_study_file_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'methods'"):
        study_from_mapping({**TINY_STUDY, "methds": {}})
    with pytest.raises(ConfigError, match=r"probes\.fast\.lrr"):
        study_from_mapping({**TINY_STUDY, "probes": {"fast": {"lrr": 1}}})
    with pytest.raises(ConfigError, match=r"optim\.base_lr"):
        study_from_mapping({**TINY_STUDY, "methods": {"sl": {"optim": {"base_lr": "fast"}}}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")


@pytest.mark.slow
def test_study_runs_seeds_reports_and_resumes_per_cell_and_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = study_from_mapping({**TINY_STUDY, "seeds": [0, 1], "knn_every": 1})
    out = tmp_path / "study"
    rows, paths = run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    assert len(rows) == 8 + 4  # 2 methods x 2 sets x 2 seeds x 1 probe, + 2 sets x 2 seeds control
    assert sorted({r["seed"] for r in rows}) == [0, 1]
    for r in rows:
        assert r["top1"] is not None and 0.0 <= r["top1"] <= 100.0
        assert len(r["per_class_accuracy"]) == 3
    exp10 = next(r for r in rows if r["set"] == "exp10")
    assert max(exp10["train_counts"]) / min(exp10["train_counts"]) == pytest.approx(10, rel=0.2)
    # Groups are the same classes in every row, the balanced set included.
    assert len({json.dumps(r["groups"], sort_keys=True) for r in rows}) == 1
    assert "most imbalanced set, 'exp10'" in rows[0]["group_source"]
    # Seeds differ (they are not copies of one run).
    a = [r["top1"] for r in rows if (r["method"], r["set"]) == ("sl", "exp10")]
    assert len(a) == 2
    for key in ("csv", "markdown", "summary", "changes", "report", "html"):
        assert paths[key].is_file()
    assert (out / "figures" / "accuracy_vs_imbalance.png").is_file()
    metrics = (out / "cells" / "sl__exp10" / "seed0" / "pretrain" / "metrics.jsonl").read_text()
    assert '"knn_top1"' in metrics  # the online kNN monitor
    assert paths["knn_monitor"].is_file()
    report = paths["report"].read_text()
    assert "## Finding" in report and "paired by seed" in report and "95%" in report
    assert "data:image/png;base64," in paths["html"].read_text()
    changes = json.loads(paths["changes"].read_text())
    assert {c["method"] for c in changes["changes"]} == {"sl", "moco_v2", "control"}
    assert changes["differences"][0]["interval"]["n"] == 2
    cell = out / "cells" / "sl__exp10" / "seed1" / "fast"
    results = json.loads((cell / "results.json").read_text())
    assert results["grouping"]["kind"] == "thirds" and results["method"] == "sl"
    assert results["seed"] == 1 and results["config"]["run"]["seed"] == 1
    prov = results["provenance"]
    assert prov["torch"] and prov["torch_threads"] >= 1 and prov["seed"] == 1
    assert "low" in results["top1_bootstrap"]
    assert (cell / "per_class.csv").is_file()
    # the checkpoint's training counts name the study's set, not "a dataset given to the trainer"
    ckpt = load_checkpoint(find_last_checkpoint(out / "cells" / "sl__exp10" / "seed0" / "pretrain"))
    assert ckpt["train_counts"]["source"] == "set 'exp10' of the study"
    sl0 = next(r for r in rows if (r["method"], r["set"], r["seed"]) == ("sl", "exp10", 0))
    assert ckpt["train_counts"]["counts"] == sl0["train_counts"]

    # Second run: every (cell, seed) is done, nothing is trained again.
    calls: list[tuple[str, str, Any]] = []
    real = run_mod.run_cell

    def spy(spec_: StudySpec, data: Any, method: str, set_name: str, *a: Any, **k: Any) -> Any:
        calls.append((method, set_name, k.get("seed")))
        return real(spec_, data, method, set_name, *a, **k)

    monkeypatch.setattr(run_mod, "run_cell", spy)
    built: list[str] = []
    real_config = run_mod.cell_config

    def count_configs(spec_: StudySpec, method: str, *a: Any) -> Any:
        built.append(method)
        return real_config(spec_, method, *a)

    monkeypatch.setattr(run_mod, "cell_config", count_configs)
    monkeypatch.setattr(cells_mod, "cell_config", count_configs)
    rows2, _ = run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    assert calls == []
    assert sorted(built) == ["moco_v2", "sl"]  # each method's config is built once per run
    assert sorted(r["top1"] for r in rows2) == sorted(r["top1"] for r in rows)

    # One (cell, seed) without its results.json is run again, and only that one.
    (out / "cells" / "moco_v2__balanced" / "seed1" / "fast" / "results.json").unlink()
    built.clear()
    rows3, _ = run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    assert calls == [("moco_v2", "balanced", 1)]
    assert sorted(built) == ["moco_v2", "sl"]  # the cell that ran copied its method's config
    assert len(rows3) == 8 + 4

    # Extending the study with a seed runs only the new (cell, seed)s.
    calls.clear()
    wider = study_from_mapping({**TINY_STUDY, "seeds": [0, 1, 2], "knn_every": 1})
    rows4, _ = run_study(wider, out_dir=out, progress=False, echo=lambda s: None)
    assert sorted(calls) == sorted(
        (m, s, 2) for m in ("sl", "moco_v2") for s in ("balanced", "exp10")
    )
    assert len(rows4) == 12 + 6  # the third seed's control rows too

    # A cell written by an earlier version (a key missing from its cell.yaml) is kept and said.
    cell_yaml = out / "cells" / "sl__balanced" / "seed0" / "cell.yaml"
    saved = yaml.safe_load(cell_yaml.read_text())
    del saved["config"]["optim"]["gamma"]
    cell_yaml.write_text(yaml.safe_dump(saved))
    lines: list[str] = []
    calls.clear()
    run_study(wider, out_dir=out, progress=False, echo=lines.append)
    assert calls == []
    notes = [line for line in lines if "earlier balfeat" in line]
    assert len(notes) == 1 and "optim.gamma=" in notes[0] and "sl__balanced" in notes[0]

    # A changed method config is refused for the cells it already ran.
    changed = study_from_mapping(
        {
            **TINY_STUDY,
            "seeds": [0, 1],
            "knn_every": 1,
            "base": {**TINY_STUDY["base"], "optim": {"epochs": 2}},
        }
    )
    with pytest.raises(ConfigError, match="another pre-training configuration"):
        run_study(changed, out_dir=out, progress=False, echo=lambda s: None)


def test_output_dir_of_another_study_is_refused(tmp_path: Path) -> None:
    spec = study_from_mapping(TINY_STUDY)
    (tmp_path / "study.yaml").write_text("global: {seed: 3, dataset: synthetic}\n")
    with pytest.raises(ConfigError, match="other seed"):
        run_study(spec, out_dir=tmp_path, progress=False, echo=lambda s: None)


def test_family_too_small_for_the_classes_is_an_error_before_training(tmp_path: Path) -> None:
    from balfeat.errors import DataError

    spec = study_from_mapping({**TINY_STUDY, "family": {"total": 2, "sets": {"balanced": 1}}})
    with pytest.raises(DataError, match="without images"):
        run_study(spec, out_dir=tmp_path / "s", progress=False, echo=lambda s: None)
    assert not (tmp_path / "s" / "cells").exists()


def test_seeds_and_overrides() -> None:
    assert study_from_mapping({**TINY_STUDY, "seeds": 3}).run_seeds == [0, 1, 2]
    assert study_from_mapping({**TINY_STUDY, "seed": 4}).run_seeds == [4]
    with pytest.raises(ConfigError, match="seeds"):
        study_from_mapping({**TINY_STUDY, "seeds": [1, 1]})
    with pytest.raises(ConfigError, match="use seeds="):
        study_from_mapping(TINY_STUDY, overrides=["run.seed=1"])
    spec = study_from_mapping(TINY_STUDY, overrides=["seeds=2", "family.total=90"])
    assert spec.run_seeds == [0, 1] and spec.total == 90
    with pytest.raises(ConfigError, match=r"optim\.epochs"):
        study_from_mapping(TINY_STUDY, overrides=["optim.epochs=0"])


OWN_STUDY: dict[str, Any] = {
    **TINY_STUDY,
    # 3 epochs: BCL's classifier then predicts more than one class on the test images (with 1 it
    # predicts one class everywhere, which would make the comparison below weak).
    "base": {**TINY_STUDY["base"], "optim": {"epochs": 3, "batch_size": 16, "base_lr": 0.05}},
    "methods": {
        "sl": TINY_STUDY["methods"]["sl"],
        "bcl": {
            "method": {"name": "bcl", "dim": 16, "T": 0.1},
            "data": {"augmentation": "supervised"},
        },
    },
}


def test_method_has_classifier_reads_the_registry() -> None:
    assert cells_mod.method_has_classifier("bcl")
    assert cells_mod.method_has_classifier("paco") and cells_mod.method_has_classifier("gpaco")
    for name in ("sl", "moco_v2", "kcl", "supcon", "tsc"):
        assert not cells_mod.method_has_classifier(name)


def test_own_is_a_reserved_probe_name(tmp_path: Path) -> None:
    spec = study_from_mapping({**TINY_STUDY, "probes": {"own": {"epochs": 1}}})
    with pytest.raises(ConfigError, match="reserved"):
        run_study(spec, out_dir=tmp_path / "s", progress=False, echo=lambda s: None)


def _direct_own_accuracy(spec: StudySpec, out: Path, set_name: str) -> tuple[float, list[float]]:
    """BCL's classify on the study's test images, from the cell's checkpoint, computed here."""
    import numpy as np
    import torch

    from balfeat.data.datasets import ArrayDataset
    from balfeat.data.transforms import build_transform
    from balfeat.engine.build import build_method
    from balfeat.study.spec import cell_config

    data = cells_mod.load_study_data(spec)
    sel = cells_mod.study_test_indices(spec, len(data.test_y))
    assert len(sel) == 40
    ds = ArrayDataset(data.test_x[sel], data.test_y[sel], transform=build_transform("eval", 12, 1))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.as_tensor(data.test_y[sel])
    cfg = cell_config(spec, "bcl")
    cfg.data.channels, cfg.data.image_size = 1, 12
    method = build_method(cfg, 3)
    ckpt = out / "cells" / f"bcl__{set_name}" / "seed0" / "pretrain" / "last.pth"
    method.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
    method.eval()
    with torch.no_grad():
        pred = method.classify(x).argmax(1)
    correct = (pred == y).numpy()
    per_class = [100.0 * float(np.mean(correct[y.numpy() == c])) for c in range(3)]
    return 100.0 * float(correct.mean()), per_class


@pytest.mark.slow
def test_own_classifier_row_beside_the_probe_and_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = study_from_mapping(OWN_STUDY)
    out = tmp_path / "study"
    rows, paths = run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    own = [r for r in rows if r["protocol"] == "own"]
    # BCL has its own classifier, SL does not: one own row per BCL cell, none for SL.
    assert sorted((r["method"], r["set"]) for r in own) == [("bcl", "balanced"), ("bcl", "exp10")]
    assert len(rows) == 4 + 2 + 2  # probes, own rows, the control of each set
    for r in own:
        top1, per_class = _direct_own_accuracy(spec, out, r["set"])
        assert r["top1"] == pytest.approx(top1, abs=1e-6)
        assert r["per_class_accuracy"] == pytest.approx(per_class, abs=1e-6)
        fast = next(
            p for p in rows if (p["method"], p["set"], p["protocol"]) == ("bcl", r["set"], "fast")
        )
        # the same groups and pre-training counts as the probe row of the same cell
        assert r["groups"] == fast["groups"] and r["train_counts"] == fast["train_counts"]
        for g in ("many", "medium", "few"):
            assert r[g] is None or 0.0 <= r[g] <= 100.0
    own_json = out / "cells" / "bcl__exp10" / "seed0" / "own" / "results.json"
    fast_json = out / "cells" / "bcl__exp10" / "seed0" / "fast" / "results.json"
    own_res, fast_res = json.loads(own_json.read_text()), json.loads(fast_json.read_text())
    assert own_res["protocol"] == "own" and own_res["checkpoint"].endswith("last.pth")
    # the same test images: identical per-class test counts
    assert [c["test_count"] for c in own_res["per_class"]] == [
        c["test_count"] for c in fast_res["per_class"]
    ]
    assert (own_json.parent / "per_class.csv").is_file()
    table = paths["csv"].read_text().splitlines()
    assert sum(",own," in line for line in table) == 2
    report = paths["report"].read_text()
    assert "Protocol `own` (BCL)" in report  # the display name
    # figures per protocol: the own classifier's are drawn apart and captioned as such
    assert (out / "figures" / "accuracy_vs_imbalance_own.png").is_file()
    assert (out / "figures" / "accuracy_vs_imbalance_fast.png").is_file()
    assert "own classifiers (protocol own), not a probe" in report

    # A finished study re-run: nothing is computed again and the own rows are kept.
    calls: list[str] = []
    real_cell, real_own = run_mod.run_cell, run_mod.run_own

    def spy_cell(*a: Any, **k: Any) -> Any:
        calls.append("cell")
        return real_cell(*a, **k)

    def spy_own(*a: Any, **k: Any) -> Any:
        calls.append("own")
        return real_own(*a, **k)

    monkeypatch.setattr(run_mod, "run_cell", spy_cell)
    monkeypatch.setattr(run_mod, "run_own", spy_own)
    rows2, _ = run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    assert calls == []
    key = lambda r: (r["method"], r["set"], r["protocol"])  # noqa: E731
    assert sorted((key(r), r["top1"]) for r in rows2) == sorted((key(r), r["top1"]) for r in rows)

    # A finished cell without its own results (an older balfeat's): evaluated from the
    # checkpoint alone, without training or probing again.
    metrics = out / "cells" / "bcl__exp10" / "seed0" / "pretrain" / "metrics.jsonl"
    before = metrics.read_text()
    fast_before = fast_json.read_text()
    own_json.unlink()
    rows3, _ = run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    assert calls == ["own"]
    assert metrics.read_text() == before and fast_json.read_text() == fast_before
    assert own_json.is_file()
    assert sorted((key(r), r["top1"]) for r in rows3) == sorted((key(r), r["top1"]) for r in rows)
