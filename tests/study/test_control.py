"""The control row: the untrained network (the trained cells' initial weights), BatchNorm
statistics adapted on the set, the same probes; each method's gain over it in the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_study import TINY_STUDY

from balfeat.engine import build
from balfeat.engine.trainer import Trainer
from balfeat.errors import ConfigError
from balfeat.study import cells
from balfeat.study.control import CONTROL, control_backbone
from balfeat.study.run import run_study
from balfeat.study.spec import cell_config, study_from_mapping


def _bn_buffers(state: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_control_backbone_is_the_trained_cells_init_with_bn_adapted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inits: list[dict[str, torch.Tensor]] = []
    real = build.method_for

    def spy(*a: Any, **k: Any) -> Any:  # the trained cell's method as the trainer built it
        method = real(*a, **k)
        inits.append({n: v.detach().clone() for n, v in method.backbone.state_dict().items()})
        return method

    monkeypatch.setattr(build, "method_for", spy)
    spec = study_from_mapping(TINY_STUDY)
    data = cells.load_study_data(spec)
    for method in ("sl", "moco_v2"):
        config = cell_config(spec, method, [])
        cd = cells.cell_data(
            spec, data, method, "exp10", tmp_path, config=config, progress=False, seed=1,
            groups=None,
        )  # fmt: skip
        idx = cells.pretrain_indices(data, cd)
        train_ds = cells.ArrayDataset(
            data.train_x[idx], data.train_y[idx], num_classes=data.num_classes
        )
        Trainer(cd.cfg, train_dataset=train_ds).fit()
        init = inits.pop()
        trained = cells.load_method(cd.cfg, data.num_classes, torch.device("cpu"))[0]
        assert not torch.equal(  # the cell did train: its weights left the init
            trained.backbone.state_dict()["conv1.weight"], init["conv1.weight"]
        )
        control, seen = control_backbone(cd, data, torch.device("cpu"), batch_size=16)
        assert seen == len(idx) > 0
        state = control.state_dict()
        assert state.keys() == init.keys()
        stats = _bn_buffers(state)
        assert stats  # resnet8 has BatchNorm
        for k in state.keys() - stats:
            assert torch.equal(state[k], init[k]), k  # the same initial weights
        changed = [k for k in stats if k.endswith("running_mean")]
        assert all(not torch.equal(state[k], init[k]) for k in changed)  # adapted on the set
        assert not control.training
        assert all(
            m.momentum == 0.1 for m in control.modules() if isinstance(m, torch.nn.BatchNorm2d)
        )


@pytest.mark.slow
def test_study_has_a_control_row_per_set_and_seed_and_gains(tmp_path: Path) -> None:
    study = {**TINY_STUDY, "seeds": [0, 1], "methods": {"sl": TINY_STUDY["methods"]["sl"]}}
    spec = study_from_mapping(study)
    out = tmp_path / "study"
    lines: list[str] = []
    rows, paths = run_study(spec, out_dir=out, progress=False, echo=lines.append)
    control = [r for r in rows if r["method"] == CONTROL]
    assert sorted((r["set"], r["seed"]) for r in control) == [
        ("balanced", 0), ("balanced", 1), ("exp10", 0), ("exp10", 1),
    ]  # fmt: skip
    assert len(rows) == 4 + 4
    for r in control:
        assert r["protocol"] == "fast" and 0.0 <= r["top1"] <= 100.0
        trained = next(
            t for t in rows
            if (t["method"], t["set"], t["seed"]) == ("sl", r["set"], r["seed"])
        )  # fmt: skip
        assert r["groups"] == trained["groups"] and r["train_counts"] == trained["train_counts"]
    res = json.loads(
        (out / "cells" / "control__exp10" / "seed1" / "fast" / "results.json").read_text()
    )
    assert res["method"] == CONTROL and res["control"]["trained"] is False
    assert res["control"]["label"] == "untrained (control)"
    assert res["control"]["architecture_of"] == "sl" and res["checkpoint"] is None
    assert res["control"]["batchnorm_images"] == sum(res["pretrain_counts"])
    assert not (out / "cells" / "control__exp10" / "seed1" / "pretrain").exists()  # no training
    # the gain over the control, paired by seed, with its interval
    gains = json.loads(paths["changes"].read_text())["control_gains"]
    assert sorted((g["method"], g["set"]) for g in gains) == [("sl", "balanced"), ("sl", "exp10")]
    by_seed = {(r["method"], r["set"], r["seed"]): r["top1"] for r in rows}
    for g in gains:
        iv = g["interval"]
        mean = sum(by_seed[("sl", g["set"], s)] - by_seed[(CONTROL, g["set"], s)] for s in (0, 1))
        assert iv["n"] == 2 and iv["mean"] == pytest.approx(mean / 2)
        assert iv["low"] <= iv["mean"] <= iv["high"]
    report = paths["report"].read_text()
    assert "untrained control" in report
    assert (out / "figures" / "gain_over_control.png").is_file()
    # a second run reads the control rows, runs nothing
    lines.clear()
    rows2, _ = run_study(spec, out_dir=out, progress=False, echo=lines.append)
    assert not any(line.startswith("control on") for line in lines)
    assert sorted(r["top1"] for r in rows2 if r["method"] == CONTROL) == sorted(
        r["top1"] for r in control
    )


def test_control_off_and_reserved_name(tmp_path: Path) -> None:
    spec = study_from_mapping({**TINY_STUDY, "control": False})
    assert spec.control is False
    with pytest.raises(ConfigError, match=r"methods\.control"):
        study_from_mapping({**TINY_STUDY, "methods": {"control": {"method": {"name": "sl"}}}})
