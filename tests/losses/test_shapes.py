"""Bad tensors given to each public loss: a BalfeatError naming the loss, argument and shapes.

Before these checks, each case below ended in a torch error deep inside the loss (``mat1 and mat2
shapes cannot be multiplied``, ``index 5 is out of bounds``), an ``AssertionError``, or worse a
number: float labels and a label queue of another length gave a loss silently.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError
from balfeat.losses.bcl import bcl_loss, bcl_total, logit_adjusted_ce
from balfeat.losses.contrastive import given_positives, kcl_loss, moco_loss, select_positives
from balfeat.losses.paco import gpaco_loss, paco_loss
from balfeat.losses.supcon import supcon_loss, supcon_queue_loss
from balfeat.losses.tsc import tsc_loss

B, D, K, C = 4, 8, 16, 3


def _n(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


torch.manual_seed(0)
Q, KEYS, QUEUE = _n(B, D), _n(B, D), _n(K, D)
Y = torch.tensor([0, 1, 2, 0])
QY = torch.arange(K) % C
POS = select_positives(Y, QY, 2)
Y2 = torch.cat([Y, Y])
FEATS = torch.cat([Q, KEYS])

CASES: dict[str, tuple[Callable[[], object], str]] = {
    "moco k batch": (
        lambda: moco_loss(Q, KEYS[:3], QUEUE),
        r"moco_loss: q \(4, 8\) and k \(3, 8\)",
    ),
    "moco q 1-D": (lambda: moco_loss(Q[0], KEYS[0], QUEUE), r"q must be a 2-D .* \(8,\)"),
    "moco k (B,1,D)": (lambda: moco_loss(Q, KEYS[:, None], QUEUE), r"k must be a 2-D"),
    "moco queue dim": (lambda: moco_loss(Q, KEYS, _n(K, D + 1)), r"queue must be .*\(K, 8\)"),
    "moco empty": (lambda: moco_loss(Q[:0], KEYS[:0], QUEUE), "empty batch"),
    "moco int q": (lambda: moco_loss(Y[:, None], Y[:, None], QUEUE), "floating-point"),
    "select float labels": (lambda: select_positives(Y.float(), QY, 2), "integer class ids"),
    "select (B,1) labels": (lambda: select_positives(Y[:, None], QY, 2), r"\(N,\).*\(4, 1\)"),
    "select label >= C": (
        lambda: select_positives(torch.tensor([0, 5]), QY, 2, num_classes=C),
        r"class id 5, out of range: .*\[0, 3\)",
    ),
    "given positions rows": (
        lambda: given_positives(torch.zeros(3, 2, dtype=torch.long), Y, QY),
        r"positions must be \(4, P\)",
    ),
    "kcl queue labels of another K": (
        lambda: kcl_loss(Q, KEYS, QUEUE, select_positives(Y, QY[:5], 2)),
        "5 queue labels but the queue holds 16 keys",
    ),
    "kcl labels of another batch": (
        lambda: kcl_loss(Q, KEYS, QUEUE, select_positives(Y[:3], QY, 2), loss_type="v2"),
        "selected for 3 labels",
    ),
    "kcl queue dim": (lambda: kcl_loss(Q, KEYS, _n(K, D + 1), POS), r"queue must be"),
    "supcon labels of one view": (lambda: supcon_loss(FEATS, Y), r"labels must have shape \(8,\)"),
    "supcon (N,1) labels": (lambda: supcon_loss(FEATS, Y2[:, None]), r"\(8, 1\)"),
    "supcon float labels": (lambda: supcon_loss(FEATS, Y2.float()), "integer class ids"),
    "supcon (N,V,D) features": (
        lambda: supcon_loss(torch.stack([Q, KEYS], 1), Y),
        r"features must be a 2-D .*\(4, 2, 8\)",
    ),
    "supcon empty": (lambda: supcon_loss(Q[:0], Y[:0]), "empty batch"),
    "supcon_queue queue labels": (
        lambda: supcon_queue_loss(Q, KEYS, QUEUE, QY[:5], Y),
        r"queue_labels must have shape \(16,\)",
    ),
    "supcon_queue (B,1) labels": (
        lambda: supcon_queue_loss(Q, KEYS, QUEUE, QY, Y[:, None]),
        r"labels must have shape \(4,\)",
    ),
    "paco labels length": (lambda: paco_loss(Q, KEYS, Y[:3], QUEUE, QY), r"\(4,\)"),
    "paco queue without labels": (
        lambda: paco_loss(Q, KEYS, Y, QUEUE, None),
        "queue needs its queue_labels",
    ),
    "paco centre rows": (
        lambda: paco_loss(Q, KEYS, Y, QUEUE, QY, torch.randn(3, C)),
        r"centre_logits must be \(4, C\)",
    ),
    "paco label >= C": (
        lambda: paco_loss(Q, KEYS, torch.tensor([0, 1, 2, 5]), QUEUE, QY, torch.randn(B, C)),
        "class id 5, out of range",
    ),
    "paco log_prior length": (
        lambda: paco_loss(Q, KEYS, Y, QUEUE, QY, torch.randn(B, C), torch.zeros(C + 1)),
        r"log_prior must have shape \(3,\)",
    ),
    "paco k batch": (lambda: paco_loss(Q, KEYS[:3], Y, QUEUE, QY), "one key per query"),
    "paco alpha NaN": (lambda: paco_loss(Q, KEYS, Y, QUEUE, QY, alpha=float("nan")), "alpha"),
    "gpaco centre of one view": (
        lambda: gpaco_loss(Q, KEYS, Y, torch.randn(B, C)),
        r"gpaco_loss: centre_logits must be \(8, C\)",
    ),
    "tsc label >= C": (
        lambda: tsc_loss(Q, KEYS, QUEUE, POS, torch.tensor([0, 1, 2, 5]), _n(C, D)),
        "class id 5, out of range",
    ),
    "tsc float labels": (
        lambda: tsc_loss(Q, KEYS, QUEUE, POS, Y.float(), _n(C, D)),
        "integer class ids",
    ),
    "tsc targets dim": (
        lambda: tsc_loss(Q, KEYS, QUEUE, POS, Y, _n(C, D + 1)),
        r"class_targets must be",
    ),
    "bcl labels of one view": (lambda: bcl_loss(FEATS, Y, _n(C, D)), r"\(8,\)"),
    "bcl float labels": (lambda: bcl_loss(FEATS, Y2.float() + 0.5, _n(C, D)), "integer"),
    "bcl prototypes dim": (lambda: bcl_loss(FEATS, Y2, _n(C, D + 1)), "prototypes must be"),
    "bcl empty": (lambda: bcl_loss(Q[:0], Y[:0], _n(C, D)), "empty batch"),
    "bcl_total 2.5 views": (
        lambda: bcl_total(
            torch.randn(B, C), Y, torch.cat([FEATS, Q[:2]]), _n(C, D), torch.zeros(C)
        ),
        "not a multiple",
    ),
    "bcl_total logits rows": (
        lambda: bcl_total(torch.randn(B - 1, C), Y, FEATS, _n(C, D), torch.zeros(C)),
        r"labels must have shape \(3,\)",
    ),
    "logit_adjusted_ce prior length": (
        lambda: logit_adjusted_ce(torch.randn(B, C), Y, torch.zeros(C + 1)),
        r"log_prior must have shape \(3,\)",
    ),
    "logit_adjusted_ce float labels": (
        lambda: logit_adjusted_ce(torch.randn(B, C), Y.float() + 0.5, torch.zeros(C)),
        "integer class ids",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_loss_input_names_argument(name: str) -> None:
    call, match = CASES[name]
    with pytest.raises(BalfeatError, match=match):
        call()


def test_valid_inputs_still_give_a_loss() -> None:
    """The checks refuse nothing the losses accept: GPaCo's empty ``k``, mixed float dtypes."""
    assert torch.isfinite(gpaco_loss(Q, KEYS, Y, torch.randn(2 * B, C), torch.zeros(C)))
    assert torch.isfinite(paco_loss(Q, KEYS, Y, QUEUE, QY, torch.randn(B, C), torch.zeros(C)))
    assert torch.isfinite(moco_loss(Q, KEYS.double(), QUEUE.half().float()))
    assert torch.isfinite(tsc_loss(Q, KEYS, QUEUE, POS, Y, _n(C, D)))
    assert torch.isfinite(bcl_total(torch.randn(B, C), Y, FEATS, _n(C, D), torch.zeros(C)))
