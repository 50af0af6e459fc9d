"""A study's probes are typed ProbeSettings: the name is a label, the fields decide the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_study import TINY_STUDY

from balfeat.classify.job import ProbeSettings
from balfeat.errors import ConfigError
from balfeat.study.run import run_study
from balfeat.study.spec import study_from_mapping


def _one_cell(probes: dict[str, Any]) -> dict[str, Any]:
    return {
        **TINY_STUDY,
        "family": {"total": 60, "sets": {"exp10": 10}},
        "methods": {"sl": TINY_STUDY["methods"]["sl"]},
        "probes": probes,
    }


def _results(out: Path, label: str) -> dict[str, Any]:
    return json.loads((out / "cells" / "sl__exp10" / "seed0" / label / "results.json").read_text())


def test_probes_are_typed_with_the_study_defaults() -> None:
    spec = study_from_mapping(_one_cell({"fast": {"lr": 0.5}, "ref": {"protocol": "reference"}}))
    assert spec.probes["fast"] == ProbeSettings(lr=0.5, passes=0)
    assert spec.probes["ref"].protocol == "reference" and spec.probes["ref"].passes == 0
    with pytest.raises(ConfigError, match=r"probes\.fast\.passes=2: a study's probe images"):
        study_from_mapping(_one_cell({"fast": {"passes": 2}}))
    with pytest.raises(ConfigError, match=r"probes\.x\.protocol.*one of 'fast', 'reference'"):
        study_from_mapping(_one_cell({"x": {"protocol": "slow"}}))


@pytest.mark.slow
def test_renaming_a_probe_changes_nothing_but_its_label(tmp_path: Path) -> None:
    probe = {"epochs": 3, "lr": 0.5, "batch_size": 32}
    runs = {}
    for label in ("fast", "reference"):  # 'reference' is only a name: it runs the fast protocol
        out = tmp_path / label
        run_study(study_from_mapping(_one_cell({label: probe})), out_dir=out, progress=False,
                  echo=lambda s: None)  # fmt: skip
        runs[label] = _results(out, label)
    fast, renamed = runs["fast"], runs["reference"]
    assert renamed["probe"]["protocol"] == "fast" == fast["probe"]["protocol"]
    assert renamed["probe"] == fast["probe"]
    assert renamed["top1"] == fast["top1"]
    assert renamed["per_class"] == fast["per_class"]
    assert (fast["protocol"], renamed["protocol"]) == ("fast", "reference")  # the label
