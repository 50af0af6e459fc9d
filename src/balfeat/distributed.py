"""Distributed helpers that are identities in a single process.

One code path serves one CPU process, one GPU and ``torchrun`` on many GPUs and nodes: every
function here works without an initialised process group, where it behaves as a world of size 1.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank, 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes, 1 without a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """The rank within this node, from torchrun's ``LOCAL_RANK`` (0 when absent)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0: the process that logs, writes checkpoints and shows progress bars."""
    return rank() == 0


def barrier() -> None:
    """Wait for all processes; a no-op in one process."""
    if is_distributed():
        dist.barrier()


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> bool:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1 in the env).

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default nccl when CUDA is available, else gloo.
        timeout_s: collective timeout. A rank that fails makes the others fail within this time
            instead of hanging forever.

    Returns:
        True when a process group was initialised (or already was).
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def destroy_distributed() -> None:
    """Tear the process group down if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def all_gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, in rank order; no gradient.

    Shape: (n, *) on each rank -> (world_size * n, *). Every rank must pass the same shape.
    """
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a copy; the input is unchanged)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a copy; the input is unchanged)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy; a no-op in one process."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor
