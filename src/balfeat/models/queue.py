"""A FIFO queue of keys (and optionally their labels) held in registered buffers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from balfeat.errors import BalfeatError


class KeyQueue(nn.Module):
    """Queue of ``size`` L2-normalised keys, oldest overwritten first.

    Buffers (all in ``state_dict()``): ``keys`` (size, dim) initialised to random unit vectors;
    ``labels`` (size,) int64 initialised to -1 (only with ``with_labels``); ``ptr`` (1,) the
    next slot to write; ``count`` (1,) how many keys were ever enqueued (capped at ``size``).

    ``enqueue`` takes the keys of the whole global batch (the caller gathers them across ranks
    with ``balfeat.distributed.all_gather_concat``) and wraps around the end, so ``size`` need not
    be a multiple of the batch size.

    Args:
        size: number of keys K (MoCo/KCL: 65536).
        dim: key size.
        with_labels: also keep the class of each key (KCL).
        generator: random source of the initial keys.
    """

    keys: torch.Tensor
    labels: torch.Tensor
    ptr: torch.Tensor
    count: torch.Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        with_labels: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise BalfeatError(f"KeyQueue size={size} and dim={dim} must both be >= 1")
        self.size = size
        self.dim = dim
        self.with_labels = with_labels
        self.register_buffer(
            "keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        )
        if with_labels:
            self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("count", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Write ``keys`` (and ``labels``) at the pointer, wrapping around; advance the pointer.

        Args:
            keys: Shape: (n, dim). With ``n > size`` only the last ``size`` keys are kept.
            labels: Shape: (n,); required iff the queue has labels.
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise BalfeatError(
                f"KeyQueue.enqueue: keys must be (n, {self.dim}), got {tuple(keys.shape)}"
            )
        if self.with_labels != (labels is not None):
            raise BalfeatError(
                "KeyQueue.enqueue: pass labels exactly when the queue was built with_labels=True"
            )
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.size:
            keys = keys[-self.size :]
            labels = labels[-self.size :] if labels is not None else None
            skip = n - self.size
        else:
            skip = 0
        ptr = (int(self.ptr) + skip) % self.size
        idx = (ptr + torch.arange(keys.shape[0], device=self.keys.device)) % self.size
        self.keys.index_copy_(0, idx, keys.detach().to(self.keys.dtype))
        if labels is not None:
            self.labels.index_copy_(0, idx, labels.detach().to(torch.long))
        self.ptr.fill_((ptr + keys.shape[0]) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    @property
    def full(self) -> bool:
        """Whether ``size`` keys have been enqueued since construction (or the last reset)."""
        return int(self.count) >= self.size
