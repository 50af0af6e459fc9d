"""``balfeat.integrations.lightning``: a registered method trained by Lightning's CPU trainer.

Skipped when lightning is not installed, except the test of the hint given then."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from balfeat.engine.config import load_config, overrides_for
from balfeat.errors import ConfigError


def _cfg(name: str, out: Path, *extra: str) -> Any:
    return load_config(
        None,
        overrides_for(
            name,
            [
                f"method.name={name}", "data.dataset=synthetic", "data.synthetic_size=48",
                "data.num_classes=4", "data.image_size=16", "model.backbone=resnet8",
                "method.K=16", "method.dim=8", "optim.batch_size=8", "optim.epochs=2",
                "optim.base_lr=0.4", "run.device=cpu", f"run.output_dir={out}", *extra,
            ],
        ),
    )  # fmt: skip


def _trainer(**kw: Any) -> Any:
    pl = pytest.importorskip("lightning.pytorch")
    return pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        **kw,
    )  # fmt: skip


def test_without_lightning_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib

    import balfeat.integrations.lightning as adapter

    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "lightning", None)
    try:
        fresh = importlib.reload(adapter)
        with pytest.raises(ConfigError, match=r"pip install 'balfeat\[lightning\]'"):
            fresh.BalfeatModule(_cfg("sl", tmp_path), num_classes=4)
    finally:
        monkeypatch.undo()
        importlib.reload(adapter)


def test_kcl_trains_three_steps_with_after_step_each(tmp_path: Path) -> None:
    trainer = _trainer(max_steps=3)
    from balfeat.integrations.lightning import BalfeatModule, train_loader

    cfg = _cfg("kcl", tmp_path, "method.prefill=never")
    loader = train_loader(cfg)
    torch.manual_seed(0)
    module = BalfeatModule(cfg, num_classes=loader.dataset.num_classes)  # type: ignore[attr-defined]
    key_before = [p.detach().clone() for p in module.method.backbone_k.parameters()]
    trainer.fit(module, loader)
    assert trainer.global_step == 3
    assert int(module.method.step) == 3  # after_step ran once per optimiser step
    assert int(module.method.queue.ptr) == 3 * 8 % 16  # three batches of keys enqueued
    moved = [
        not torch.equal(a, b)
        for a, b in zip(key_before, module.method.backbone_k.parameters(), strict=True)
    ]
    assert any(moved)  # the momentum encoder followed the query encoder
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(cfg.optim.scaled_lr())
    assert "train/loss" in trainer.callback_metrics


def test_one_lightning_step_equals_one_plain_step(tmp_path: Path) -> None:
    """The same batch, weights and optimiser: Lightning's step == a hand-written step."""
    trainer = _trainer(max_steps=1)
    from balfeat.engine import build
    from balfeat.integrations.lightning import BalfeatModule

    cfg = _cfg("sl", tmp_path)
    torch.manual_seed(0)
    images, labels = torch.randn(8, 1, 16, 16), torch.arange(8) % 4
    module = BalfeatModule(cfg, num_classes=4)
    plain = BalfeatModule(cfg, num_classes=4)
    plain.load_state_dict(module.state_dict())
    start = {k: v.clone() for k, v in module.state_dict().items()}
    data = torch.utils.data.DataLoader(list(zip(images, labels, strict=True)), batch_size=8)
    trainer.fit(module, data)

    opt = build.build_optimizer(cfg, plain.method)
    loss = plain.method(images, labels)["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    for (name, a), b in zip(module.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not torch.equal(start["method.head.weight"], module.state_dict()["method.head.weight"])


def test_prefill_and_class_counts(tmp_path: Path) -> None:
    trainer = _trainer(max_steps=1)
    from balfeat.integrations.lightning import BalfeatModule, train_loader

    with pytest.raises(ConfigError, match="class_counts"):
        BalfeatModule(_cfg("paco", tmp_path), num_classes=4)
    paco = BalfeatModule(_cfg("paco", tmp_path), num_classes=4, class_counts=[8, 4, 2, 1])
    prior = paco.method.log_prior
    assert bool((prior[:-1] > prior[1:]).all())  # the counts reached the method
    cfg = _cfg("kcl", tmp_path, "method.prefill=always")
    loader = train_loader(cfg)
    module = BalfeatModule(cfg, num_classes=4)
    trainer.fit(module, loader)
    # prefilled with 16 keys (two batches), then one step enqueued 8 more: no slot is empty
    # (without the prefill, 8 of the 16 label slots would still hold -1)
    assert int(module.method.queue.ptr) == (16 + 8) % 16
    assert bool((module.method.queue.labels >= 0).all())
