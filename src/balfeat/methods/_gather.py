"""Global-batch in-batch losses under DistributedDataParallel (BCL, GPaCo).

An in-batch loss (every sample of the batch is in every anchor's contrast set) computed on each
rank's local batch differs from the one-process loss. :func:`gather_rows` gives every rank the
global batch instead: the other ranks' rows without gradient, this rank's rows with their
gradient multiplied by the world size ``W`` (value unchanged). Every rank then computes the same
global loss ``L``; rank ``r`` back-propagates ``W·∂L/∂f_r`` into its own features, DDP averages
the parameter gradients over ranks, and the result is ``Σ_r ∂L/∂f_r · ∂f_r/∂θ = dL/dθ``, the
gradient of one process on the global batch. Parameters that enter ``L`` directly on every rank
(BCL's prototypes) get ``∂L/∂θ`` on each rank, which the average leaves as it is.
"""

from __future__ import annotations

import torch

from balfeat import distributed


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows in rank order; this rank's rows keep a ``W``-scaled gradient.

    Every rank must pass the same shape. Shape: (n, *) -> (W * n, *); one process: ``x`` itself.
    """
    if not distributed.is_distributed():
        return x
    world, rank, n = distributed.world_size(), distributed.rank(), x.shape[0]
    everyone = distributed.all_gather_concat(x.detach())
    local = x + (world - 1) * (x - x.detach())  # value x, gradient x W
    return torch.cat([everyone[: rank * n], local, everyone[(rank + 1) * n :]])
