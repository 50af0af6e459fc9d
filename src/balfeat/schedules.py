"""Learning-rate schedules: one function serves pre-training, probing and fine-tuning.

The reference code (facebookresearch/moco ``main_moco.py`` / ``main_lincls.py`` and BalFeat, which
builds on them) sets the learning rate once at the start of every epoch:

- cosine: ``lr = base * 0.5 * (1 + cos(pi * epoch / epochs))``
- step: ``lr = base * gamma ** (number of milestones <= epoch)`` (``gamma`` 0.1)

optionally after a linear warm-up of ``warmup_epochs`` epochs (``base * (epoch + 1) / warmup``),
and optionally floored at ``final`` (cosine goes from ``base`` to ``final`` instead of to 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

ScheduleName = Literal["cosine", "step", "constant"]


def lr_factor(
    epoch: float,
    epochs: int,
    schedule: ScheduleName = "cosine",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: int = 0,
    final_factor: float = 0.0,
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

    Returns:
        The multiplier of the base learning rate.
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return (math.floor(epoch) + 1) / warmup_epochs
    if schedule == "cosine":
        return final_factor + (1.0 - final_factor) * 0.5 * (
            1.0 + math.cos(math.pi * epoch / epochs)
        )
    if schedule == "step":
        return float(gamma ** sum(1 for m in milestones if epoch >= m))
    return 1.0
