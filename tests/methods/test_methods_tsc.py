"""TSC: seeded targets, KCL warm-up, Hungarian re-matching every N steps, centre EMA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from method_standins import TinyBackbone, batches, falls, train, trainer_one_step

from balfeat.errors import BalfeatError
from balfeat.methods import KCL, get_method
from balfeat.methods.tsc import TSC

KW = {"dim": 8, "K": 32, "m": 0.9, "T": 0.2, "mlp": True, "bn_splits": 2, "seed": 3}


def _tsc(**kw: object) -> TSC:
    torch.manual_seed(0)
    return TSC(TinyBackbone(), 4, target_steps=50, **{**KW, **kw})  # type: ignore[arg-type]


def test_targets_are_seeded_unit_vectors() -> None:
    a, b = _tsc(), _tsc()
    assert a.targets.shape == (4, 8)
    torch.testing.assert_close(a.targets.norm(dim=1), torch.ones(4))
    assert torch.equal(a.targets, b.targets)
    assert not torch.equal(a.targets, _tsc(seed=4).targets)
    with pytest.raises(BalfeatError, match="shape"):
        TSC(TinyBackbone(), 4, targets=torch.zeros(3, 8), **KW)  # type: ignore[arg-type]


def test_warmup_is_kcl() -> None:
    tsc = _tsc(target_warmup_steps=2, posk=3)
    torch.manual_seed(0)
    kcl = KCL(TinyBackbone(), posk=3, **KW)  # type: ignore[arg-type]
    views, labels = next(batches(1))
    a, b = tsc(views, labels), kcl(views, labels)
    torch.testing.assert_close(a["loss"], b["loss"])
    assert "target_cos" in a


def test_rematch_every_n_steps_and_centres() -> None:
    tsc = _tsc(rematch_every=3, target_warmup_steps=1, target_weight=0.5)
    calls: list[int] = []
    orig = tsc.rematch

    def spy() -> None:
        calls.append(int(tsc.step))
        orig()

    tsc.rematch = spy  # type: ignore[method-assign]
    losses = train(tsc, steps=30)
    assert calls == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
    assert falls(losses)
    assert sorted(tsc.assignment.tolist()) == [0, 1, 2, 3]  # a permutation
    torch.testing.assert_close(tsc.centres.norm(dim=1), torch.ones(4))
    # centres follow the classes: each class's centre is closest to its own queries
    views, labels = next(batches(1))  # the training distribution (seed 0)
    tsc.eval()
    with torch.no_grad():
        q = tsc.encode_queries(views[0])
    assert float(((q @ tsc.centres.t()).argmax(1) == labels).float().mean()) > 0.5


def test_tsc_registry_and_one_trainer_step(tmp_path: Path) -> None:
    entry = get_method("tsc")
    # the authors start from random keys labelled -1 (moco/builder.py:224-225), no prefill
    assert entry.views == 2 and not entry.prefill_by_default
    trainer = trainer_one_step("tsc", tmp_path, ("method.target_weight=0.3",))
    m = trainer.method
    assert m.target_weight == 0.3 and m.targets.shape == (4, 8)
    assert bool((m.queue.labels == -1).any())


def test_tsc_targets_file_loads_the_authors_npy_layout(tmp_path: Path) -> None:
    """method.targets_file: a (C, dim) .npy as the authors' optimal_1000_128_analytical.npy
    (moco/builder.py:192 loads it with np.load), used as stored."""
    import numpy as np

    rows = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    np.save(tmp_path / "targets.npy", rows)
    m = TSC(TinyBackbone(), 4, targets_file=str(tmp_path / "targets.npy"), **KW)  # type: ignore[arg-type]
    assert torch.equal(m.targets, torch.from_numpy(rows))
    np.save(tmp_path / "wrong.npy", rows[:3])
    with pytest.raises(BalfeatError, match=r"\(4, 8\).*targets_file"):
        TSC(TinyBackbone(), 4, targets_file=str(tmp_path / "wrong.npy"), **KW)  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match="does not exist"):
        TSC(TinyBackbone(), 4, targets_file=str(tmp_path / "none.npy"), **KW)  # type: ignore[arg-type]
    trainer = trainer_one_step(
        "tsc", tmp_path / "run", (f"method.targets_file={tmp_path / 'targets.npy'}",)
    )
    assert torch.equal(trainer.method.targets, torch.from_numpy(rows))


def test_tsc_resume_is_exact() -> None:
    """Targets, centres, assignment and step are state: a clone loaded from a state dict
    continues identically (including the re-matching steps)."""
    a = _tsc(rematch_every=2, target_warmup_steps=1)
    train(a, steps=4)
    torch.manual_seed(1)  # a different initialisation, overwritten by the state dict
    b = TSC(TinyBackbone(), 4, target_steps=5, rematch_every=2, target_warmup_steps=1, **KW)  # type: ignore[arg-type]
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.targets, b.targets) and torch.equal(a.assignment, b.assignment)
    la, lb = train(a, steps=3, seed=8), train(b, steps=3, seed=8)
    assert la == lb
    assert torch.equal(a.centres, b.centres) and torch.equal(a.assignment, b.assignment)


def test_rematching_defaults_to_every_step_as_the_authors() -> None:
    """TSC's authors re-match every step; scipy's solver makes that the default (was 100)."""
    from balfeat.methods.tsc import TSCParams

    assert TSCParams().rematch_every == 1
    tsc = TSC(TinyBackbone(), 4, target_steps=20, **KW)  # type: ignore[arg-type]
    assert tsc.rematch_every == 1
    calls: list[int] = []
    orig = tsc.rematch
    tsc.rematch = lambda: (calls.append(int(tsc.step)), orig())[1]  # type: ignore[method-assign]
    train(tsc, steps=3)
    assert calls == [0, 1, 2]
