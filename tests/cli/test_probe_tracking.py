"""`balfeat probe` hands its results (top1, many/medium/few, ...) and its job to the trackers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_probe_cli import common, tiny_imagenet  # noqa: F401 (a fixture)

from balfeat.cli.main import main


@pytest.mark.slow
def test_probe_results_and_job_are_in_the_probes_event_files(
    tiny_imagenet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "probe"
    argv = ["probe", *common(tiny_imagenet), "--decoupled", "crt", "--tensorboard", "on"]
    assert main([*argv, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    for name in ("top1", "many", "medium", "few"):
        (event,) = acc.Scalars(f"probe/{name}")
        assert event.value == pytest.approx(res[name], abs=1e-4) and event.step == 0
    for name in ("group_std", "slope", "pearson"):
        (event,) = acc.Scalars(f"probe/balancedness_{name}")
        assert event.value == pytest.approx(res["balancedness"][name], abs=1e-4)
    assert acc.Scalars("probe/crt_top1")[0].value == pytest.approx(
        res["decoupled"]["crt"]["top1"], abs=1e-4
    )
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == 1.0 and hparams["dataset"].string_value == "imagenet"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    tags = [m.name.tag for m in experiment.experiment.metric_infos]
    assert {"probe/top1", "probe/many", "probe/medium", "probe/few", "probe/crt_top1"} <= set(tags)
    text = acc.Tensors("probe_job/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "protocol: fast" in text


def test_probe_wandb_without_the_package_is_one_line_before_any_work(
    tiny_imagenet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    out = tmp_path / "probe"
    assert main(["probe", *common(tiny_imagenet), "--wandb", "proj", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "probe.wandb=proj but the wandb package is not installed" in err
    assert "pip install 'balfeat[wandb]'" in err
    assert not (out / "results.json").exists()


def test_probe_scalars_take_each_decoupled_classifier_and_the_chosen_tau() -> None:
    from balfeat.classify.probe_tracking import probe_scalars

    sweep = [{"tau": 0.5, "top1": 40.0, "few": 10.0}, {"tau": 1.0, "top1": 45.0, "few": 20.0}]
    results = {
        "top1": 50.0,
        "many": 70.0,
        "few": None,
        "balancedness": {"slope": 0.25},
        "decoupled": {
            "crt": {"top1": 52.0, "many": 60.0},
            "tau": {"sweep": sweep, "best_tau": 1.0, "best_top1": 45.0},
        },
    }
    assert probe_scalars(results, "A_") == {
        "A_top1": 50.0,
        "A_many": 70.0,
        "A_balancedness_slope": 0.25,
        "A_crt_top1": 52.0,
        "A_crt_many": 60.0,
        "A_tau_top1": 45.0,
        "A_tau_few": 20.0,
    }
    unchosen = {"decoupled": {"tau": {"sweep": sweep, "best_tau": None, "best_top1": None}}}
    assert probe_scalars(unchosen) == {}
