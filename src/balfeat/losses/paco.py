"""Parametric contrastive losses: PaCo (MoCo queue) and GPaCo (in-batch, no momentum encoder).

- PaCo: Cui et al., "Parametric Contrastive Learning", ICCV 2021, https://arxiv.org/abs/2107.12028
  (the loss with learnable class centres ``C = {c_1..c_C}`` and the rebalancing weight ``α``,
  Sec. 3 "Parametric Contrastive Learning"; equation numbers to be checked against the paper PDF,
  which was not read in this phase).
- GPaCo: Cui et al., "Generalized Parametric Contrastive Learning", TPAMI 2023,
  https://arxiv.org/abs/2209.12400 (same loss, contrast set = the two views of the batch).

For query ``i`` of class ``y`` with non-parametric positives ``P(i)`` (same-class keys), contrast
set ``A(i)`` (keys other than ``i`` itself) and centre logits ``s_c`` (a linear classifier on the
query feature, logit-adjusted: ``s_c = (w_c·z_i + b_c + log π_c) / T_c``):

    L_i = - [ β log p(c_y) + α sum_{p in P(i)} log p(p) ] / (β + α |P(i)|) · T / T_base,
    p(x) = exp(l_x) / ( sum_c exp(s_c) + γ sum_{a in A(i)} exp(z_i·z_a / T) ).

``β = 1, γ = 1`` in the paper; the weighted-mean normalisation ``/(β + α|P(i)|)`` and the factor
``T/T_base`` follow how the authors' released loss normalises (read for the equations only, no
code copied). Positive logits are summed through per-class sums of the keys (no ``(B, K)`` mask).

Checked against the authors' ``PaCoLoss`` (``PaCo/LT/losses.py``; ``features = [q, k, queue]``,
``sup_logits`` = the centre logits, their prior ``log(π + 1e-9)`` passed as ``log_prior``) on
random fp64 cases (a class absent from the batch, a single-sample class, duplicated labels,
α/β/γ/T/supt varied): loss within 3e-10 and gradients (q, k, centre logits) within 8e-10; the
difference is their ``+1e-12`` inside the log of the denominator, added after subtracting a row
maximum that includes the masked self-similarity ``1/T`` (3e-15 once that epsilon is removed).

Identity (tested): with no centres (``centre_logits=None``) and any ``α > 0``, ``α`` cancels and
``paco_loss(in_batch=False)`` equals ``supcon_queue_loss`` (reduction: weighted mean over
positives, then mean over the batch). ``α = 0`` without centres leaves no positive (0/0) and is
rejected.
"""

from __future__ import annotations

import math

import torch

from balfeat.errors import BalfeatError
from balfeat.losses.contrastive import queue_logsumexp
from balfeat.losses.shapes import (
    check_features,
    check_keys,
    check_label_range,
    check_labels,
    check_pair,
    check_temperature,
)
from balfeat.losses.supcon import same_class_sums


def paco_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    queue: torch.Tensor | None = None,
    queue_labels: torch.Tensor | None = None,
    centre_logits: torch.Tensor | None = None,
    log_prior: torch.Tensor | None = None,
    alpha: float = 0.05,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 0.2,
    centre_temperature: float = 1.0,
    base_temperature: float | None = None,
    in_batch: bool = True,
) -> torch.Tensor:
    """PaCo / GPaCo loss.

    Args:
        q: L2-normalised query features. Shape: (B, dim).
        k: L2-normalised keys (momentum encoder, PaCo) or the other view (GPaCo). Shape: (B, dim).
        labels: class of each query (``>= 0``). Shape: (B,).
        queue: queued keys, or None (GPaCo). Shape: (K, dim).
        queue_labels: class of each queued key, ``-1`` = empty slot. Shape: (K,).
        centre_logits: the classifier's logits on the query features (the centre similarities),
            or None for no parametric centres. Shape: (B, C).
        log_prior: ``log π_c`` added to the centre logits (logit adjustment), or None.
            Shape: (C,).
        alpha: weight ``α`` of each non-parametric positive (paper: 0.05 ImageNet-LT/iNat,
            0.02 Places-LT; see docs/methods-recipes.md).
        beta: weight of the centre positive (authors: 1).
        gamma: weight of the non-parametric terms in the denominator (authors: 1).
        temperature: T of the feature similarities (authors: 0.2 ImageNet-LT with MoCo).
        centre_temperature: ``T_c`` dividing the adjusted centre logits (authors' ``supt``: 1).
        base_temperature: ``T_base``; the loss is scaled by ``T / T_base`` (None: no scaling).
        in_batch: contrast also with the other queries and all batch keys, as the authors do
            (``[q, k, queue]`` minus the anchor itself); False: only ``[k_i, queue]`` (MoCo style).

    Returns:
        The mean loss over the batch (scalar).
    """
    check_temperature("paco_loss", temperature)
    check_temperature("paco_loss", centre_temperature, "centre_temperature")
    if base_temperature is not None:
        check_temperature("paco_loss", base_temperature, "base_temperature")
    if not (alpha >= 0 and beta >= 0 and gamma > 0):
        raise BalfeatError(
            f"PaCo needs alpha >= 0, beta >= 0, gamma > 0 (got {alpha}, {beta}, {gamma})"
        )
    if centre_logits is None and alpha == 0:
        raise BalfeatError("PaCo with alpha=0 and no centres has no positive; set alpha > 0")
    check_features("paco_loss", "q", q)
    batch, dim = q.shape
    check_keys("paco_loss", "k", k, dim)
    if k.shape[0] != batch and not (in_batch and k.shape[0] == 0):
        raise BalfeatError(
            f"paco_loss: k {tuple(k.shape)} must have the rows of q {tuple(q.shape)}: one key "
            "per query"
        )
    check_labels("paco_loss", "labels", labels, batch)
    if queue is not None:
        check_keys("paco_loss", "queue", queue, dim)
        if queue_labels is None:
            raise BalfeatError("paco_loss: a queue needs its queue_labels (K,); pass both")
        check_labels("paco_loss", "queue_labels", queue_labels, queue.shape[0])
    num_classes = None
    if centre_logits is not None:
        if centre_logits.dim() != 2 or centre_logits.shape[0] != batch:
            raise BalfeatError(
                f"paco_loss: centre_logits must be ({batch}, C), one row per query, got "
                f"{tuple(centre_logits.shape)}"
            )
        num_classes = centre_logits.shape[1]
        if log_prior is not None and log_prior.shape != (num_classes,):
            raise BalfeatError(
                f"paco_loss: log_prior must have shape ({num_classes},), one value per class "
                f"of centre_logits, got {tuple(log_prior.shape)}"
            )
    check_label_range("paco_loss", "labels", labels, num_classes)
    q_t = q / temperature
    no_queue = queue is None or queue.shape[0] == 0
    # Non-parametric contrast: batch part (dense, B x 2B at most) and queue part (lean).
    if in_batch:
        bkeys = torch.cat([q, k.to(q.dtype)])  # (2B, D)
        blabels = torch.cat([labels, labels[: k.shape[0]]])
        b_logits = q_t @ bkeys.t()  # (B, 2B)
        self_mask = torch.zeros_like(b_logits, dtype=torch.bool)
        self_mask[torch.arange(batch), torch.arange(batch)] = True
        lse_np = torch.logsumexp(b_logits.masked_fill(self_mask, float("-inf")), dim=1)
        same = blabels.unsqueeze(0) == labels.unsqueeze(1)  # (B, 2B), batch-sized
        same &= ~self_mask
        pos_sum = torch.where(same, b_logits, b_logits.new_zeros(())).sum(dim=1)
        n_pos = same.sum(dim=1)
    else:
        l_own = (q_t * k).sum(dim=1)
        lse_np, pos_sum = l_own, l_own
        n_pos = torch.ones_like(labels)
    if not no_queue:
        assert queue is not None and queue_labels is not None
        lse_np = torch.logaddexp(lse_np, queue_logsumexp(q_t, queue))
        sums, counts = same_class_sums(queue, queue_labels, labels)  # (B, dim), (B,)
        pos_sum = pos_sum + (q_t * sums.to(q_t.dtype)).sum(dim=1)
        n_pos = n_pos + counts
    lse = lse_np + math.log(gamma)
    weight = alpha * n_pos.to(q_t.dtype)
    num = alpha * pos_sum
    if centre_logits is not None:
        s = centre_logits.to(q_t.dtype)
        if log_prior is not None:
            s = s + log_prior.to(q_t.dtype)
        s = s / centre_temperature  # (B, C)
        lse = torch.logaddexp(lse, torch.logsumexp(s, dim=1))
        num = num + beta * s.gather(1, labels.long().unsqueeze(1)).squeeze(1)
        weight = weight + beta
    if bool((weight <= 0).any()):
        raise BalfeatError("PaCo: a query has no positive (alpha=0 and beta=0?)")
    loss = lse - num / weight
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    return scale * loss.mean()


def gpaco_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    centre_logits: torch.Tensor | None,
    log_prior: torch.Tensor | None = None,
    alpha: float = 0.05,
    temperature: float = 0.2,
    queue: torch.Tensor | None = None,
    queue_labels: torch.Tensor | None = None,
    **kwargs: float,
) -> torch.Tensor:
    """GPaCo: PaCo without the momentum encoder; both views are anchors.

    Every row of ``z = cat([q, k])`` is an anchor whose contrast set is every other row of ``z``
    plus the queued keys, if any: the authors' GPaCo loss (``GPaCo/LT/losses.py``) takes
    ``[q, k, queue]`` with the first ``2B`` rows as anchors; their GPaCo recipes keep a queue
    (8192 keys on ImageNet-LT/iNat, 1024 on CIFAR-100-LT) filled with the detached second-view
    features of the same encoder. Without ``queue`` this is the queue-free form (their loss with
    ``K = 0``). Equal to the authors' loss up to their ``+1e-12`` inside the log of the
    denominator (measured in fp64: loss ≤ 5e-9, gradients ≤ 2e-8 at T = 0.07, with and without a
    queue; 4e-15 without that epsilon).

    Args:
        q: first-view features (normalised). Shape: (B, dim).
        k: second-view features of the same encoder, with gradient. Shape: (B, dim).
        labels: Shape: (B,).
        centre_logits: classifier logits on both views, ``cat`` order as ``z``. Shape: (2B, C).
        log_prior: Shape: (C,).
        alpha: non-parametric positive weight (authors, ImageNet-LT R50: 0.045).
        temperature: T (authors: 0.2).
        queue: queued keys (detached second-view features of earlier steps), or None.
            Shape: (K, dim).
        queue_labels: class of each queued key, ``-1`` = empty slot. Shape: (K,).
        **kwargs: ``beta``, ``gamma``, ``centre_temperature``, ``base_temperature``.

    Returns:
        Scalar loss (mean over the 2B anchors).
    """
    check_pair("gpaco_loss", q, k)
    check_labels("gpaco_loss", "labels", labels, q.shape[0])
    if centre_logits is not None and (
        centre_logits.dim() != 2 or centre_logits.shape[0] != 2 * q.shape[0]
    ):
        raise BalfeatError(
            f"gpaco_loss: centre_logits must be ({2 * q.shape[0]}, C), the logits of both "
            f"views in cat([q, k]) order, got {tuple(centre_logits.shape)}"
        )
    z = torch.cat([q, k.to(q.dtype)])
    return paco_loss(
        z,
        z[:0],
        torch.cat([labels, labels]),
        queue,
        queue_labels,
        centre_logits,
        log_prior,
        alpha=alpha,
        temperature=temperature,
        in_batch=True,
        **kwargs,
    )
