"""Every seed of a run, derived in one place.

A run has one seed (``run.seed``). The streams that need their own seed are derived from it here,
so a rank, an epoch or a batch never shares random numbers with another by accident:

- the data-loader generator of rank ``r``: ``seed + RANK_STRIDE * r``;
- the prefill loader (fills a queue before the first step): the same with ``PREFILL_OFFSET``
  added, so the training data order does not depend on whether the queue is prefilled;
- the augmentation of batch ``b`` of ``epoch`` on the on-device paths:
  :func:`derive_seed` of ``(seed, epoch, b)`` for the in-memory arrays (the draws of the global
  batch, the same on every rank, each rank using its slice's rows, so N processes augment an
  image as one does) and of ``(seed, rank, epoch, b)`` for encoded files decoded on the GPU; a
  resumed epoch draws what an uninterrupted one draws.

:func:`rng_state` / :func:`set_rng_state` save and restore the process-wide generators (python,
numpy, torch CPU and CUDA) for exact resume.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

#: Added per rank to the seed of every per-rank stream (a prime, so ranks never coincide).
RANK_STRIDE = 1000003
#: Added to the seed of the queue-prefill loader.
PREFILL_OFFSET = 7919


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (e.g. ``(seed, epoch, batch)``)."""
    state = np.random.SeedSequence([int(p) % (2**63) for p in parts]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def rank_seed(seed: int, rank: int, offset: int = 0) -> int:
    """The seed of rank ``rank``'s stream: ``seed + offset + RANK_STRIDE * rank``."""
    return seed + offset + RANK_STRIDE * rank


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def separate_rank_streams(seed: int, rank: int) -> None:
    """Give rank ``rank`` global RNG streams of its own, after the model is built.

    Every rank seeds python, numpy and torch with the run's seed so the initial weights agree;
    without this, the PIL/DataLoader input path with ``num_workers=0`` (whose torchvision
    transforms draw from the global RNG) would augment every rank's images with the same
    numbers. Rank 0 is left as it is, so one process draws exactly what it always drew.
    """
    if rank:
        seed_everything(rank_seed(seed, rank))


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and every CUDA device)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states from :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
