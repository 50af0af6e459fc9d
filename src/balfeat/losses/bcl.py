"""Balanced contrastive learning (BCL) and its logit-adjusted cross-entropy branch.

Zhu et al., "Balanced Contrastive Learning for Long-Tailed Visual Recognition", CVPR 2022,
https://arxiv.org/abs/2207.09052. For anchor ``i`` of class ``y`` among the ``2B`` view features
and the ``C`` class prototypes ``p_c`` (class-complement: the normalised classifier weights passed
through the prototype head), with ``B_c`` the samples of class ``c`` in ``2B ∪ {p_c}`` without the
anchor itself, the balanced contrastive loss (the paper's final BCL loss, Sec. 3; equation number
to be checked against the PDF) is

    L_i = -1/|B_y| sum_{p in B_y} log( exp(z_i·z_p/T) / D_i ),
    D_i = sum_c (1/|B_c|) sum_{k in B_c} exp(z_i·z_k/T)

(class-averaging: each class's term in the denominator is the mean over its members). Classes
with no member (``|B_c| = 0``) cannot occur since every class has its prototype. The total loss is
``λ·CE_LA + μ·BCL`` with ``CE_LA`` the logit-adjusted cross-entropy (Menon et al. 2021) of the
classifier branch. Implemented per class with ``(2B, C)`` class-sum matrices; the only dense
tensor is the ``(2B, 2B + C)`` similarity matrix of the batch.

Checked against the authors' ``BalSCL`` and ``LogitAdjust`` (github:FlamieZhu/Balanced-
Contrastive-Learning, ``loss/contrastive.py``, ``loss/logitadjust.py``; total
``α·CE_LA + β·BalSCL`` as their ``main.py``) on random fp64 cases (a class absent from the batch,
a single-sample class, duplicated labels, T and weights varied): loss and gradients (both views,
prototypes, logits) equal to 2e-15.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError
from balfeat.losses.shapes import (
    check_features,
    check_keys,
    check_label_range,
    check_labels,
    check_temperature,
)


def bcl_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Balanced contrastive loss over all view features.

    Args:
        features: L2-normalised features of all views stacked (e.g. ``cat([v1, v2])``).
            Shape: (N, dim).
        labels: class of each row (``0 <= y < C``). Shape: (N,).
        prototypes: L2-normalised class prototypes (class-complement). Shape: (C, dim).
        temperature: T (authors: 0.07).

    Returns:
        The mean over the N anchors (scalar).
    """
    check_temperature("bcl_loss", temperature)
    check_features("bcl_loss", "features", features)
    check_labels("bcl_loss", "labels", labels, features.shape[0])
    check_keys("bcl_loss", "prototypes", prototypes, features.shape[1])
    n, c = features.shape[0], prototypes.shape[0]
    if c == 0:
        raise BalfeatError("bcl_loss: prototypes is empty (0 classes); pass one row per class")
    check_label_range("bcl_loss", "labels (one prototype per class)", labels, c)
    lab = labels.long()
    allf = torch.cat([features, prototypes.to(features.dtype)])  # (N + C, D)
    alll = torch.cat([lab, torch.arange(c, device=lab.device)])
    logits = features @ allf.t() / temperature  # (N, N + C)
    logits = logits.clone()
    idx = torch.arange(n, device=features.device)
    self_val = logits[idx, idx]
    onehot = F.one_hot(alll, c).to(logits.dtype)  # (N + C, C)
    # per-class member counts, minus the anchor for its own class
    count = onehot.sum(0).unsqueeze(0).expand(n, c).clone()  # (N, C)
    count[idx, lab] -= 1
    # shift by the largest logit other than the anchor's own (dropped before exp): at a small T
    # the own logit 1/T would leave every other exp at 0 and the log at -inf
    others = logits.index_put((idx, idx), logits.new_tensor(float("-inf")))  # drop self
    shift = others.detach().amax(dim=1, keepdim=True)
    e = (others - shift).exp()
    class_exp = e @ onehot  # (N, C): sum_{k in class c} exp
    den = (class_exp / count).sum(1).log() + shift.squeeze(1)  # (N,)
    pos_sum = (logits @ onehot).gather(1, lab.unsqueeze(1)).squeeze(1) - self_val
    n_pos = count.gather(1, lab.unsqueeze(1)).squeeze(1)
    return (den - pos_sum / n_pos).mean()


def logit_adjusted_ce(
    logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """Logit-adjusted cross-entropy ``CE(logits + τ log π, y)`` (Menon et al., ICLR 2021).

    Args:
        logits: classifier outputs. Shape: (B, C).
        labels: Shape: (B,).
        log_prior: ``log π_c`` of the training class frequencies. Shape: (C,).
        tau: τ (BCL: 1).

    Returns:
        Scalar mean loss.
    """
    check_features("logit_adjusted_ce", "logits", logits)
    check_labels("logit_adjusted_ce", "labels", labels, logits.shape[0])
    if log_prior.shape != (logits.shape[1],):
        raise BalfeatError(
            f"logit_adjusted_ce: log_prior must have shape ({logits.shape[1]},), one value per "
            f"class of logits {tuple(logits.shape)}, got {tuple(log_prior.shape)}"
        )
    check_label_range("logit_adjusted_ce", "labels", labels, logits.shape[1])
    return F.cross_entropy(logits + tau * log_prior.to(logits.dtype), labels.long())


def bcl_total(
    logits: torch.Tensor,
    labels: torch.Tensor,
    features: torch.Tensor,
    prototypes: torch.Tensor,
    log_prior: torch.Tensor,
    ce_weight: float = 1.0,
    bcl_weight: float = 0.35,
    temperature: float = 0.07,
) -> torch.Tensor:
    """``λ·CE_LA + μ·BCL`` (λ = ``ce_weight``, μ = ``bcl_weight``).

    Args:
        logits: classifier logits of the first view. Shape: (B, C).
        labels: Shape: (B,).
        features: both views' normalised features, ``cat([v1, v2])``. Shape: (2B, dim).
        prototypes: normalised class prototypes. Shape: (C, dim).
        log_prior: Shape: (C,).
        ce_weight: λ (authors' main.py default --alpha 1.0, ImageNet-LT/iNat).
        bcl_weight: μ (authors' default --beta 0.35).
        temperature: T.

    Returns:
        Scalar loss.
    """
    check_features("bcl_total", "logits", logits)
    check_labels("bcl_total", "labels", labels, logits.shape[0])
    check_features("bcl_total", "features", features)
    views = features.shape[0] // labels.shape[0]
    if features.shape[0] != views * labels.shape[0]:
        raise BalfeatError(
            f"bcl_total: features has {features.shape[0]} rows, not a multiple of the "
            f"{labels.shape[0]} labels; pass cat([v1, v2]) of the views of this batch"
        )
    return ce_weight * logit_adjusted_ce(logits, labels, log_prior) + bcl_weight * bcl_loss(
        features, labels.repeat(views), prototypes, temperature
    )
