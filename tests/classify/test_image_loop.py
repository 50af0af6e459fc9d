"""classify.image_loop: ONE epoch loop for the reference probe (frozen) and fine-tuning."""

from __future__ import annotations

import pytest
import torch
from classify_synthetic import SneakyBackbone, TinyBackbone, TinyImages

from balfeat.classify import decoupled, probe
from balfeat.classify.image_loop import snapshot_state, train_on_images
from balfeat.classify.linear import ProbeConfig, make_classifier
from balfeat.errors import TrainingError


def test_frozen_loop_trains_only_the_classifier() -> None:
    train, val = TinyImages([20, 20], seed=1), TinyImages([8, 8], seed=2)
    bb = TinyBackbone()
    before = snapshot_state(bb)
    cfg = ProbeConfig(epochs=3, lr=1.0, batch_size=8, seed=0)
    fc = make_classifier(16, 2, cfg)
    w0 = fc.weight.detach().clone()
    res = train_on_images(bb, fc, train, val, cfg, train_backbone=False)
    after = snapshot_state(bb)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(res.classifier.weight, w0)
    assert all(p.requires_grad for p in bb.parameters())  # restored for the caller


def test_fine_tuning_loop_moves_the_backbone() -> None:
    train, val = TinyImages([20, 20], seed=1), TinyImages([8, 8], seed=2)
    bb = TinyBackbone()
    before = snapshot_state(bb)
    cfg = ProbeConfig(epochs=2, lr=0.5, batch_size=8, seed=0)
    train_on_images(bb, make_classifier(16, 2, cfg), train, val, cfg, train_backbone=True)
    after = snapshot_state(bb)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_reference_probe_and_finetune_share_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = train_on_images

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs["train_backbone"]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(probe, "train_on_images", spy)
    monkeypatch.setattr(decoupled, "train_on_images", spy)
    train, val = TinyImages([10, 10], seed=1), TinyImages([4, 4], seed=2)
    cfg = ProbeConfig(epochs=1, lr=0.5, batch_size=8)
    res = probe.probe_reference(TinyBackbone(), train, val, 2, cfg)
    decoupled.finetune(TinyBackbone(), res.classifier, train, val, cfg)
    assert calls == [False, True]


def test_frozen_loop_catches_a_backbone_that_changes() -> None:
    train, val = TinyImages([10, 10], seed=1), TinyImages([4, 4], seed=2)
    cfg = ProbeConfig(epochs=1, lr=0.5, batch_size=8)
    with pytest.raises(TrainingError, match="frozen backbone changed"):
        train_on_images(SneakyBackbone(), make_classifier(16, 2, cfg), train, val, cfg)
