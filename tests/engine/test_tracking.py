"""Experiment tracking: metrics.jsonl, TensorBoard and W&B behind one Tracker; pretrain's kNN
monitor (run.knn_every)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_standins import TinyImages, TinySL, tiny_overrides

from balfeat.engine import tracking
from balfeat.engine.config import load_config
from balfeat.engine.metrics_log import MetricsLog
from balfeat.engine.monitor import balanced_halves, build_knn_monitor
from balfeat.engine.trainer import Trainer
from balfeat.errors import ConfigError
from balfeat.evaluation.knn import KNNMonitor, knn_monitor

#: a synthetic dataset shaped as TinyImages (1 x 8 x 8, 4 classes): the held-out images of the
#: kNN monitor come from it
SYNTHETIC = (
    "data.dataset=synthetic",
    "data.image_size=8",
    "data.channels=1",
    "data.num_classes=4",
    "data.synthetic_size=64",
)


def _trainer(out: Path, extra: tuple[str, ...] = (), epochs: int = 2) -> Trainer:
    cfg = load_config(None, [*tiny_overrides(str(out), epochs=epochs), *SYNTHETIC, *extra])
    torch.manual_seed(123)
    return Trainer(cfg, method=TinySL(), train_dataset=TinyImages(views=1))  # type: ignore[arg-type]


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _hparams(acc: Any) -> tuple[dict[str, Any], list[str]]:
    """The hyper-parameters and the metric tags of an event file's HPARAMS summaries."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    values = {
        k: v.number_value if v.WhichOneof("kind") == "number_value" else v.string_value
        for k, v in start.hparams.items()
    }
    values.update({k: v.bool_value for k, v in start.hparams.items() if v.HasField("bool_value")})
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    return values, [m.name.tag for m in experiment.metric_infos]


# ------------------------------------------------------------------ the writer interface
def test_flat_hparams_names_every_leaf_and_keeps_only_plain_values() -> None:
    tree = {"optim": {"base_lr": 0.03, "milestones": [3, 4]}, "run": {"seed": 1, "x": None}}
    assert tracking.flat_hparams(tree) == {
        "optim.base_lr": 0.03,
        "optim.milestones": "[3, 4]",
        "run.seed": 1,
        "run.x": "None",
    }
    results = {"top1": 50.0, "many": None, "few": float("nan"), "medium": 3, "ok": True}
    assert tracking.scalar_metrics(results, ("top1", "many", "few", "medium", "ok", "gone")) == {
        "top1": 50.0,
        "medium": 3.0,
    }


def test_trackers_fan_out_every_call_and_close_once(tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []

    class Recorder:
        def log_scalars(self, values: Any, step: int, epoch: Any = None, group: str = "") -> None:
            calls.append(("scalars", (dict(values), step, epoch, group)))

        def log_hparams(self, hparams: Any, metrics: Any) -> None:
            calls.append(("hparams", (dict(hparams), list(metrics))))

        def log_text(self, tag: str, text: str) -> None:
            calls.append(("text", (tag, text)))

        def close(self) -> None:
            calls.append(("close", None))

    both = tracking.Trackers([MetricsLog(tmp_path), Recorder()])
    both.log_text("config", "a: 1")
    both.log_hparams({"a": 1}, ["train/loss"])
    both.log_scalars({"loss": 2.5}, step=3, epoch=1)
    both.log_scalars({"knn_top1": 40.0}, step=3, epoch=1, group="monitor")
    both.close()
    both.close()
    assert calls == [
        ("text", ("config", "a: 1")),
        ("hparams", ({"a": 1}, ["train/loss"])),
        ("scalars", ({"loss": 2.5}, 3, 1, "train")),
        ("scalars", ({"knn_top1": 40.0}, 3, 1, "monitor")),
        ("close", None),
    ]
    assert _records(tmp_path) == [
        {"epoch": 1, "step": 3, "loss": 2.5},
        {"epoch": 1, "step": 3, "knn_top1": 40.0},
    ]


def test_tensorboard_auto_without_the_package_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    monkeypatch.setattr(tracking, "_said_no_tensorboard", False)
    with caplog.at_level(logging.WARNING, logger="balfeat.engine"):
        for _ in range(2):
            tracking.open_trackers(tmp_path, "auto").close()
        _trainer(tmp_path / "run", epochs=1).fit()
    said = [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    assert "no tensorboard package" in said[0] and "balfeat[tensorboard]" in said[0]
    assert not (tmp_path / "tensorboard").exists()
    assert not (tmp_path / "run" / "tensorboard").exists()
    with pytest.raises(ConfigError, match=r"run\.tensorboard=on .*balfeat\[tensorboard\]"):
        tracking.open_trackers(tmp_path, "on")


def test_wandb_without_the_package_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        _trainer(tmp_path / "run", ("run.wandb=balfeat-test",)).fit()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("run.wandb=balfeat-test but the wandb package is not installed")
    assert "pip install 'balfeat[wandb]'" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any step
    with pytest.raises(ConfigError, match=r"^probe\.wandb=p but .*balfeat\[wandb\]"):
        tracking.check_trackers("off", "p", where="probe")
    with pytest.raises(ConfigError, match=r"run\.wandb='team/p' is not a W&B project name.*/"):
        tracking.check_trackers("off", "team/p")
    with pytest.raises(ConfigError, match=r"too many characters"):
        tracking.check_trackers("off", "p" * 129)


# ------------------------------------------------------------------ pretrain's kNN monitor
def test_balanced_halves_are_disjoint_and_balanced() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1 + [3] * 8)
    first, second = balanced_halves(labels, per_class=3, seed=0)
    assert not set(first) & set(second)
    assert np.bincount(labels[first], minlength=4).tolist() == [3, 2, 0, 3]
    assert np.bincount(labels[second], minlength=4).tolist() == [3, 2, 0, 3]
    assert list(first) == sorted(first) and list(second) == sorted(second)


def test_knn_monitor_draws_as_the_study_always_did() -> None:
    """The study's cells and pretrain share one monitor: the draw of a cell is unchanged."""
    memory = TinyImages(n=300)
    query = TinyImages(n=250, seed=1)
    monitor = knn_monitor(memory, query, 4, every=2, seed=1000 * 3 + 4)
    kx = np.random.default_rng(1000 * 3 + 4)
    assert monitor.train_set.indices == sorted(kx.permutation(300)[:200].tolist())  # type: ignore[attr-defined]
    assert monitor.test_set.indices == sorted(kx.permutation(250)[:200].tolist())  # type: ignore[attr-defined]
    assert monitor.every == 2


def test_pretrain_knn_monitor_is_held_out_and_balanced() -> None:
    cfg = load_config(None, [*SYNTHETIC, "run.knn_every=2"])
    monitor = build_knn_monitor(cfg, num_classes=4)
    assert isinstance(monitor, KNNMonitor) and monitor.every == 2
    # each side: a draw (Subset) of a balanced subset (Subset) of the held-out pool
    mem, qry = monitor.train_set, monitor.test_set
    pool = mem.dataset.dataset  # type: ignore[attr-defined]
    assert qry.dataset.dataset is pool  # type: ignore[attr-defined]
    mem_idx = [mem.dataset.indices[i] for i in mem.indices]  # type: ignore[attr-defined]
    qry_idx = [qry.dataset.indices[i] for i in qry.indices]  # type: ignore[attr-defined]
    assert not set(mem_idx) & set(qry_idx)
    targets = np.asarray(pool.targets)
    for idx in (mem_idx, qry_idx):
        counts = np.bincount(targets[idx], minlength=4)
        assert counts.min() == counts.max() > 0
    assert build_knn_monitor(load_config(None, list(SYNTHETIC)), 4) is None
    no_split = load_config(None, ["data.dataset=imagenet", "run.knn_every=1"])
    with pytest.raises(ConfigError, match=r"run\.knn_every needs held-out images.*val_split"):
        build_knn_monitor(no_split, 4)


def test_pretrain_knn_every_logs_knn_top1(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, ("run.knn_every=2", "run.tensorboard=off"), epochs=3)
    trainer.fit()
    knn = [r for r in _records(tmp_path) if "knn_top1" in r]
    assert [r["epoch"] for r in knn] == [2, 3]  # every 2 epochs, and the last
    assert all(0.0 <= r["knn_top1"] <= 100.0 for r in knn)
    assert [r["epoch"] for r in trainer.history if "knn_top1" in r] == [2, 3]
    steps = {r["epoch"]: r["step"] for r in _records(tmp_path) if "loss" in r}
    assert [r["step"] for r in knn] == [steps[2], steps[3]]  # at the epoch's last step


# ------------------------------------------------------------------ TensorBoard read back
def test_tensorboard_events_hold_config_hparams_and_metrics(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    _trainer(tmp_path, ("run.knn_every=1", "run.tensorboard=on", "optim.base_lr=0.4")).fit()
    acc = _events(tmp_path / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "monitor/knn_top1"} <= scalars
    assert len(acc.Scalars("monitor/knn_top1")) == 2
    assert acc.Scalars("train/lr")[0].value == pytest.approx(0.4 * 16 / 256)
    hparams, metrics = _hparams(acc)
    assert hparams["optim.base_lr"] == pytest.approx(0.4)
    assert hparams["method.name"] == "moco_v2" and hparams["run.knn_every"] == 1
    assert hparams["optim.milestones"] == "[120, 160]"
    assert metrics == ["train/loss", "monitor/knn_top1"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "base_lr: 0.4" in text and "knn_every: 1" in text


# ------------------------------------------------------------------ Weights & Biases
def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline run's ``.wandb`` file: a 7-byte header, then
    LevelDB-log chunks (checksum 4, length 2, type 1: full, first, middle, last) in 32 KiB
    blocks."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, out = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return out


def test_wandb_offline_run_holds_config_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    extra = ("run.knn_every=1", "run.tensorboard=off", "run.wandb=balfeat-test")
    _trainer(tmp_path / "run", extra, epochs=1).fit()
    wandb.teardown()  # the W&B service writes the run's file behind finish(): wait for it
    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(log)
    config = {
        u.key: json.loads(u.value_json)
        for r in records
        if r.WhichOneof("record_type") == "config"
        for u in r.config.update
    }
    assert config["optim.base_lr"] == 0.8 and config["run.wandb"] == "balfeat-test"
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    metrics = _records(tmp_path / "run")
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert losses == pytest.approx([m["loss"] for m in metrics if "loss" in m])
    knn = [(h["_step"], h["monitor/knn_top1"]) for h in history if "monitor/knn_top1" in h]
    assert knn == [(metrics[-1]["step"], pytest.approx(metrics[-1]["knn_top1"]))]
    texts = [
        json.loads(u.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for u in r.summary.update
        if u.key == "config"
    ]
    assert texts and "base_lr: 0.8" in texts[0]


# ------------------------------------------------------------------ image folders, restarts
def test_pretrain_knn_monitor_on_an_image_folder_reads_its_validation_or_test_split(
    tmp_path: Path,
) -> None:
    from test_sl_retraining import _image_folder, _sl

    root = _image_folder(tmp_path / "images")  # val.txt: 2 images of each of 2 classes
    for key in ("data.val_split", "data.test_split"):
        cfg = load_config(
            None, _sl(root, tmp_path / "run", "run.knn_every=1", f"{key}={root}/val.txt")
        )
        monitor = build_knn_monitor(cfg, num_classes=2)
        assert monitor is not None
        for side in (monitor.train_set, monitor.test_set):
            labels = [int(side[i][1]) for i in range(len(side))]  # type: ignore[arg-type]
            assert sorted(labels) == [0, 1]  # one image of each class on each side
    with pytest.raises(ConfigError, match=r"run\.knn_every needs held-out images"):
        build_knn_monitor(load_config(None, _sl(root, tmp_path / "run", "run.knn_every=1")), 2)


def test_tensorboard_holds_validation_and_knn_top1_of_a_keep_best_run(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from test_sl_retraining import _image_folder, _sl

    root = _image_folder(tmp_path / "images")
    val = f"data.val_split={root}/val.txt"
    extra = (val, "run.keep_best=true", "run.knn_every=1", "run.tensorboard=on", "optim.epochs=2")
    Trainer(load_config(None, _sl(root, tmp_path / "run", *extra))).fit()
    acc = _events(tmp_path / "run" / "tensorboard")
    assert len(acc.Scalars("monitor/val_top1")) == len(acc.Scalars("monitor/knn_top1")) == 2
    assert _hparams(acc)[1] == ["train/loss", "monitor/knn_top1", "monitor/val_top1"]


def test_tensorboard_of_an_overwritten_run_shows_each_step_once(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    _trainer(tmp_path, ("run.tensorboard=on",), epochs=2).fit()
    first = [e.step for e in _events(tmp_path / "tensorboard").Scalars("train/loss")]
    _trainer(tmp_path, ("run.tensorboard=on", "run.overwrite=true"), epochs=2).fit()
    assert len(list((tmp_path / "tensorboard").glob("events.*"))) == 2  # the old file is kept
    again = [e.step for e in _events(tmp_path / "tensorboard").Scalars("train/loss")]
    assert again == first == sorted(set(first))  # the earlier run's steps are hidden
