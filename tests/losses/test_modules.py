"""The loss modules: equal to the functional losses, checked at construction, queue checkpointed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError
from balfeat.losses import (
    BCLLoss,
    KCLLoss,
    PaCoLoss,
    SupConLoss,
    SupConQueueLoss,
    TSCLoss,
    kcl_loss,
    select_positives,
    supcon_loss,
    supcon_queue_loss,
    tsc_loss,
)
from balfeat.losses.bcl import bcl_loss
from balfeat.losses.paco import paco_loss
from balfeat.losses.tsc import uniform_targets

B, D, K, C = 6, 8, 20, 4


def _raw(*shape: int, seed: int) -> torch.Tensor:
    """Features of any norm (the modules normalise them)."""
    return 3.0 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _labels(seed: int) -> torch.Tensor:
    return torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(seed))


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _raw(B, D, seed=seed), _raw(B, D, seed=seed + 100), _labels(seed)


def _fill(module: torch.nn.Module, steps: int = 4) -> None:
    """A few training-mode forwards: the queue then holds real labelled keys."""
    module.train()
    for s in range(steps):
        q, k, y = _batch(50 + s)
        extra = _extra(module, s)
        module(q, k, y, *extra)


def _extra(module: torch.nn.Module, seed: int) -> list[torch.Tensor]:
    if isinstance(module, PaCoLoss):
        return [_raw(B, C, seed=seed + 7)]
    if isinstance(module, BCLLoss):
        return [_raw(C, D, seed=seed + 9)]
    return []


def _modules() -> dict[str, torch.nn.Module]:
    targets = uniform_targets(C, D, steps=50).float()
    return {
        "kcl": KCLLoss(K, D, posk=2, num_classes=C),
        "supcon_queue": SupConQueueLoss(K, D),
        "tsc": TSCLoss(targets, K, posk=2, target_weight=0.5),
        "paco": PaCoLoss(C, K, D, class_counts=torch.tensor([8.0, 4.0, 2.0, 1.0])),
        "supcon": SupConLoss(),
        "bcl": BCLLoss(C),
    }


def test_kcl_module_equals_the_function_and_enqueues() -> None:
    loss = KCLLoss(K, D, posk=2, seed=1)
    _fill(loss, 3)
    queue, qlab = loss.queue.clone(), loss.queue_labels.clone()
    q, k, y = _batch(0)
    gen = loss._generator(y.device)
    pos = select_positives(y, qlab, 2, "random", gen)
    expected = kcl_loss(F.normalize(q, dim=1), F.normalize(k, dim=1), queue, pos, 0.07)
    assert torch.equal(loss(q, k, y), expected)
    # the batch's keys (normalised) and labels now sit after the 3 earlier batches, wrapping
    slots = (3 * B + torch.arange(B)) % K
    assert torch.equal(loss.queue[slots], F.normalize(k, dim=1))
    assert torch.equal(loss.queue_labels[slots], y)
    assert int(loss.queue_ptr) == 4 * B % K


def test_queue_wraps_and_eval_leaves_it_alone() -> None:
    loss = SupConQueueLoss(K, D)
    _fill(loss, 4)  # 24 keys into 20 slots
    assert int(loss.queue_ptr) == 4
    q, k, y = _batch(9)
    assert torch.equal(loss.queue_labels[:4], _labels(53)[2:])
    before = loss.queue.clone()
    loss.eval()
    loss(q, k, y)
    assert torch.equal(loss.queue, before) and int(loss.steps) == 4


def test_queue_modules_equal_their_functions() -> None:
    mods = _modules()
    for name in ("kcl", "supcon_queue", "tsc", "paco"):
        _fill(mods[name])
    q, k, y = _batch(1)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    for name, mod in mods.items():
        snapshot = {n: b.clone() for n, b in mod.named_buffers()}
        extra = _extra(mod, 1)
        q_grad = q.clone().requires_grad_(True)
        got = mod(q_grad, k, y, *extra)
        got.backward()  # after the queue was overwritten by this forward's keys
        want = _functional(name, mod, snapshot, qn, kn, y, extra)
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
        assert q_grad.grad is not None and torch.isfinite(q_grad.grad).all()


def _functional(
    name: str,
    mod: torch.nn.Module,
    buf: dict[str, torch.Tensor],
    qn: torch.Tensor,
    kn: torch.Tensor,
    y: torch.Tensor,
    extra: list[torch.Tensor],
) -> torch.Tensor:
    if name == "supcon":
        return supcon_loss(torch.cat([qn, kn]), torch.cat([y, y]), 0.07)
    if name == "bcl":
        return bcl_loss(torch.cat([qn, kn]), torch.cat([y, y]), F.normalize(extra[0], dim=1))
    queue, qlab = buf["queue"], buf["queue_labels"]
    if name == "supcon_queue":
        return supcon_queue_loss(qn, kn, queue, qlab, y, 0.07)
    if name == "paco":
        return paco_loss(qn, kn, y, queue, qlab, extra[0], buf["log_prior"], temperature=0.2)
    assert name in ("kcl", "tsc")
    salt = (mod.seed * 1_000_003 + int(buf["steps"]) * 7919) % (2**63 - 1)  # type: ignore[operator]
    pos = select_positives(y, qlab, 2, "random", torch.Generator().manual_seed(salt))
    if name == "kcl":
        return kcl_loss(qn, kn, queue, pos, 0.07)
    targets = buf["targets"][buf["assignment"]]
    return tsc_loss(qn, kn, queue, pos, y, targets, temperature=0.07, target_weight=0.5)


@pytest.mark.parametrize("name", ["kcl", "supcon_queue", "tsc", "paco"])
def test_queue_state_round_trips_through_the_state_dict(name: str) -> None:
    a = _modules()[name]
    _fill(a, 3)
    state = {n: t.clone() for n, t in a.state_dict().items()}
    assert {"queue", "queue_labels", "queue_ptr", "steps"} <= set(state)
    b = _modules()[name]
    assert not torch.equal(b.queue, a.queue)  # type: ignore[arg-type]
    b.load_state_dict(state)
    b.train()
    for s in range(2):  # the resumed module computes and enqueues what the original does
        q, k, y = _batch(70 + s)
        assert torch.equal(a(q, k, y, *_extra(a, s)), b(q, k, y, *_extra(b, s)))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_tsc_module_match_sets_the_assignment() -> None:
    targets = uniform_targets(C, D, steps=100).float()
    loss = TSCLoss(targets, K)
    perm = torch.tensor([2, 0, 3, 1])
    loss.match(targets[perm] + 0.01)
    assert torch.equal(loss.assignment, perm)
    assert "assignment" in loss.state_dict() and "targets" in loss.state_dict()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: KCLLoss(K, D, temperature=0.0), "temperature"),
        (lambda: KCLLoss(K, D, temperature=float("nan")), "temperature"),
        (lambda: KCLLoss(0, D), "queue_size"),
        (lambda: KCLLoss(K, D, posk=K + 1), "posk"),
        (lambda: KCLLoss(K, D, loss_type="v3"), "loss_type"),
        (lambda: KCLLoss(K, D, num_classes=0), "num_classes"),
        (lambda: SupConQueueLoss(K, D, temperature=float("inf")), "temperature"),
        (lambda: TSCLoss(torch.zeros(1, D), K), "C >= 2"),
        (lambda: TSCLoss(torch.randn(C, D), K, target_weight=-1.0), "target_weight"),
        (lambda: PaCoLoss(C, K, D, gamma=0.0), "gamma"),
        (lambda: PaCoLoss(C, K, D, class_counts=torch.zeros(C)), "class_counts"),
        (lambda: SupConLoss(temperature=-0.1), "temperature"),
        (lambda: SupConLoss(base_temperature=1e-45), "base_temperature"),
        (lambda: BCLLoss(0), "num_classes"),
        (lambda: BCLLoss(C, temperature=1e-45), "temperature"),
    ],
)
def test_modules_check_their_settings_at_construction(build: object, match: str) -> None:
    with pytest.raises(BalfeatError, match=match):
        build()  # type: ignore[operator]


def test_bcl_module_refuses_prototypes_of_another_class_count() -> None:
    q, k, y = _batch(2)
    with pytest.raises(BalfeatError, match=r"prototypes must be \(4, dim\)"):
        BCLLoss(C)(q, k, y, torch.randn(C + 1, D))
