"""Contrastive losses against a queue of keys: InfoNCE (MoCo) and k-positive contrastive (KCL).

- ``moco_loss``: InfoNCE of MoCo, He et al., "Momentum Contrast for Unsupervised Visual
  Representation Learning", CVPR 2020, https://arxiv.org/abs/1911.05722.
- ``kcl_loss``: k-positive contrastive learning of Kang et al., "Exploring Balanced Feature
  Spaces for Representation Learning", ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit.

Both are computed without a ``(B, 1 + K)`` concatenation and without any dense ``(B, K)`` mask:
the only ``(B, K)`` tensors are the negative logits ``q @ queue.T / T`` and their gradient. KCL
positives are picked from per-class position ranges of the label queue (a stable sort of the
label queue once per step), so the extra cost over MoCo is ``O(K log K + B * k^2)`` (plus, for
``loss_type="v2"``, the number of same-class keys in the queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from balfeat.errors import BalfeatError
from balfeat.losses.shapes import (
    check_keys,
    check_label_range,
    check_labels,
    check_pair,
    check_temperature,
)

LossType = Literal["v1", "v2", "sum"]
Selection = Literal["random", "queue_order"]

LOSS_TYPES: tuple[str, ...] = ("v1", "v2", "sum")
SELECTIONS: tuple[str, ...] = ("random", "queue_order")


def moco_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """InfoNCE loss of MoCo: each query's positive is its own key, the queue holds negatives.

    Equals ``cross_entropy(cat([q·k, q @ queue.T]) / T, 0)`` averaged over the batch
    (logits ``N x (1+K)``), computed as ``logaddexp(l_pos, logsumexp(l_neg)) - l_pos``.

    Args:
        q: L2-normalised queries. Shape: (batch, dim).
        k: L2-normalised keys of the other view, no gradient needed. Shape: (batch, dim).
        queue: negative keys. Shape: (K, dim).
        temperature: softmax temperature T.

    Returns:
        The mean loss over the batch (scalar).
    """
    check_temperature("moco_loss", temperature)
    check_pair("moco_loss", q, k)
    check_keys("moco_loss", "queue", queue, q.shape[1], nonempty=True)
    q_t = q / temperature
    l_pos = (q_t * k).sum(dim=1)  # (B,)
    lse = torch.logaddexp(l_pos, queue_logsumexp(q_t, queue))  # (B,)
    return (lse - l_pos).mean()


_NO_SHIFT_BOUND = 30.0  # exp(30) * 2**31 keys < float32 max; exp(-30) is a normal float32


class _QueueLogSumExp(torch.autograd.Function):
    """``logsumexp(q_t @ queue.T, dim=1)`` with one ``(B, K)`` buffer forward and one backward.

    Optionally the logits at ``zero_idx`` are replaced by 0 before the reduction, except those at
    ``keep_idx`` (KCL v2); their gradient is then 0 as well.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q_t: torch.Tensor,
        queue: torch.Tensor,
        zero_idx: tuple[torch.Tensor, torch.Tensor] | None,
        keep_idx: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        logits = q_t @ queue.to(q_t.dtype).t()  # (B, K)
        if zero_idx is not None:
            kept = logits[keep_idx] if keep_idx is not None else None
            logits.index_put_(zero_idx, logits.new_zeros(()))
            if keep_idx is not None and kept is not None:
                logits.index_put_(keep_idx, kept)
        # |logit| <= |q_t| * max |key|: when that bound is small, exp cannot overflow (nor the
        # sum of K terms underflow), so the max-subtraction passes over (B, K) are skipped.
        bound = q_t.detach().norm(dim=1).max() * queue.detach().norm(dim=1).max()
        if logits.dtype in (torch.float32, torch.float64) and float(bound) <= _NO_SHIFT_BOUND:
            row_max = logits.new_zeros(logits.shape[0], 1)
            probs = logits.exp_()  # unnormalised softmax, in place
        else:
            row_max = logits.amax(dim=1, keepdim=True)  # (B, 1)
            probs = logits.sub_(row_max).exp_()
        acc = torch.float32 if probs.dtype in (torch.float16, torch.bfloat16) else probs.dtype
        total = probs.sum(dim=1, keepdim=True, dtype=acc)  # (B, 1), no fp16 overflow
        ctx.save_for_backward(q_t, queue, probs, total)
        ctx.zero_idx, ctx.keep_idx = zero_idx, keep_idx
        ctx.consumed = False
        return (row_max.to(acc) + total.log()).squeeze(1).to(q_t.dtype)

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        if ctx.consumed:
            raise RuntimeError(
                "queue_logsumexp reuses its (B, K) buffer in backward and cannot be "
                "differentiated twice; recompute the loss instead of retain_graph=True"
            )
        ctx.consumed = True
        q_t, queue, probs, total = ctx.saved_tensors
        scale = (grad_out.to(total.dtype).unsqueeze(1) / total).to(probs.dtype)  # (B, 1)
        grad_logits = probs.mul_(scale)  # (B, K): softmax * upstream gradient, in place
        if ctx.zero_idx is not None:
            kept = grad_logits[ctx.keep_idx] if ctx.keep_idx is not None else None
            grad_logits.index_put_(ctx.zero_idx, grad_logits.new_zeros(()))
            if ctx.keep_idx is not None and kept is not None:
                grad_logits.index_put_(ctx.keep_idx, kept)
        grad_q = grad_logits @ queue.to(grad_logits.dtype) if ctx.needs_input_grad[0] else None
        grad_queue = (
            (grad_logits.t() @ q_t.to(grad_logits.dtype)).to(queue.dtype)
            if ctx.needs_input_grad[1]
            else None
        )
        return grad_q, grad_queue, None, None


def queue_logsumexp(
    q_t: torch.Tensor,
    queue: torch.Tensor,
    zero_idx: tuple[torch.Tensor, torch.Tensor] | None = None,
    keep_idx: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``logsumexp(q_t @ queue.T, dim=1)``, memory-lean (the logits buffer is reused in place).

    Args:
        q_t: queries already divided by the temperature. Shape: (B, dim).
        queue: keys. Shape: (K, dim).
        zero_idx: ``(rows, cols)`` of logits replaced by 0 (KCL v2), or None.
        keep_idx: ``(rows, cols)`` among ``zero_idx`` that keep their logit.

    Returns:
        Shape: (B,).
    """
    out: torch.Tensor = _QueueLogSumExp.apply(q_t, queue, zero_idx, keep_idx)
    return out


def class_blocks(
    labels: torch.Tensor, queue_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each query's class sits in the label queue.

    The label queue is stably sorted once; the keys of class ``c`` are then the queue positions
    ``order[start : start + count]`` in increasing queue index.

    Args:
        labels: class of each query, ``>= 0``. Shape: (batch,).
        queue_labels: class of each queued key, ``-1`` for a slot not filled yet. Shape: (K,).

    Returns:
        ``(order, start, count)``: ``order`` (K,) the stable argsort of ``queue_labels``;
        ``start`` and ``count`` (batch,) the first index into ``order`` and the number of queued
        keys of each query's class.
    """
    sorted_labels, order = torch.sort(queue_labels, stable=True)
    lab = labels.to(sorted_labels.dtype)
    start = torch.searchsorted(sorted_labels, lab, right=False)
    end = torch.searchsorted(sorted_labels, lab, right=True)
    return order, start, end - start


@dataclass(frozen=True)
class Positives:
    """The queue positives of a batch and the class blocks they were chosen from.

    Attributes:
        positions: chosen queue positions, ``-1`` = none, valid entries first. Shape: (B, P).
        order: stable argsort of the label queue. Shape: (K,).
        start: first index into ``order`` of each query's class. Shape: (B,).
        count: queued keys of each query's class. Shape: (B,).
    """

    positions: torch.Tensor
    order: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor


def select_positives(
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    posk: int,
    selection: Selection = "random",
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
) -> Positives:
    """Pick up to ``posk`` queue positions of each query's class (the one selection path).

    The label queue is sorted once (:func:`class_blocks`); the blocks are returned with the
    positions so that ``kcl_loss`` (``v2``) reuses them instead of sorting again.

    ``"queue_order"`` takes the first ``posk`` same-class positions in increasing queue index.
    ``"random"`` takes ``min(posk, count)`` distinct same-class positions uniformly at random
    (Floyd's sampling without replacement, vectorised over the batch: ``posk`` rounds of
    ``(batch, posk)`` work, no ``(batch, K)`` tensor).

    Args:
        labels: query classes (``>= 0``). Shape: (batch,).
        queue_labels: key classes, ``-1`` for empty slots. Shape: (K,).
        posk: the most queue positives per query (``k`` of KCL).
        selection: ``"random"`` or ``"queue_order"``.
        generator: random source for ``"random"`` (on the device of ``labels``).
        num_classes: C when the caller knows it: labels must then lie in ``[0, C)`` (checked
            in the same read that checks ``>= 0``); None: only ``>= 0``.

    Returns:
        :class:`Positives`: ``positions`` are queue positions, ``-1`` where a query has fewer
        than ``posk`` same-class keys, valid entries of a row first. Shape: (batch, posk), int64.
    """
    if selection not in SELECTIONS:
        raise BalfeatError(f"KCL selection {selection!r} is unknown; use one of {SELECTIONS}")
    if posk < 0:
        raise BalfeatError(f"KCL posk={posk} must be >= 0 (the paper uses 6)")
    check_labels("select_positives", "labels", labels, None)
    check_labels("select_positives", "queue_labels", queue_labels, None)
    check_label_range("select_positives", "labels", labels, num_classes)
    batch = labels.shape[0]
    device = labels.device
    order, start, count = class_blocks(labels, queue_labels)
    if posk == 0:
        return Positives(
            torch.empty(batch, 0, dtype=torch.long, device=device), order, start, count
        )
    n_chosen = count.clamp(max=posk)  # (B,)
    if selection == "queue_order":
        offsets = torch.arange(posk, device=device).expand(batch, posk)
    else:
        # Floyd: for j = n - k .. n - 1: t ~ U{0..j}; take t unless already taken, else j.
        # With k = min(posk, n) per row, round i uses j = n - posk + i; rounds with j < 0
        # (only when n < posk) are skipped, so a row with n <= posk takes all n positions.
        offsets = torch.full((batch, posk), -1, dtype=torch.long, device=device)
        u = torch.rand(batch, posk, generator=generator, device=device, dtype=torch.float64)
        for i in range(posk):
            j = count - posk + i  # (B,)
            active = j >= 0
            t = torch.minimum((u[:, i] * (j + 1).clamp(min=1)).long(), j.clamp(min=0))
            taken = (offsets[:, :i] == t.unsqueeze(1)).any(dim=1)
            pick = torch.where(taken, j, t)
            offsets[:, i] = torch.where(active, pick, offsets[:, i])
        # Move the valid offsets of each row to the front (stable), keeping draw order.
        valid_first = torch.argsort((offsets < 0).to(torch.int8), dim=1, stable=True)
        offsets = torch.gather(offsets, 1, valid_first)
    valid = torch.arange(posk, device=device).unsqueeze(0) < n_chosen.unsqueeze(1)
    if order.numel() == 0:
        none = torch.full((batch, posk), -1, dtype=torch.long, device=device)
        return Positives(none, order, start, count)
    idx = (start.unsqueeze(1) + offsets.clamp(min=0)).clamp(max=order.numel() - 1)
    positions = order[idx]
    chosen = torch.where(valid, positions, torch.full_like(positions, -1))
    return Positives(chosen, order, start, count)


def kcl_select_positives(
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    posk: int,
    selection: Selection = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The positions of :func:`select_positives` alone. Shape: (batch, posk), int64."""
    return select_positives(labels, queue_labels, posk, selection, generator).positions


def given_positives(
    positions: torch.Tensor, labels: torch.Tensor, queue_labels: torch.Tensor
) -> Positives:
    """Wrap positions chosen elsewhere (e.g. a test's own choice) with their class blocks.

    Args:
        positions: queue positions of each query's class, ``-1`` = none. Shape: (B, P).
        labels: query classes (``>= 0``). Shape: (B,).
        queue_labels: key classes, ``-1`` for empty slots. Shape: (K,).
    """
    check_labels("given_positives", "labels", labels, None)
    check_labels("given_positives", "queue_labels", queue_labels, None)
    if positions.dim() != 2 or positions.shape[0] != labels.shape[0]:
        raise BalfeatError(
            f"given_positives: positions must be ({labels.shape[0]}, P), one row per label, "
            f"got shape {tuple(positions.shape)}"
        )
    order, start, count = class_blocks(labels, queue_labels)
    return Positives(positions, order, start, count)


def kcl_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    positives: Positives,
    temperature: float = 0.07,
    loss_type: LossType = "v1",
) -> torch.Tensor:
    """K-positive contrastive loss (KCL) against a queue of labelled keys.

    Positives of query ``i`` are its own key and ``P_i``, the queue keys of its class chosen by
    :func:`select_positives` (this function never selects); a query whose class is
    not in the queue keeps only its own key. With logits ``l = [q·k, q @ queue.T] / T``:

    - ``"v1"`` (the paper): ``logsumexp(l) - mean_{p in {own} ∪ P_i} l_p``, i.e. cross-entropy
      against uniform soft labels on the positives; unchosen same-class keys stay negatives.
    - ``"v2"`` (reference ``losstype='v2'``): as v1, but the logits of the unchosen same-class
      keys are set to 0 (they stay in the denominator with value ``exp(0)``).
    - ``"sum"``: ``-log sum_{p} softmax(l)_p = logsumexp(l) - logsumexp_{p} l_p`` (the summed
      probability of all positives); unchosen same-class keys stay negatives.

    Args:
        q: L2-normalised queries. Shape: (batch, dim).
        k: L2-normalised keys of the other view. Shape: (batch, dim).
        queue: queued keys. Shape: (K, dim).
        positives: the selection (:func:`select_positives` / :func:`given_positives`); its
            ``positions`` have shape (batch, P) and its class blocks serve ``v2``.
        temperature: softmax temperature T (paper: 0.07).
        loss_type: ``"v1"``, ``"v2"`` or ``"sum"``.

    Returns:
        The mean loss over the batch (scalar).
    """
    if loss_type not in LOSS_TYPES:
        raise BalfeatError(f"KCL loss_type {loss_type!r} is unknown; use one of {LOSS_TYPES}")
    check_temperature("kcl_loss", temperature)
    terms = kcl_terms("kcl_loss", q, k, queue, positives, temperature, loss_type)
    if loss_type == "sum":
        neg_inf = torch.full_like(terms.l_qpos, float("-inf"))
        pos_all = torch.cat(
            [terms.l_pos.unsqueeze(1), torch.where(terms.valid, terms.l_qpos, neg_inf)], dim=1
        )
        return (terms.lse - torch.logsumexp(pos_all, dim=1)).mean()
    return (terms.lse - terms.pos_sum / terms.n_pos).mean()


@dataclass(frozen=True)
class KCLTerms:
    """The parts of KCL's loss for one batch, shared by ``kcl_loss`` and ``tsc_loss``.

    Attributes:
        q_t: queries divided by the temperature. Shape: (B, dim).
        lse: ``logsumexp`` of ``[q·k, q @ queue.T] / T`` (v2: unchosen same-class logits 0).
            Shape: (B,).
        l_pos: own-key logit ``q·k / T``. Shape: (B,).
        l_qpos: logits of the chosen queue positives (any value where not ``valid``).
            Shape: (B, P).
        valid: which entries of ``l_qpos`` are chosen positives. Shape: (B, P).
        pos_sum: sum of the positive logits, own key included. Shape: (B,).
        n_pos: number of positives, own key included, in ``q``'s dtype. Shape: (B,).
    """

    q_t: torch.Tensor
    lse: torch.Tensor
    l_pos: torch.Tensor
    l_qpos: torch.Tensor
    valid: torch.Tensor
    pos_sum: torch.Tensor
    n_pos: torch.Tensor


def kcl_terms(
    where: str,
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    positives: Positives,
    temperature: float,
    loss_type: LossType = "v1",
) -> KCLTerms:
    """KCL's logits against the own key, the queue and the chosen positives (no selection).

    Checks the shapes of ``q``, ``k``, ``queue`` and ``positives`` (naming ``where``); the
    temperature is checked by the caller.
    """
    check_pair(where, q, k)
    check_keys(where, "queue", queue, q.shape[1], nonempty=True)
    order, start, count = positives.order, positives.start, positives.count
    positives_idx = positives.positions
    batch = q.shape[0]
    if positives_idx.dim() != 2 or positives_idx.shape[0] != batch or start.shape[0] != batch:
        raise BalfeatError(
            f"{where}: positives were selected for {start.shape[0]} labels (positions "
            f"{tuple(positives_idx.shape)}) but q has {batch} rows; select them for this batch"
        )
    if order.shape[0] != queue.shape[0]:
        raise BalfeatError(
            f"{where}: positives were selected from {order.shape[0]} queue labels but the "
            f"queue holds {queue.shape[0]} keys; pass the queue's own labels (K,)"
        )
    q_t = q / temperature
    l_pos = (q_t * k).sum(dim=1)  # (B,)
    valid = positives_idx >= 0  # (B, P)
    pos_idx = positives_idx.clamp(min=0)
    # Positive queue logits from their keys directly: (B, P, D) work, no gather on the logits.
    l_qpos = (queue[pos_idx].to(q_t.dtype) * q_t.unsqueeze(1)).sum(dim=2)  # (B, P)
    zero_idx = keep_idx = None
    if loss_type == "v2":
        total = int(count.sum())
        if total > 0:
            # Every same-class logit is set to 0 except the chosen ones (kept).
            rows = torch.repeat_interleave(torch.arange(batch, device=q.device), count)
            first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
            within = torch.arange(total, device=q.device) - first
            cols = order[torch.repeat_interleave(start, count) + within]
            rows_c = torch.arange(batch, device=q.device).unsqueeze(1).expand_as(positives_idx)
            zero_idx, keep_idx = (rows, cols), (rows_c[valid], positives_idx[valid])
    lse_neg = queue_logsumexp(q_t, queue, zero_idx, keep_idx)  # (B,)
    lse = torch.logaddexp(l_pos, lse_neg)  # (B,)
    l_qpos_masked = torch.where(valid, l_qpos, l_qpos.new_zeros(()))
    n_pos = 1 + valid.sum(dim=1)
    pos_sum = l_pos + l_qpos_masked.sum(dim=1)
    return KCLTerms(q_t, lse, l_pos, l_qpos, valid, pos_sum, n_pos.to(q_t.dtype))
