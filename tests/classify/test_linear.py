"""classify.linear: best-epoch bookkeeping as main_lincls.py, the non-finite guard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from balfeat.classify.linear import BestEpoch, ProbeConfig, check_finite, train_linear_on_features
from balfeat.errors import BalfeatError, TrainingError


def test_best_epoch_keeps_the_first_maximum_and_copies_state() -> None:
    best = BestEpoch()
    w = torch.zeros(2)
    assert best.update(1, 50.0, torch.ones(3, 2), {"fc": {"w": w}})
    w += 1  # the kept state is a copy, not a view of the live weights
    assert not best.update(2, 50.0, torch.zeros(3, 2), {"fc": {"w": w}})  # a tie: first wins
    assert best.epoch == 1 and best.state["fc"]["w"].tolist() == [0.0, 0.0]
    assert best.update(3, 60.0, torch.zeros(3, 2), {"fc": {"w": w}})
    assert best.epoch == 3 and best.top1 == 60.0 and best.state["fc"]["w"].tolist() == [1.0, 1.0]


def test_check_finite_names_the_protocol_and_epoch() -> None:
    check_finite({"loss": 1.0, "lr": 0.1}, "fast probe", 0, "hint")
    with pytest.raises(TrainingError, match=r"fast probe: non-finite loss at epoch 3 .*hint"):
        check_finite({"loss": float("nan"), "lr": 0.1}, "fast probe", 2, "hint")


def test_nan_features_stop_the_probe_with_a_clear_error() -> None:
    x = torch.randn(20, 4)
    x[3, 1] = float("nan")
    y = torch.arange(20) % 2
    # Refused before the first epoch (it used to stop there with "non-finite loss at epoch 1").
    with pytest.raises(TrainingError, match=r"train_features \(20, 4\) contain NaN or inf"):
        train_linear_on_features(x, y, x[:4], y[:4], 2, ProbeConfig(epochs=2, lr=1.0))


def _probe(xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, c: int = 3):
    return train_linear_on_features(xt, yt, xv, yv, c, ProbeConfig(epochs=1))


_X, _Y = torch.randn(6, 4), torch.arange(6) % 3


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((_X, _Y, torch.randn(3, 4), torch.arange(2)), "3 validation features but 2 val_labels"),
        ((_X, _Y, torch.randn(3, 5), torch.arange(3)), "different dims"),
        ((_X, _Y, torch.randn(3, 4), torch.arange(3) + 1), r"val_labels must lie in \[0, 3\)"),
        ((_X, _Y[:, None], torch.randn(3, 4), torch.arange(3)), r"1-D tensor .* \(6, 1\)"),
        ((_X, _Y.float() + 0.5, torch.randn(3, 4), torch.arange(3)), "torch.float32"),
        ((_X[:, 0], _Y, torch.randn(3, 4), torch.arange(3)), r"got \(6,\) and \(3, 4\)"),
        ((_X, _Y, torch.randn(0, 4), torch.arange(0)), "no validation samples"),
        ((_X, _Y, torch.randn(3, 4) * float("inf"), torch.arange(3)), "val_features"),
    ],
)
def test_bad_probe_inputs_are_named(args: tuple[torch.Tensor, ...], match: str) -> None:
    """Before: torch errors inside the loop, an empty-list torch.cat, float labels truncated,
    out-of-range validation labels scored as wrong (0 %), inf validation features scored."""
    with pytest.raises(BalfeatError, match=match):
        _probe(*args)


def test_probe_loss_ldam_and_deferred_reweighting() -> None:
    """probe.loss ldam / probe.reweight class_balanced: the loss of the fast probe equals
    ldam_loss with margins and weights from the training counts, the weights from
    reweight_from_epoch on."""
    from balfeat.classify.linear import probe_loss
    from balfeat.losses.ldam import class_balanced_weights, ldam_loss, ldam_margins

    labels = torch.tensor([0] * 6 + [1] * 3 + [2])
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 2])
    cfg = ProbeConfig(loss="ldam", reweight="class_balanced", reweight_from_epoch=2)
    fn = probe_loss(cfg, labels, 3)
    m = ldam_margins([6, 3, 1], 0.5)
    w = class_balanced_weights([6, 3, 1], 0.9999)
    assert float(fn(logits, y, 1)) == pytest.approx(float(ldam_loss(logits, y, m, 30.0)))
    assert float(fn(logits, y, 2)) == pytest.approx(float(ldam_loss(logits, y, m, 30.0, w)))
    ce = probe_loss(ProbeConfig(), labels, 3)
    assert float(ce(logits, y, 5)) == pytest.approx(float(F.cross_entropy(logits, y)))
    assert float(fn(logits, y, 1)) != pytest.approx(float(ce(logits, y, 1)))
