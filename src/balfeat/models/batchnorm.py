"""Batch statistics across ranks: shuffle-BN for momentum keys, its one-process stand-in, and
BatchNorm over the global batch (``run.sync_bn``).

MoCo (He et al., CVPR 2020, https://arxiv.org/abs/1911.05722, section 3.3) computes the keys
with BatchNorm over a random subset of the global batch, so that query and key statistics differ
and the model cannot "cheat" through BN. With several processes ("shuffle BN") the key batch is
shuffled across ranks (``batch_shuffle_ddp``/``batch_unshuffle_ddp``). In one process MoCo's CIFAR
demo instead splits the batch into groups with separate statistics (``SplitBatchNorm``);
``split_forward`` gives the same effect on an unmodified module by forwarding the groups one by
one, so state-dict keys and module types stay torchvision's.

:class:`GlobalBatchNorm` is the opposite choice for the trained encoder: its statistics are
those of the whole global batch, so N processes normalise as one process does (torch's
``SyncBatchNorm`` runs on GPUs only; this one on gloo too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from balfeat import distributed
from balfeat.errors import BalfeatError


@torch.no_grad()
def batch_shuffle_ddp(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Give this rank a random slice of the global batch; identity in one process.

    The permutation is drawn on rank 0 (from ``generator``, on the CPU) and broadcast.

    Args:
        x: this rank's inputs. Shape: (n, ...), the same ``n`` on every rank.
        generator: CPU random source of the permutation (rank 0's is used).

    Returns:
        ``(x_this, idx_unshuffle)``: shape (n, ...), and the inverse permutation of the global
        batch (``None`` in one process).
    """
    if not distributed.is_distributed():
        return x, None
    n = x.shape[0]
    x_all = distributed.all_gather_concat(x)
    perm = torch.randperm(x_all.shape[0], generator=generator).to(x.device)
    distributed.broadcast_(perm, src=0)
    idx_unshuffle = torch.argsort(perm)
    idx_this = perm.view(distributed.world_size(), n)[distributed.rank()]
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x: torch.Tensor, idx_unshuffle: torch.Tensor | None) -> torch.Tensor:
    """Undo ``batch_shuffle_ddp``: return this rank's rows in their original order.

    Shape: (n, ...) -> (n, ...).
    """
    if idx_unshuffle is None or not distributed.is_distributed():
        return x
    n = x.shape[0]
    x_all = distributed.all_gather_concat(x)
    idx_this = idx_unshuffle.view(distributed.world_size(), n)[distributed.rank()]
    return x_all[idx_this]


def split_forward(module: nn.Module, x: torch.Tensor, num_splits: int) -> torch.Tensor:
    """Forward ``x`` in ``num_splits`` contiguous groups (each with its own BN statistics).

    Equivalent to converting the module's BatchNorm layers to ``SplitBatchNorm`` (with groups of
    consecutive rows instead of strided ones); ``num_splits <= 1`` is a plain forward. Groups
    differ in size by at most one when ``n`` is not a multiple of ``num_splits``.

    Shape: (n, ...) -> (n, out).
    """
    if num_splits <= 1 or x.shape[0] <= 1:
        return module(x)
    parts = x.tensor_split(min(num_splits, x.shape[0]))
    try:
        return torch.cat([module(p) for p in parts], dim=0)
    except ValueError as err:  # BatchNorm: "Expected more than 1 value per channel"
        if "more than 1 value per channel" not in str(err):
            raise
        raise BalfeatError(
            f"the key encoder forwards the batch of {x.shape[0]} in {len(parts)} groups "
            f"(method.bn_splits={num_splits}, MoCo's one-process stand-in for shuffle BN) of "
            f"{min(len(q) for q in parts)} image(s): too few for batch norm; use a batch of at "
            f"least {2 * num_splits} per process or a smaller method.bn_splits (1 disables it)"
        ) from None


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that normalises ``num_splits`` groups of the batch separately in training.

    Group ``s`` holds the samples ``s, s + S, s + 2S, ...`` (``S = num_splits``), as MoCo's
    single-GPU CIFAR demo does. Running statistics are updated per group and averaged; in eval
    mode it is a plain BatchNorm2d. Parameter and buffer names are BatchNorm2d's.

    Args:
        num_features: channels C.
        num_splits: groups S; the batch size must be a multiple of S in training.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (N, C, H, W) -> (N, C, H, W)."""
        n, c, h, w = x.shape
        s = self.num_splits
        if not (self.training or not self.track_running_stats) or s <= 1:
            return super().forward(x)
        if n % s != 0:
            raise BalfeatError(
                f"SplitBatchNorm: batch size {n} is not a multiple of num_splits={s}; "
                "change the batch size or bn_splits"
            )
        assert self.running_mean is not None and self.running_var is not None
        mean_split = self.running_mean.repeat(s)
        var_split = self.running_var.repeat(s)
        weight = self.weight.repeat(s) if self.weight is not None else None
        bias = self.bias.repeat(s) if self.bias is not None else None
        out = F.batch_norm(
            x.reshape(n // s, c * s, h, w),
            mean_split,
            var_split,
            weight,
            bias,
            True,
            0.1 if self.momentum is None else self.momentum,
            self.eps,
        ).view(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean_split.view(s, c).mean(dim=0))
            self.running_var.copy_(var_split.view(s, c).mean(dim=0))
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
        return out


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``SplitBatchNorm`` (same state).

    Returns the converted module (``module`` itself, changed in place, unless it is a BN layer).
    """
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SplitBatchNorm):
        new = SplitBatchNorm(
            module.num_features,
            num_splits,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_split_batchnorm(child, num_splits))
    return module


@torch.no_grad()
def adapt_batchnorm(module: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics of ``module`` from ``batches``, weights
    untouched: the statistics are reset, then averaged cumulatively (``momentum=None``) over one
    forward pass in train mode without gradient. The BN momenta and the module's mode are
    restored afterwards. This is the control of a study: an untrained network whose BN
    statistics fit the set it is probed after.

    Args:
        module: the network (its BN layers are ``nn.modules.batchnorm._BatchNorm``).
        batches: image batches already on the module's device. Shape: (B, C, H, W) each.

    Returns:
        The number of images seen (0 leaves the statistics reset).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    seen = 0
    try:
        for x in batches:
            module(x)
            seen += int(x.shape[0])
    finally:
        for m, mom in zip(norms, momenta, strict=True):
            m.momentum = mom
        module.train(was_training)
    return seen


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce`` (sum) whose gradient is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all ranks.

    In training under a process group the per-channel sums of ``x - c`` and ``(x - c)^2`` (``c``
    the running mean, the same on every rank, which keeps the variance free of cancellation) and
    the element count are summed over ranks in one differentiable ``all_reduce``, so the
    gradient flows to every rank's inputs as in one process. Running statistics are updated
    with the global mean and unbiased variance, identically on every rank. In one process and in
    eval mode it is a plain BatchNorm; parameter and buffer names are BatchNorm's.

    Shape: (N, C) or (N, C, *) -> the same.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise BalfeatError(f"GlobalBatchNorm expects (N, C, ...) input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (N, C, *) -> (N, C, *)."""
        if not (self.training and distributed.is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        view = (1, -1) + (1,) * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        shift = (
            self.running_mean.detach().float()
            if self.running_mean is not None
            else torch.zeros(x.shape[1], device=x.device)
        )
        centred = xf - shift.view(view)
        count = torch.full_like(shift, float(x.numel() // x.shape[1]))
        total = _SumOverRanks.apply(
            torch.stack([centred.sum(dims), centred.square().sum(dims), count])
        )  # (3, C): sums over every rank
        n = total[2].detach()
        offset = total[0] / n
        mean = shift + offset
        var = (total[1] / n - offset.square()).clamp(min=0.0)
        y = (xf - mean.view(view)) * torch.rsqrt(var + self.eps).view(view)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight.view(view) + self.bias.view(view)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), var.detach(), float(n[0]))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        """BatchNorm's update with the global batch's mean and unbiased variance."""
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        m = self.momentum
        factor = 1.0 / float(self.num_batches_tracked) if m is None else m
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``module`` by a :class:`GlobalBatchNorm` that shares its
    parameters and buffers (an optimizer built before keeps working; state-dict keys are kept).

    Returns the converted module (``module`` itself, changed in place, unless it is a BN layer).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (GlobalBatchNorm, SplitBatchNorm)
    ):
        new = GlobalBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        for name, value in [*module.named_parameters(recurse=False),
                            *module.named_buffers(recurse=False)]:  # fmt: skip
            setattr(new, name, value)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_global_batchnorm(child))
    return module
