"""One input policy for every public loss: labels, temperature, empty queue, label values.

Before: a label equal to C reached an index error (SL, BCL) or was accepted; ``T = inf`` was
accepted and ``T = 1e-45`` gave NaN; an empty queue raised torch's ``max()`` error; and
``supcon_loss`` allocated by the largest label value (a label of 10**9 asked for 64 GB).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from balfeat.errors import BalfeatError
from balfeat.losses import (
    kcl_loss,
    moco_loss,
    select_positives,
    supcon_loss,
    supcon_queue_loss,
    tsc_loss,
)
from balfeat.losses.bcl import bcl_loss, logit_adjusted_ce
from balfeat.losses.paco import gpaco_loss, paco_loss
from balfeat.losses.shapes import MIN_TEMPERATURE, check_label_range

B, D, K, C = 4, 8, 12, 3


def _n(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=1)


Q, KEYS, QUEUE, PROTOS = _n(B, D, seed=1), _n(B, D, seed=2), _n(K, D, seed=3), _n(C, D, seed=4)
Y = torch.tensor([0, 1, 2, 0])
QY = torch.arange(K) % C


def _losses(
    labels: torch.Tensor, t: float = 0.1, queue: torch.Tensor = QUEUE, qy: torch.Tensor = QY
) -> dict[str, Callable[[], torch.Tensor]]:
    """Every public loss called with ``labels``, temperature ``t`` and ``queue``."""
    pos = lambda: select_positives(Y, qy, 2)  # noqa: E731 (selected for valid labels)
    y2 = torch.cat([labels, labels])
    return {
        "moco": lambda: moco_loss(Q, KEYS, queue, t),
        "kcl": lambda: kcl_loss(Q, KEYS, queue, select_positives(labels, qy, 2), t),
        "supcon": lambda: supcon_loss(torch.cat([Q, KEYS]), y2, t),
        "supcon_queue": lambda: supcon_queue_loss(Q, KEYS, queue, qy, labels, t),
        "tsc": lambda: tsc_loss(Q, KEYS, queue, pos(), labels, PROTOS, temperature=t),
        "bcl": lambda: bcl_loss(torch.cat([Q, KEYS]), y2, PROTOS, t),
        "sl_logit_adjusted_ce": lambda: logit_adjusted_ce(
            torch.randn(B, C), labels, torch.zeros(C)
        ),
        "paco": lambda: paco_loss(
            Q, KEYS, labels, queue, qy, torch.randn(B, C), torch.zeros(C), temperature=t
        ),
        "gpaco": lambda: gpaco_loss(Q, KEYS, labels, torch.randn(2 * B, C), temperature=t),
    }


KNOWS_C = ["tsc", "bcl", "sl_logit_adjusted_ce", "paco", "gpaco"]


@pytest.mark.parametrize("name", KNOWS_C)
def test_a_label_equal_to_c_is_refused_where_c_is_known(name: str) -> None:
    with pytest.raises(BalfeatError, match=rf"class id {C}, out of range"):
        _losses(torch.tensor([0, 1, C, 0]))[name]()


@pytest.mark.parametrize("name", [n for n in _losses(Y) if n != "moco"])
def test_negative_labels_are_refused(name: str) -> None:
    with pytest.raises(BalfeatError, match="negative class label -1"):
        _losses(torch.tensor([0, -1, 2, 0]))[name]()


@pytest.mark.parametrize("name", [n for n in _losses(Y) if n != "moco"])
def test_non_integer_labels_are_refused(name: str) -> None:
    with pytest.raises(BalfeatError, match="integer class ids"):
        _losses(Y.float())[name]()


@pytest.mark.parametrize("t", [float("inf"), 0.0, -0.07, float("nan"), 1e-45])
@pytest.mark.parametrize("name", [n for n in _losses(Y) if n != "sl_logit_adjusted_ce"])
def test_a_temperature_not_finite_and_positive_is_refused(name: str, t: float) -> None:
    with pytest.raises(BalfeatError, match=r"temperature=.* must be a finite number >= 0\.0001"):
        _losses(Y, t)[name]()


@pytest.mark.parametrize("name", [n for n in _losses(Y) if n != "sl_logit_adjusted_ce"])
def test_the_smallest_temperature_gives_a_finite_loss_and_gradient(name: str) -> None:
    Q.requires_grad_(True)
    try:
        loss = _losses(Y, MIN_TEMPERATURE)[name]()
        (grad,) = torch.autograd.grad(loss, Q)
    finally:
        Q.requires_grad_(False)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ["moco", "kcl", "supcon_queue", "tsc"])
def test_an_empty_queue_is_refused_with_its_name(name: str) -> None:
    empty, no_labels = QUEUE[:0], QY[:0]
    with pytest.raises(BalfeatError, match=r"queue is empty \(shape \(0, 8\)\); a queue needs"):
        _losses(Y, queue=empty, qy=no_labels)[name]()


def test_paco_takes_an_empty_queue_as_none() -> None:
    a = paco_loss(Q, KEYS, Y, QUEUE[:0], QY[:0], torch.ones(B, C))
    assert torch.equal(a, paco_loss(Q, KEYS, Y, None, None, torch.ones(B, C)))


class _LargestTensor(TorchFunctionMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("offset", [10**9, 2**62])
def test_supcon_memory_does_not_grow_with_label_values(offset: int) -> None:
    feats = _n(2 * B, D, seed=5)
    small = torch.cat([Y, Y])
    with _LargestTensor() as spy:
        big = supcon_loss(feats, small * 7 + offset)
        big_queue = supcon_queue_loss(Q, KEYS, QUEUE, QY * 7 + offset, Y * 7 + offset)
    assert spy.largest <= max((2 * B) ** 2, K * D)  # O(N^2) and the queue's size
    assert torch.equal(big, supcon_loss(feats, small))
    assert torch.equal(big_queue, supcon_queue_loss(Q, KEYS, QUEUE, QY, Y))


def test_label_range_is_queued_on_the_device_without_reading_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off the CPU the check is ``torch._assert_async`` (no synchronisation), never ``.tolist``."""
    calls: list[str] = []
    labels = torch.tensor([0, 1, C, 0], device="meta")
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg="": calls.append(msg))
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: pytest.fail("read the labels"))
    check_label_range("tsc_loss", "labels", labels, C)
    assert calls == ["tsc_loss: labels holds a class id that is not in [0, 3)"]
