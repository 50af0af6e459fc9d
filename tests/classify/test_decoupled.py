"""Decoupled classifiers: cRT, tau-normalisation, LWS, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from classify_synthetic import TinyBackbone, TinyImages
from torch import nn

from balfeat.classify.decoupled import DEFAULT_TAUS, crt, finetune, lws, tau_normalize, tau_sweep
from balfeat.classify.probe import ProbeConfig, train_linear_on_features
from balfeat.errors import BalfeatError


def long_tailed_features(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 6, generator=torch.Generator().manual_seed(99)) * 1.5
    counts = [200, 40, 8]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = centers[y] + torch.randn(len(y), 6, generator=gen)
    return x, y


def test_tau_normalize_hand_case() -> None:
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        fc.bias.fill_(1.0)
    one = tau_normalize(fc, 1.0, keep_bias=False)
    torch.testing.assert_close(one.weight, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert one.bias is None
    half = tau_normalize(fc, 0.5, keep_bias=True)
    torch.testing.assert_close(half.weight[0], torch.tensor([3.0, 4.0]) / 5**0.5)
    torch.testing.assert_close(half.bias, torch.ones(2))
    zero = tau_normalize(fc, 0.0)
    torch.testing.assert_close(zero.weight, fc.weight)


def test_tau_zero_is_the_plain_classifier() -> None:
    """tau = 0 must reproduce the plain classifier: same logits, same accuracy in the sweep."""
    x, y = long_tailed_features()
    xv, yv = long_tailed_features(seed=1)
    res = train_linear_on_features(x, y, xv, yv, 3, ProbeConfig(epochs=5, lr=0.5, batch_size=32))
    fc = res.classifier
    with torch.no_grad():
        fc.bias.add_(torch.tensor([2.0, -1.0, 0.5]))  # a bias that matters
        plain = fc(xv)
        torch.testing.assert_close(tau_normalize(fc, 0.0)(xv), plain)
    out = tau_sweep(fc, xv, yv, np.array([200, 40, 8]), grouping="50,10")
    zero = next(r for r in out["sweep"] if r["tau"] == 0.0)
    plain_top1 = float((plain.argmax(1) == yv).float().mean() * 100)
    assert zero["top1"] == pytest.approx(plain_top1)


def test_tau_sweep_reports_every_tau() -> None:
    x, y = long_tailed_features()
    xv, yv = long_tailed_features(seed=1)
    res = train_linear_on_features(x, y, xv, yv, 3, ProbeConfig(epochs=5, lr=0.5, batch_size=32))
    out = tau_sweep(res.classifier, xv, yv, np.array([200, 40, 8]), grouping="50,10")
    assert [r["tau"] for r in out["sweep"]] == list(DEFAULT_TAUS)
    assert len(DEFAULT_TAUS) == 11
    assert out["best_top1"] == max(r["top1"] for r in out["sweep"])
    assert all(r["few"] is not None for r in out["sweep"])


def test_crt_is_balanced_and_fresh() -> None:
    x, y = long_tailed_features()
    xv, yv = long_tailed_features(seed=1)
    cfg = ProbeConfig(epochs=5, lr=0.5, batch_size=32)
    plain = train_linear_on_features(x, y, xv, yv, 3, cfg)
    bal = crt(x, y, xv, yv, 3, cfg)
    assert bal.protocol == "crt"
    # class-balanced training predicts the rare class more often than plain training
    n_rare_plain = int((plain.val_logits.argmax(1) == 2).sum())
    n_rare_bal = int((bal.val_logits.argmax(1) == 2).sum())
    assert n_rare_bal >= n_rare_plain


def test_lws_only_learns_scales() -> None:
    x, y = long_tailed_features()
    xv, yv = long_tailed_features(seed=1)
    base = train_linear_on_features(x, y, xv, yv, 3, ProbeConfig(epochs=3, lr=0.5, batch_size=32))
    w0 = base.classifier.weight.detach().clone()
    model, res = lws(base.classifier, x, y, xv, yv, ProbeConfig(epochs=3, lr=0.5, batch_size=32))
    torch.testing.assert_close(model.fc.weight, w0)
    torch.testing.assert_close(base.classifier.weight, w0)  # input untouched
    assert not torch.allclose(model.scales, torch.ones(3))
    assert res.val_logits.shape == (len(yv), 3)


@pytest.mark.slow
def test_finetune_updates_backbone() -> None:
    train, val = TinyImages([16, 16], seed=1), TinyImages([4, 4], seed=2)
    bb = TinyBackbone()
    w0 = bb.conv.weight.detach().clone()
    fc = nn.Linear(bb.out_dim, 2)
    res = finetune(bb, fc, train, val, ProbeConfig(epochs=2, lr=0.1, batch_size=8, balanced=True))
    assert len(res.history) == 2
    assert not torch.equal(bb.conv.weight, w0)


def test_tau_normalize_refuses_a_nan_tau() -> None:
    """Before: tau=nan gave a classifier of NaN weights silently."""
    with pytest.raises(BalfeatError, match="tau must be a finite number"):
        tau_normalize(nn.Linear(4, 3), float("nan"))
