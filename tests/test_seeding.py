"""Global RNG streams per rank (balfeat.seeding.separate_rank_streams)."""

from __future__ import annotations

import random

import numpy as np
import torch

from balfeat.seeding import seed_everything, separate_rank_streams


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _rank_draws(seed: int, rank: int) -> tuple[float, float, float]:
    seed_everything(seed)
    torch.nn.Linear(4, 4)  # the model's initialisation advances the stream, as in the trainer
    separate_rank_streams(seed, rank)
    return _draws()


def test_rank_zero_draws_what_one_process_always_drew() -> None:
    seed_everything(5)
    torch.nn.Linear(4, 4)
    one_process = _draws()
    assert _rank_draws(5, 0) == one_process


def test_other_ranks_draw_other_numbers_reproducibly() -> None:
    r0, r1, r2 = (_rank_draws(5, r) for r in range(3))
    for a, b in ((r0, r1), (r0, r2), (r1, r2)):
        assert all(x != y for x, y in zip(a, b, strict=True))  # python, numpy and torch each
    assert _rank_draws(5, 1) == r1
