"""Learning-rate schedules: one function serves pre-training, probing and fine-tuning.

The reference code (facebookresearch/moco ``main_moco.py`` / ``main_lincls.py`` and BalFeat, which
builds on them) sets the learning rate once at the start of every epoch:

- cosine: ``lr = base * 0.5 * (1 + cos(pi * epoch / epochs))``
- step: ``lr = base * gamma ** (number of milestones <= epoch)`` (``gamma`` 0.1)

optionally after a linear warm-up of ``warmup_epochs`` epochs (``base * (epoch + 1) / warmup``),
and optionally floored at ``final`` (cosine goes from ``base`` to ``final`` instead of to 0).

Two variants of KCL's successors are options:

- ``cosine_form="shifted"``: the cosine of PaCo / GPaCo (``PaCo/LT/paco_lt.py:618-629``,
  ``GPaCo/LT/paco_lt.py:595-606``) and BCL (``main.py:398-409``):
  ``0.5 * (1 + cos(pi * (epoch - warmup + 1) / (epochs - warmup + 1)))`` after the warm-up
  (with no warm-up: ``cos(pi * (epoch + 1) / (epochs + 1))``), so the first epoch after the
  warm-up is already below the base rate. ``"moco"`` is the reference's ``epoch / epochs``.
- ``warmup_inclusive``: PaCo CIFAR's ``if epoch <= args.warmup_epochs`` (``PaCo/LT/paco_cifar.py:
  586-597``): the warm-up rule also sets epoch ``warmup_epochs`` (``(warmup + 1) / warmup`` of the
  base rate, 1.1x for 10 warm-up epochs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

ScheduleName = Literal["cosine", "step", "constant"]
CosineForm = Literal["moco", "shifted"]


def lr_factor(
    epoch: float,
    epochs: int,
    schedule: ScheduleName = "cosine",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: int = 0,
    final_factor: float = 0.0,
    cosine_form: CosineForm = "moco",
    warmup_inclusive: bool = False,
) -> float:
    """The factor the base learning rate is multiplied by at (possibly fractional) ``epoch``.

    Args:
        epoch: epochs done so far (0 at the start of training; fractional for per-step use).
        epochs: total epochs of the schedule.
        schedule: ``cosine`` (half-cosine from 1 to ``final_factor`` over ``epochs``), ``step``
            (``gamma`` at each milestone) or ``constant``.
        milestones: epochs of the ``step`` schedule.
        gamma: factor applied at each milestone.
        warmup_epochs: linear warm-up epochs before the schedule (0 = none).
        final_factor: the cosine schedule's end value as a fraction of the base rate.
        cosine_form: ``moco`` (``cos(pi * epoch / epochs)``) or ``shifted`` (PaCo / GPaCo /
            BCL: ``cos(pi * (epoch - warmup + 1) / (epochs - warmup + 1))``).
        warmup_inclusive: the warm-up rule also covers epoch ``warmup_epochs`` (PaCo CIFAR).

    Returns:
        The multiplier of the base learning rate.
    """
    in_warmup = epoch <= warmup_epochs if warmup_inclusive else epoch < warmup_epochs
    if warmup_epochs > 0 and in_warmup:
        return (math.floor(epoch) + 1) / warmup_epochs
    if schedule == "cosine":
        if cosine_form == "shifted":
            phase = (epoch - warmup_epochs + 1) / (epochs - warmup_epochs + 1)
        else:
            phase = epoch / epochs
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * phase))
    if schedule == "step":
        return float(gamma ** sum(1 for m in milestones if epoch >= m))
    return 1.0
