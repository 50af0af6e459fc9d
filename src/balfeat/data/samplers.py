"""Samplers that shard across ranks and work unchanged in one process.

Both samplers are pure functions of ``(seed, epoch, num_replicas, rank)``: the order of an epoch is
fully determined by them, so resuming needs only ``set_epoch(saved_epoch)`` (the trainer stores
``sampler_epoch`` in its checkpoints). ``state_dict()`` / ``load_state_dict()`` are provided for
convenience and hold just the epoch.

Both draw one global sequence per epoch and give each rank its share of it
(:func:`shard_positions`). With ``block`` = the per-rank batch (the trainer's choice), global batch
``b`` of N ranks is positions ``[b * N * block, (b + 1) * N * block)`` of the sequence, rank ``r``
holding its ``r``-th contiguous slice: the images one process sees in batch ``b`` of a global
batch of ``N * block``, and gathering over ranks in rank order gives them in one process's order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from balfeat import distributed
from balfeat.errors import DataError


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    r = distributed.world_size() if num_replicas is None else int(num_replicas)
    k = distributed.rank() if rank is None else int(rank)
    if r < 1 or not 0 <= k < r:
        raise DataError(f"sampler: rank {k} is not in [0, num_replicas={r})")
    return r, k


def shard_positions(total: int, replicas: int, rank: int, block: int) -> np.ndarray:
    """Positions of rank ``rank``'s share of a sequence of ``total`` items.

    The sequence is cut into rounds of ``replicas * block`` positions; rank ``r`` takes the
    ``r``-th block of each round. A tail shorter than a round (``total`` is a multiple of
    ``replicas``) is cut into ``replicas`` contiguous equal parts. Every rank gets
    ``total // replicas`` positions; in one process the whole sequence, in order.

    Args:
        total: length of the global sequence, a multiple of ``replicas``.
        replicas: number of ranks.
        rank: this rank, in ``[0, replicas)``.
        block: consecutive positions a rank takes per round (1: ``r, r + R, ...``).

    Returns:
        Increasing positions. Shape: (total // replicas,).
    """
    rounds = total // (replicas * block)
    head = rounds * replicas * block
    mine = np.arange(head, dtype=np.int64).reshape(rounds, replicas, block)[:, rank].reshape(-1)
    share = (total - head) // replicas
    return np.concatenate([mine, head + rank * share + np.arange(share, dtype=np.int64)])


class _EpochState:
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``; call before each epoch (and once after resuming)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": epoch}``: everything needed to reproduce the order."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the epoch saved by :meth:`state_dict`."""
        self.set_epoch(state["epoch"])


class ClassBalancedSampler(_EpochState, Sampler[int]):
    """Pick classes in random cycles over all classes, ``repeat`` images per pick.

    This is the reference's ``--balanced --bal_repeat`` (BalFeat ``loader/sampler.py``,
    ``RandomCycleIter``): the classes are visited in a random order, each exactly once per cycle
    of ``C`` picks, the order reshuffled for every cycle — not drawn i.i.d. — so every class has
    the same frequency in every window of ``C`` picks. Within a class, images are drawn by
    cycling through a fresh random permutation, so every image of a class is used before any is
    repeated. Every rank draws the same global sequence (seeded by ``(seed, epoch)``) and takes
    its own contiguous chunk of it, so the shards are disjoint positions of one sequence, have
    equal lengths, and each keeps the ``repeat`` images of a pick together.

    Args:
        labels: class label of every sample, shape (N,).
        repeat: images drawn per class pick (1 = plain class-balanced sampling).
        num_samples: samples per epoch over all ranks; default N. Rounded up so that each rank
            gets the same multiple of ``repeat``.
        seed: base seed; the epoch's order is seeded by ``(seed, epoch)``.
        num_replicas: number of ranks; default from :mod:`balfeat.distributed`.
        rank: this rank; default from :mod:`balfeat.distributed`.
        block: positions a rank takes in turn; default one contiguous chunk per rank.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        repeat: int = 1,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        block: int | None = None,
    ) -> None:
        t = np.asarray(labels, dtype=np.int64)
        if t.ndim != 1 or len(t) == 0:
            raise DataError("ClassBalancedSampler needs a non-empty 1-D array of labels")
        if repeat < 1:
            raise DataError(f"ClassBalancedSampler: repeat must be >= 1, got {repeat}")
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.repeat = int(repeat)
        self.seed = int(seed)
        self.epoch = 0
        order = np.argsort(t, kind="stable")
        classes, starts = np.unique(t[order], return_index=True)
        ends = np.append(starts[1:], len(t))
        self.classes = classes
        self.class_members = [order[s:e] for s, e in zip(starts, ends, strict=True)]
        total = len(t) if num_samples is None else int(num_samples)
        unit = self.num_replicas * self.repeat
        groups = -(-total // unit)  # picks per rank
        self.num_samples = groups * self.repeat  # per rank
        self.total_size = self.num_samples * self.num_replicas
        self.block = _check_block(block, self.num_samples)

    def global_order(self) -> np.ndarray:
        """The sequence of sample indices of this epoch over all ranks. Shape: (total_size,)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n_picks = self.total_size // self.repeat
        n_cls = len(self.classes)
        picks = np.concatenate([rng.permutation(n_cls) for _ in range(-(-n_picks // n_cls))])[
            :n_picks
        ]
        out = np.empty((n_picks, self.repeat), dtype=np.int64)
        for c in np.unique(picks):
            rows = np.flatnonzero(picks == c)
            members = self.class_members[c]
            need = len(rows) * self.repeat
            cycles = -(-need // len(members))
            draws = np.concatenate([rng.permutation(members) for _ in range(cycles)])[:need]
            out[rows] = draws.reshape(len(rows), self.repeat)
        return out.reshape(-1)

    def __iter__(self) -> Iterator[int]:
        mine = shard_positions(self.total_size, self.num_replicas, self.rank, self.block)
        return iter(self.global_order()[mine].tolist())

    def __len__(self) -> int:
        return self.num_samples


class ShardedSampler(_EpochState, Sampler[int]):
    """The plain distributed sampler (as ``torch.utils.data.DistributedSampler``), in 1 process too.

    Shuffles ``range(n)`` with a generator seeded by ``(seed, epoch)``; rank ``r`` takes positions
    ``r, r + R, r + 2R, ...`` (with ``block``: the ``r``-th ``block`` positions of every
    ``R * block``, :func:`shard_positions`). Without ``drop_last`` the sequence is padded with
    its own start so every rank gets ``ceil(n / R)`` indices; with it, the tail is dropped
    (``floor(n / R)``).

    Args:
        n: dataset length.
        shuffle: shuffle each epoch (True for training, False for evaluation).
        seed: base seed.
        num_replicas: number of ranks; default from :mod:`balfeat.distributed`.
        rank: this rank; default from :mod:`balfeat.distributed`.
        drop_last: drop the tail instead of padding.
        block: positions a rank takes in turn (default 1).
    """

    def __init__(
        self,
        n: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        block: int = 1,
    ) -> None:
        if n < 1:
            raise DataError(f"ShardedSampler needs a non-empty dataset, got n={n}")
        self.n = int(n)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.drop_last = drop_last
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        if drop_last:
            self.num_samples = self.n // self.num_replicas
            if self.num_samples == 0:
                raise DataError(
                    f"ShardedSampler: {n} samples cannot feed {self.num_replicas} ranks with "
                    "drop_last=True"
                )
        else:
            self.num_samples = -(-self.n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.block = _check_block(block, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.total_size > self.n:
            reps = -(-self.total_size // self.n)
            order = np.tile(order, reps)
        order = order[: self.total_size]
        mine = shard_positions(self.total_size, self.num_replicas, self.rank, self.block)
        return iter(order[mine].tolist())

    def __len__(self) -> int:
        return self.num_samples


def _check_block(block: int | None, default: int) -> int:
    if block is None:
        return default
    if isinstance(block, bool) or int(block) < 1:
        raise DataError(f"sampler: block={block!r} must be a positive number of positions")
    return int(block)


class SkipSampler(Sampler[int]):
    """The indices of ``sampler`` after its first ``skip`` (a mid-epoch resume).

    Args:
        sampler: the epoch's sampler (its ``set_epoch`` already called).
        skip: how many of its indices to leave out.
    """

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(iter(self.sampler))[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]
