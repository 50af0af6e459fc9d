"""Supervised contrastive losses (SupCon): in-batch and against a labelled key queue.

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, https://arxiv.org/abs/2004.11362,
the loss ``L^sup_out`` (eq. 2 of the paper): for anchor ``i`` with positives ``P(i)`` (every other
sample of its class) and contrast set ``A(i)`` (every sample but ``i``),
``L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i·z_p/T) / sum_{a in A(i)} exp(z_i·z_a/T) )``.

Since ``log softmax`` has the same denominator for every positive, ``L_i = lse_i - mean_{p} l_ip``;
the sum of the positive logits is ``z_i · S[y_i] / T`` with ``S`` the per-class sum of the
contrast features, so no positive mask is built at all (no dense ``(B, K)`` mask against a queue).
"""

from __future__ import annotations

import torch

from balfeat.losses.contrastive import queue_logsumexp
from balfeat.losses.shapes import (
    check_features,
    check_keys,
    check_label_range,
    check_labels,
    check_pair,
    check_temperature,
)


def class_sums(
    feats: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sum and count of features; entries with label ``< 0`` (empty slots) are skipped.

    Args:
        feats: Shape: (N, dim).
        labels: Shape: (N,).
        num_classes: number of rows C of the result (``> max(labels)``).

    Returns:
        ``(sums, counts)``: Shape (C, dim) in ``feats``'s dtype, and (C,) int64.
    """
    ok = labels >= 0
    lab = labels[ok].long()
    sums = feats.new_zeros(num_classes, feats.shape[1]).index_add(0, lab, feats[ok])
    counts = torch.bincount(lab, minlength=num_classes)
    return sums, counts


def same_class_sums(
    keys: torch.Tensor, key_labels: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of the keys of each query's class, in memory independent of label values.

    The key labels are sorted once and renumbered ``0 .. K-1`` by first appearance in sorted
    order, so the per-class sums take (K, dim) whatever the label values are (a label of
    ``10**9`` costs what a label of 3 does). Keys labelled ``< 0`` (empty slots) match no query.

    Args:
        keys: Shape: (K, dim), K >= 1.
        key_labels: Shape: (K,).
        labels: class of each query (``>= 0``). Shape: (B,).

    Returns:
        ``(sums, counts)``: sum of the keys of query ``i``'s class, Shape (B, dim) in ``keys``'s
        dtype (0 where none), and their number, Shape (B,) int64.
    """
    sorted_labels, order = torch.sort(key_labels, stable=True)
    first = torch.ones_like(sorted_labels, dtype=torch.bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    dense = torch.cumsum(first, 0) - 1  # (K,): class number of each sorted position
    sums = keys.new_zeros(keys.shape).index_add(0, dense, keys[order])  # (K, dim)
    lab = labels.to(sorted_labels.dtype)
    start = torch.searchsorted(sorted_labels, lab, right=False)
    counts = torch.searchsorted(sorted_labels, lab, right=True) - start  # (B,)
    rows = sums[dense[start.clamp(max=keys.shape[0] - 1)]]  # (B, dim)
    return torch.where((counts > 0).unsqueeze(1), rows, rows.new_zeros(())), counts


def supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    base_temperature: float | None = None,
) -> torch.Tensor:
    """In-batch SupCon ``L^sup_out`` (eq. 2 of Khosla et al.).

    Every row is an anchor; its contrast set is every other row, its positives every other row of
    its class. An anchor without a positive (its class has one row among all views) contributes 0
    and still counts in the mean over the ``N`` anchors, as the authors' ``SupConLoss``
    (github:HobbitLong/SupContrast, ``losses.py``) does since its fix for that case; with two or
    more views every anchor has a positive and the question does not arise. Checked against that
    code in fp64: loss and gradient equal to 2e-15.

    Args:
        features: L2-normalised features of all views stacked, e.g. ``cat([view1, view2])``.
            Shape: (N, dim).
        labels: class of each row (``>= 0``). Shape: (N,).
        temperature: T (see docs/methods-recipes.md; LT settings not yet verified).
        base_temperature: ``T_base``; the loss is scaled by ``T / T_base`` as in the authors'
            code, whose default ``T_base = 0.07`` is fixed while ``T`` is a flag (their loss at
            ``T = 0.1`` is this loss times 1.43). None: no scaling.

    Returns:
        The mean loss over the N anchors (scalar; 0 if no anchor has a positive).
    """
    check_temperature("supcon_loss", temperature)
    if base_temperature is not None:
        check_temperature("supcon_loss", base_temperature, "base_temperature")
    check_features("supcon_loss", "features", features)
    check_labels("supcon_loss", "labels", labels, features.shape[0])
    check_label_range("supcon_loss", "labels", labels, None)
    n = features.shape[0]
    z_t = features / temperature
    logits = z_t @ features.t()  # (N, N), in-batch only
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    lse = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)  # (N,)
    sums, counts = same_class_sums(features, labels, labels)  # (N, dim), (N,)
    n_pos = counts - 1  # (N,)
    l_self = (z_t * features).sum(dim=1)
    pos_sum = (z_t * sums).sum(dim=1) - l_self  # sum of positive logits
    has = n_pos > 0
    if not bool(has.any()):
        return features.sum() * 0.0
    per = lse - pos_sum / n_pos.clamp(min=1).to(pos_sum.dtype)
    loss = torch.where(has, per, per.new_zeros(())).mean()
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    return scale * loss


def supcon_queue_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    queue_labels: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.07,
) -> torch.Tensor:
    """SupCon against a labelled key queue (MoCo style), the baseline of TSC / PaCo.

    Query ``i`` contrasts with ``[k_i, queue]``; its positives are its own key ``k_i`` and every
    queue key of its class (eq. 2 of Khosla et al. with ``A(i) = {k_i} ∪ queue``). This is exactly
    ``kcl_loss(..., loss_type="v1", posk >= max class count in the queue)``: KCL v1 with every
    same-class key chosen (tested in tests/losses/test_supcon.py).

    Args:
        q: L2-normalised queries. Shape: (batch, dim).
        k: L2-normalised keys of the other view. Shape: (batch, dim).
        queue: queued keys. Shape: (K, dim).
        queue_labels: class of each key, ``-1`` for an unfilled slot. Shape: (K,).
        labels: class of each query (``>= 0``). Shape: (batch,).
        temperature: T.

    Returns:
        The mean loss over the batch (scalar).
    """
    check_temperature("supcon_queue_loss", temperature)
    check_pair("supcon_queue_loss", q, k)
    check_keys("supcon_queue_loss", "queue", queue, q.shape[1], nonempty=True)
    check_labels("supcon_queue_loss", "labels", labels, q.shape[0])
    check_labels("supcon_queue_loss", "queue_labels", queue_labels, queue.shape[0])
    check_label_range("supcon_queue_loss", "labels", labels, None)
    q_t = q / temperature
    l_pos = (q_t * k).sum(dim=1)  # (B,)
    lse = torch.logaddexp(l_pos, queue_logsumexp(q_t, queue))  # (B,)
    sums, counts = same_class_sums(queue, queue_labels, labels)  # (B, dim), (B,)
    pos_sum = l_pos + (q_t * sums.to(q_t.dtype)).sum(dim=1)  # (B,)
    n_pos = (1 + counts).to(pos_sum.dtype)
    return (lse - pos_sum / n_pos).mean()
