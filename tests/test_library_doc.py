"""``docs/library.md`` runs as written: in each section, its ``balfeat`` shell lines (through
``balfeat.cli.main.main``) and its Python blocks, in a fresh folder; the loaded backbones give the
same features as balfeat's own. Sections that need an optional extra are skipped without it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from balfeat.cli.main import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def sections() -> dict[str, list[tuple[str, str]]]:
    """``{"## title": [(language, code), ...]}`` in the order of the document."""
    out: dict[str, list[tuple[str, str]]] = {}
    for part in re.split(r"^(?=## )", DOC.read_text(), flags=re.M)[1:]:
        title = part.splitlines()[0]
        out[title] = [(m.group(1), m.group(2)) for m in FENCE.finditer(part)]
    return out


def run_section(title: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the section's blocks in ``folder``; returns the namespace of its Python blocks."""
    monkeypatch.chdir(folder)
    namespace: dict[str, Any] = {}
    blocks = sections()[title]
    assert blocks, f"{title}: no code block"
    for lang, code in blocks:
        if lang == "python":
            exec(compile(code, f"{DOC.name} {title}", "exec"), namespace)
            continue
        for line in code.splitlines():
            if line.startswith("balfeat "):
                assert main(shlex.split(line)[1:]) == 0, line
    return namespace


def own_backbone(run: Path, arch: str) -> torch.nn.Module:
    """balfeat's backbone with the weights of the run's newest checkpoint."""
    from balfeat.models.backbones import build_backbone

    model = torch.load(run / "last.pth", weights_only=False)["model"]
    bb = build_backbone(arch, small_images=False, in_channels=3)
    bb.load_state_dict({k[9:]: v for k, v in model.items() if k.startswith("backbone.")})
    return bb.eval()


def test_the_doc_has_the_sections_this_test_runs() -> None:
    names = set(sections())
    titles = ("## A learned backbone in torchvision", "## timm backbones", "## Lightning")
    for title in (*titles, "## Experiment tracking"):
        assert title in names


@pytest.mark.slow
def test_torchvision_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = run_section("## A learned backbone in torchvision", tmp_path, monkeypatch)
    assert ns["features"].shape == (2, 512)
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(ns["net"](x), own_backbone(tmp_path / "run-resnet18", "resnet18")(x))


@pytest.mark.slow
def test_timm_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("timm")
    ns = run_section("## timm backbones", tmp_path, monkeypatch)
    assert ns["features"].shape == (2, ns["net"].num_features)
    x = torch.randn(3, 3, 32, 32)
    own = own_backbone(tmp_path / "run-timm", "timm/test_resnet")
    assert torch.equal(ns["net"](x), own(x))


@pytest.mark.slow
def test_lightning_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lightning.pytorch")
    ns = run_section("## Lightning", tmp_path, monkeypatch)
    assert ns["trainer"].global_step == 2
    assert int(ns["module"].method.step) == 2  # after_step ran after each step


@pytest.mark.slow
def test_tracking_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    run_section("## Experiment tracking", tmp_path, monkeypatch)
    records = [json.loads(line) for line in (tmp_path / "run-tracked" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records if "knn_top1" in r] == [1, 2]
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run-tracked" / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "monitor/knn_top1"} <= set(acc.Tags()["scalars"])
