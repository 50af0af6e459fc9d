"""Linear probes: the fast protocol agrees with the reference one; the sanity check catches a
backbone that changes while frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from classify_synthetic import SneakyBackbone, TinyBackbone, TinyImages

from balfeat.classify.features import extract_features
from balfeat.classify.probe import (
    ProbeConfig,
    balanced_order,
    check_backbone_unchanged,
    make_classifier,
    probe_fast,
    probe_reference,
    probe_unseen,
    snapshot_state,
    train_linear_on_features,
)
from balfeat.errors import BalfeatError, TrainingError
from balfeat.schedules import lr_factor


def test_extract_features_shapes_and_mode() -> None:
    ds = TinyImages([5, 7])
    bb = TinyBackbone()
    bb.train()
    feats, labels = extract_features(bb, ds, batch_size=4)
    assert feats.shape == (12, 16) and feats.dtype == torch.float32
    assert labels.tolist() == ds.targets.tolist()
    assert bb.training  # mode restored
    multi, _ = extract_features(bb, ds, batch_size=4, passes=3)
    assert multi.shape == (3, 12, 16)
    # Without augmentation every pass is the same, and equals the single pass.
    torch.testing.assert_close(multi[1], feats)


def test_fast_probe_learns_and_keeps_best_epoch() -> None:
    train, val = TinyImages([30, 30, 30], seed=1), TinyImages([10, 10, 10], seed=2)
    cfg = ProbeConfig(epochs=8, lr=1.0, batch_size=16, seed=3)
    res = probe_fast(TinyBackbone(), train, val, 3, cfg)
    assert res.val_logits.shape == (30, 3)
    assert res.best_top1 == max(h["val_top1"] for h in res.history)
    assert res.history[res.best_epoch - 1]["val_top1"] == res.best_top1
    assert res.best_top1 > 80.0
    # the returned logits are those of the returned classifier on the validation features
    xv, _ = extract_features(TinyBackbone(), val)
    torch.testing.assert_close(res.classifier(xv), res.val_logits)


def test_fast_probe_is_reproducible_and_seed_dependent() -> None:
    x = torch.randn(64, 8)
    y = torch.arange(64) % 4
    cfg = ProbeConfig(epochs=3, lr=0.5, batch_size=8, seed=0)
    a = train_linear_on_features(x, y, x, y, 4, cfg)
    b = train_linear_on_features(x, y, x, y, 4, cfg)
    c = train_linear_on_features(x, y, x, y, 4, ProbeConfig(epochs=3, lr=0.5, batch_size=8, seed=1))
    torch.testing.assert_close(a.classifier.weight, b.classifier.weight)
    assert not torch.allclose(a.classifier.weight, c.classifier.weight)


def test_probe_config_schedule() -> None:
    cfg = ProbeConfig()
    assert cfg.resolved_milestones() == (60, 80)
    assert [cfg.lr_at(e) for e in (0, 59, 60, 79, 80)] == pytest.approx([30, 30, 3, 3, 0.3])
    assert ProbeConfig(epochs=10).resolved_milestones() == (6, 8)
    with pytest.raises(BalfeatError, match="schedule"):
        ProbeConfig(schedule="linear")


def test_probe_defaults_are_the_reference_main_lincls() -> None:
    """BalFeat main_lincls.py: lr 30, 100 epochs, steps at 60/80, wd 0, SGD momentum 0.9,
    batch 256, fc weights N(0, 0.01) and bias 0."""
    cfg = ProbeConfig()
    assert (cfg.lr, cfg.epochs, cfg.weight_decay, cfg.momentum, cfg.batch_size) == (
        30.0,
        100,
        0.0,
        0.9,
        256,
    )
    assert cfg.resolved_milestones() == (60, 80) and cfg.gamma == 0.1 and cfg.bias
    fc = make_classifier(512, 1000, cfg)
    assert fc.bias is not None and torch.count_nonzero(fc.bias) == 0
    assert float(fc.weight.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(fc.weight.std()) == pytest.approx(0.01, rel=0.02)


def test_probe_lr_is_the_shared_schedule() -> None:
    """The probe's lr comes from balfeat.schedules.lr_factor (set once per epoch)."""
    for sched in ("step", "cosine"):
        cfg = ProbeConfig(epochs=20, lr=2.0, schedule=sched, milestones=(5, 15))
        expect = [
            2.0 * lr_factor(e, 20, schedule=sched, milestones=(5, 15), gamma=0.1)  # type: ignore[arg-type]
            for e in range(20)
        ]
        assert [cfg.lr_at(e) for e in range(20)] == pytest.approx(expect)
    assert ProbeConfig(epochs=10, schedule="cosine", lr=1.0).lr_at(5) == pytest.approx(0.5)


def test_no_bias_option() -> None:
    x, y = torch.randn(20, 4), torch.arange(20) % 2
    res = train_linear_on_features(x, y, x, y, 2, ProbeConfig(epochs=1, bias=False))
    assert res.classifier.bias is None


def test_sanity_check_catches_changed_weight() -> None:
    bb = TinyBackbone()
    snap = snapshot_state(bb)
    check_backbone_unchanged(bb, snap)  # unchanged: no error
    with torch.no_grad():
        bb.conv.weight[0, 0, 0, 0] += 1e-3
    with pytest.raises(TrainingError, match=r"conv\.weight"):
        check_backbone_unchanged(bb, snap)


def test_reference_probe_catches_bn_in_train_mode() -> None:
    train, val = TinyImages([8, 8], seed=1), TinyImages([4, 4], seed=2)
    cfg = ProbeConfig(epochs=1, lr=1.0, batch_size=8)
    with pytest.raises(TrainingError, match="running_mean"):
        probe_reference(SneakyBackbone(), train, val, 2, cfg)
    # the well-behaved backbone passes and keeps requires_grad as it was
    bb = TinyBackbone()
    probe_reference(bb, train, val, 2, cfg)
    assert all(p.requires_grad for p in bb.parameters())


def test_reference_probe_balanced_sampling_runs() -> None:
    train, val = TinyImages([20, 4], seed=1), TinyImages([4, 4], seed=2)
    cfg = ProbeConfig(epochs=2, lr=1.0, batch_size=8, balanced=True, repeat=2)
    res = probe_reference(TinyBackbone(), train, val, 2, cfg)
    assert len(res.history) == 2 and res.val_logits.shape == (8, 2)


@pytest.mark.slow
def test_fast_and_reference_agree_at_equal_epochs() -> None:
    train = TinyImages([60, 60, 60, 60], seed=1, noise=1.2)
    val = TinyImages([50, 50, 50, 50], seed=2, noise=1.2)
    # Full batches: both protocols then take the same steps whatever their sampling order, so
    # they must agree up to float summation order.
    cfg = ProbeConfig(epochs=10, lr=2.0, batch_size=240, seed=0)
    fast = probe_fast(TinyBackbone(), train, val, 4, cfg)
    ref = probe_reference(TinyBackbone(), train, val, 4, cfg)
    assert fast.best_top1 > 50.0
    assert abs(fast.best_top1 - ref.best_top1) <= 1.0 + 1e-9, (fast.best_top1, ref.best_top1)


@pytest.mark.slow
def test_fast_and_reference_agree_on_fashion_mnist_subset() -> None:
    sources = pytest.importorskip("balfeat.data.sources")
    datasets = pytest.importorskip("balfeat.data.datasets")
    if sources.find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not available locally")
    data = sources.load_fashion_mnist(fetch=False)
    tr_idx = np.arange(0, 60000, 200)  # 300 images, all classes
    te_idx = np.arange(0, 10000, 50)  # 200 images
    train = datasets.ArrayDataset(data.train_x[tr_idx], data.train_y[tr_idx])
    test = datasets.ArrayDataset(data.test_x[te_idx], data.test_y[te_idx])
    cfg = ProbeConfig(epochs=20, lr=20.0, batch_size=300, seed=0)  # full batches, as above
    fast = probe_fast(TinyBackbone(), train, test, 10, cfg)
    ref = probe_reference(TinyBackbone(), train, test, 10, cfg)
    assert fast.best_top1 > 30.0  # well above chance (10%)
    assert abs(fast.best_top1 - ref.best_top1) <= 1.0 + 1e-9, (fast.best_top1, ref.best_top1)


def test_probe_unseen_reports_both_sets() -> None:
    train, val = TinyImages([20, 10, 6, 4], seed=1), TinyImages([5, 5, 5, 5], seed=2)
    cfg = ProbeConfig(epochs=2, lr=1.0, batch_size=8)
    out = probe_unseen(TinyBackbone(), train, val, [3, 1], cfg, grouping="thirds")
    assert out["classes_A"] == [1, 3] and out["classes_B"] == [0, 2]
    assert [r["class"] for r in out["A"]["per_class"]] == [1, 3]
    assert [r["train_count"] for r in out["B"]["per_class"]] == [20, 6]
    assert out["A"]["num_samples"] == 10 and out["B"]["num_samples"] == 10
    with pytest.raises(BalfeatError, match="non-empty"):
        probe_unseen(TinyBackbone(), train, val, [0, 1, 2, 3], cfg)


def test_progress_bars_only_when_logging(capsys: pytest.CaptureFixture[str]) -> None:
    """A bar per reference epoch and one over the fast epochs on stderr; none when quiet."""
    train, val = TinyImages([8, 8], seed=1), TinyImages([4, 4], seed=2)
    cfg = ProbeConfig(epochs=2, lr=1.0, batch_size=8)
    probe_reference(TinyBackbone(), train, val, 2, cfg)
    x, y = torch.randn(20, 4), torch.arange(20) % 2
    train_linear_on_features(x, y, x, y, 2, cfg)
    assert capsys.readouterr().err == ""
    probe_reference(TinyBackbone(), train, val, 2, cfg, log=lambda s: None)
    train_linear_on_features(x, y, x, y, 2, cfg, log=lambda s: None)
    err = capsys.readouterr().err
    assert "[reference] epoch 2/2" in err and "[fast] epochs" in err


def test_fast_balanced_order_is_the_reference_cycles() -> None:
    """BalFeat loader/sampler.py: RandomCycleIter over classes (each class once per cycle of C
    picks) and over each class's images (all used before any repeats), bal_repeat together."""
    labels = torch.tensor([0] * 30 + [1] * 6 + [2] * 3 + [3] * 1)
    idx = balanced_order(labels, 40, repeat=2, seed=0, epoch=0)
    assert idx.shape == (40,)
    picks = labels[idx].view(-1, 2)
    assert torch.all(picks == picks[:, :1])  # repeat=2: pairs from one class
    cls = picks[:, 0]
    for w in range(0, 20, 4):  # every cycle of 4 picks holds each class once
        assert sorted(cls[w : w + 4].tolist()) == [0, 1, 2, 3]
    two = idx[labels[idx] == 2][:3]  # class 2's first 3 draws: its 3 images, no repeat
    assert sorted(two.tolist()) == [36, 37, 38]
    assert not torch.equal(idx, balanced_order(labels, 40, 2, seed=0, epoch=1))
    assert torch.equal(idx, balanced_order(labels, 40, 2, seed=0, epoch=0))


def test_probe_train_augmentation_longtail_adds_the_colour_jitter() -> None:
    """probe.train_augmentation longtail: the TSC authors' ImageNet-LT probe transform
    (RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0)); supervised has no jitter."""
    from torchvision import transforms as T

    from balfeat.classify.runner import build_probe_transforms

    def jitters(t: object) -> list[T.ColorJitter]:
        found = []
        for step in getattr(t, "transforms", [t]):
            if isinstance(step, T.ColorJitter):
                found.append(step)
            elif hasattr(step, "transforms"):
                found += jitters(step)
        return found

    plain, _ = build_probe_transforms(32, 3)
    jit, _ = build_probe_transforms(32, 3, "longtail")
    assert not jitters(plain)
    (cj,) = jitters(jit)
    assert cj.brightness == (0.6, 1.4) and cj.contrast == (0.6, 1.4)
    assert cj.saturation == (0.6, 1.4) and cj.hue is None
