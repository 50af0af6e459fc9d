"""Supervised, MoCo and KCL on tiny synthetic problems."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.methods import KCL, MoCo, Supervised
from balfeat.models.backbones import Backbone, build_backbone


class TinyBackbone(Backbone):
    """Flatten -> Linear -> BatchNorm1d -> ReLU; ``out_dim`` 16."""

    def __init__(self, in_features: int = 16) -> None:
        super().__init__()
        self.out_dim = 16
        self.fc = nn.Linear(in_features, 16)
        self.bn = nn.BatchNorm1d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.fc(x.flatten(1))))


def _data(n: int = 64, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 1, 4, 4, generator=gen) * 2
    labels = torch.arange(n) % classes
    images = centers[labels] + 0.5 * torch.randn(n, 1, 4, 4, generator=gen)
    return images, labels


def _batches(steps: int, batch: int = 16, seed: int = 0):  # type: ignore[no-untyped-def]
    images, labels = _data(seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randperm(len(labels), generator=gen)[:batch]
        x = images[idx]
        views = [x + 0.3 * torch.randn(x.shape, generator=gen) for _ in range(2)]
        yield views, labels[idx]


def _train(
    method: nn.Module, steps: int = 20, lr: float = 0.5, seed: int = 0, fresh: bool = False
) -> list[float]:
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr)
    method.train()
    losses = []
    for views, labels in (_fresh if fresh else _batches)(steps, seed=seed):
        images = views[0] if method.views == 1 else views
        out = method(images, labels)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step()  # type: ignore[operator]
        losses.append(float(out["loss"].detach()))
    return losses


def _falls(losses: list[float]) -> bool:
    return sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_supervised_loss_falls_and_keys() -> None:
    torch.manual_seed(0)
    method = Supervised(TinyBackbone(), num_classes=4)
    assert method.views == 1
    assert {k.split(".")[0] for k in method.state_dict()} == {"backbone", "head"}
    assert _falls(_train(method))


def test_supervised_frozen_backbone() -> None:
    torch.manual_seed(0)
    method = Supervised(
        TinyBackbone(), num_classes=4, freeze_backbone=True, frozen_bn=True, bias=False
    )
    before = copy.deepcopy(method.backbone.state_dict())
    method.train()
    assert not method.backbone.training and method.head.training
    losses = _train(method)
    assert _falls(losses)
    for k, v in method.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN running stats untouched
    assert method.head.bias is None


def test_supervised_frozen_backbone_keeps_bn_in_training_mode_as_the_authors() -> None:
    """BalFeat main_sl.py:76-82 freezes only the parameters and 268-272 calls model.train(): the
    backbone's BatchNorm statistics follow the re-training data (the default, frozen_bn=False)."""
    torch.manual_seed(0)
    method = Supervised(TinyBackbone(), num_classes=4, freeze_backbone=True)
    before = copy.deepcopy(method.backbone.state_dict())
    method.train()
    assert method.backbone.training and method.head.training
    assert not any(p.requires_grad for p in method.backbone.parameters())
    _train(method)
    after = method.backbone.state_dict()
    for k in ("fc.weight", "fc.bias", "bn.weight", "bn.bias"):
        assert torch.equal(after[k], before[k]), k  # no gradient reaches the backbone
    assert not torch.equal(after["bn.running_mean"], before["bn.running_mean"])
    assert int(after["bn.num_batches_tracked"]) > int(before["bn.num_batches_tracked"])
    method.eval()  # evaluation still uses the running statistics
    assert not method.backbone.training


def _moco(cls: type[MoCo] = MoCo, **kw: object) -> Any:
    torch.manual_seed(0)
    args: dict[str, object] = {"dim": 8, "K": 40, "m": 0.9, "T": 0.2, "bn_splits": 2}
    args.update(kw)
    return cls(TinyBackbone(), **args)  # type: ignore[arg-type]


def test_moco_structure_and_momentum_and_enqueue_order() -> None:
    method = _moco()
    prefixes = {k.split(".")[0] for k in method.state_dict()}
    assert prefixes == {"backbone", "head", "backbone_k", "head_k", "queue", "step"}
    assert all(not p.requires_grad for p in method.backbone_k.parameters())
    assert method.views == 2
    views, labels = next(iter(_batches(1)))
    keys_before = method.queue.keys.clone()
    out = method(views, labels)
    assert torch.equal(method.queue.keys, keys_before)  # enqueue waits for after_step
    out["loss"].backward()
    with torch.no_grad():
        for p in method.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    old_k = method.backbone_k.fc.weight.detach().clone()
    method.after_step()
    torch.testing.assert_close(
        method.backbone_k.fc.weight, 0.9 * old_k + 0.1 * method.backbone.fc.weight
    )
    assert int(method.queue.ptr) == 16 and int(method.step) == 1
    with pytest.raises(BalfeatError, match="two views"):
        method(views[0], labels)


def _fresh(steps: int, batch: int = 16, seed: int = 0):  # type: ignore[no-untyped-def]
    """New random instances every batch (instance discrimination), two noisy views each."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(batch, 1, 4, 4, generator=gen)
        labels = torch.randint(0, 4, (batch,), generator=gen)
        yield [x + 0.1 * torch.randn(x.shape, generator=gen) for _ in range(2)], labels


def _eval_loss(method: MoCo) -> float:
    """Loss on a fixed batch against a queue refilled by the current key encoder."""
    m = copy.deepcopy(method)
    m.train()
    m.queue.count.zero_()
    m.prefill(_fresh(3, seed=100))
    views, labels = next(iter(_fresh(1, batch=32, seed=101)))
    with torch.no_grad():
        return float(m(views, labels)["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("mlp", [False, True])
def test_moco_loss_falls(mlp: bool) -> None:
    method = _moco(mlp=mlp, m=0.5)
    method.prefill(_fresh(5, seed=3))
    before = _eval_loss(method)
    _train(method, steps=20, lr=0.1, fresh=True)
    assert _eval_loss(method) < 0.95 * before


@pytest.mark.parametrize("loss_type", ["v1", "v2", "sum"])
def test_kcl_loss_falls_and_label_queue(loss_type: str) -> None:
    method = _moco(KCL, loss_type=loss_type, posk=3)
    assert isinstance(method, KCL)
    batches = list(_batches(5, seed=3))
    used = method.prefill(iter(batches))
    assert used == 3 and method.queue.full  # 40 keys need ceil(40 / 16) batches
    # label queue: slot i holds the label of the i-th enqueued key (wrapping at 40)
    labels_in = torch.cat([lab for _, lab in batches[:3]])
    expected = labels_in[-40:].roll(48 % 40)
    assert method.queue.labels.tolist() == expected.tolist()
    views, labels = batches[0]
    assert float(method(views, labels)["positives"]) == 3.0
    assert _falls(_train(method, steps=25))


def test_kcl_resume_is_exact() -> None:
    method = _moco(KCL, posk=2)
    method.prefill(_batches(3, seed=5))
    _train(method, steps=3)
    clone = _moco(KCL, posk=2)
    clone.load_state_dict(method.state_dict())
    views, labels = next(iter(_batches(1, seed=9)))
    a = method(views, labels)["loss"]
    b = clone(views, labels)["loss"]
    torch.testing.assert_close(a, b)


def test_kcl_bad_arguments() -> None:
    with pytest.raises(BalfeatError, match="loss_type"):
        _moco(KCL, loss_type="v9")
    with pytest.raises(BalfeatError, match="selection"):
        _moco(KCL, selection="best")
    with pytest.raises(BalfeatError, match=r"MoCo argument m must be >= 0 and <= 1, got 1.5"):
        _moco(m=1.5)


def test_moco_with_resnet20_one_step() -> None:
    torch.manual_seed(0)
    method = KCL(build_backbone("resnet20", in_channels=1), dim=8, K=32, bn_splits=4)
    images = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)]
    out = method(images, torch.arange(8) % 2)
    out["loss"].backward()
    method.after_step()
    assert torch.isfinite(out["loss"]) and int(method.queue.ptr) == 8
    assert method.queue.labels[:8].tolist() == (torch.arange(8) % 2).tolist()


def test_prefill_moves_both_encoders_bn_statistics_as_the_reference() -> None:
    """BalFeat's init_key_queue runs the whole model (train mode, update_key=False): the query
    encoder's BatchNorm running statistics move too, its weights do not."""
    method = _moco(KCL, posk=2)
    method.train()
    bn_q = method.backbone.bn  # the stand-in backbone's BatchNorm1d
    before = bn_q.running_mean.clone()
    weights = [p.detach().clone() for p in method.backbone.parameters()]
    method.prefill(_batches(3, seed=5))
    assert not torch.equal(bn_q.running_mean, before)
    for w, p in zip(weights, method.backbone.parameters(), strict=True):
        assert torch.equal(w, p)
