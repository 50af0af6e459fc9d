"""Label-distribution-aware margin (LDAM) loss and class-balanced re-weighting.

LDAM: Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
NeurIPS 2019, https://arxiv.org/abs/1906.07413. Class ``j`` with ``n_j`` training samples gets
the margin ``Δ_j = C / n_j^(1/4)`` (the paper's Eq. 12), ``C`` chosen so that the largest
margin is ``max_margin`` (their code's ``max_m``, 0.5). The true-class logit of a sample of class
``y`` is lowered by ``Δ_y`` before a cross-entropy on ``scale`` times the logits:

    L(x, y) = -log( exp(s (z_y - Δ_y)) / (exp(s (z_y - Δ_y)) + sum_{j != y} exp(s z_j)) )

Re-weighting (the "DRW" of the same paper, Sec. 3.3) uses the class-balanced weights of Cui et
al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019,
https://arxiv.org/abs/1901.05555: ``w_j ∝ (1 - β) / (1 - β^{n_j})`` normalised to sum to ``C``
(β 0.9999 in both papers' CIFAR-LT runs). A weighted cross-entropy averages as PyTorch's does:
``sum_i w_{y_i} L_i / sum_i w_{y_i}``.

This is the second stage of the TSC authors' published CIFAR-LT setting (Li et al., CVPR 2022,
supplement Appendix A: "LDAM loss and class re-weighting").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError


def _counts(counts: Sequence[int] | torch.Tensor, what: str) -> torch.Tensor:
    n = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if n.numel() == 0 or bool((n <= 0).any()):
        raise BalfeatError(
            f"{what}: every class needs at least one training sample, got counts "
            f"{n.tolist()[:10]}{' ...' if n.numel() > 10 else ''}"
        )
    return n


def ldam_margins(counts: Sequence[int] | torch.Tensor, max_margin: float = 0.5) -> torch.Tensor:
    """Per-class margins ``Δ_j ∝ n_j^(-1/4)``, the largest (rarest class) equal to ``max_margin``.

    Args:
        counts: training samples per class. Shape: (C,).
        max_margin: the margin of the rarest class (LDAM's ``max_m``).

    Returns:
        Margins (float64). Shape: (C,).
    """
    n = _counts(counts, "ldam_margins")
    m = n.pow(-0.25)
    return m * (max_margin / m.max())


def class_balanced_weights(counts: Sequence[int] | torch.Tensor, beta: float) -> torch.Tensor:
    """Class-balanced weights ``(1 - β) / (1 - β^{n_j})``, normalised to sum to C.

    ``beta`` 0 gives all ones (no re-weighting).

    Args:
        counts: training samples per class. Shape: (C,).
        beta: the effective-number parameter in [0, 1).

    Returns:
        Weights (float64). Shape: (C,).
    """
    if not 0.0 <= beta < 1.0:
        raise BalfeatError(f"class_balanced_weights: beta must lie in [0, 1), got {beta}")
    n = _counts(counts, "class_balanced_weights")
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return w / w.sum() * len(n)


def ldam_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    margins: torch.Tensor,
    scale: float = 30.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """LDAM cross-entropy of a batch (mean, or weighted mean with ``weight``).

    Args:
        logits: classifier outputs. Shape: (N, C).
        targets: class ids. Shape: (N,).
        margins: per-class margins from :func:`ldam_margins`. Shape: (C,).
        scale: the factor ``s`` applied to the margin-adjusted logits (LDAM's ``s``, 30).
        weight: optional per-class weights. Shape: (C,).

    Returns:
        Scalar loss.
    """
    m = margins.to(logits.device, logits.dtype)
    adjusted = logits - F.one_hot(targets, logits.shape[1]).to(logits.dtype) * m[targets, None]
    w = None if weight is None else weight.to(logits.device, logits.dtype)
    return F.cross_entropy(scale * adjusted, targets, weight=w)
