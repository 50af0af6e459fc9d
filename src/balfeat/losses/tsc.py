"""Targeted supervised contrastive learning (TSC): KCL plus per-class targets on the hypersphere.

Li et al., "Targeted Supervised Contrastive Learning for Long-Tailed Recognition", CVPR 2022,
https://arxiv.org/abs/2111.13998. Three parts:

1. ``uniform_targets``: ``C`` unit vectors spread on ``S^{d-1}``, computed once by Adam on the
   uniformity energy ``mean_a log sum_b exp(u_a·u_b / t)`` (``t = 0.07``, self term included, as in
   the authors' generator ``target_generation.py``: C=1000, d=128, lr 1e-3, 10,000 steps, best
   iterate kept), seeded, saved with ``save_targets`` / read with ``load_targets`` (a ``.pt``
   tensor, or a ``.npy`` array). The authors' *training* code does not run that generator: it
   loads the committed ``optimal_1000_128_analytical.npy`` (``moco/builder.py:192``), which is
   less spread than balfeat's targets (largest pairwise cosine 0.232 against 0.131 for
   ``uniform_targets(1000, 128)``); ``method.targets_file`` loads such a file.
2. ``assign_targets`` (``balfeat.losses.matching``): classes -> targets by the one-to-one
   matching that maximises the summed cosine similarity of class centres and targets
   (``scipy.optimize.linear_sum_assignment``, as the authors; exact). The authors' centres are
   an EMA of the batch class means of the normalised queries (``0.9 old + 0.1 batch``,
   renormalised), re-matched every step; that state belongs to the phase-2 method module.
3. ``tsc_loss``: KCL whose denominator also holds every target, with the class's target as one
   extra positive weighted ``λ`` (authors' ``--tw``, 0.2 in their ImageNet-LT command):
   ``L_i = [ sum_{p in {k_i} ∪ P_i} (lse_i - l_ip) + λ (lse_i - u_{y_i}·q_i/T) ] / (|P_i| + 2)``,
   i.e. the target counts as one positive in the mean (the normalisation of the authors' released
   loss with ``--sep_t --tr 1``; the paper's Sec. 3 equation was not re-read in this phase).

Checked against the authors' ``KCL.forward`` (github:LTH14/targeted-supcon, ``moco/builder.py``,
run on CPU with ``targeted``, ``sep_t``, ``tr = 1`` and their k-round positive sampling re-run
with the same seed, the same class -> target assignment given to both): ``tsc_loss`` and, with
``targeted`` off, ``kcl_loss(loss_type="v1")`` equal theirs in loss and query gradient to 3e-15
in fp64 (k = 1, 3 and every positive; empty queue slots; a class absent from the queue).
Their sampling (k rounds, each one key uniformly among the row's remaining same-class keys)
draws a uniform k-subset, the distribution of balfeat's ``selection="random"``.

Where the authors' KCL re-implementation (github:LTH14/targeted-supcon, ``moco/builder.py``)
differs from ``balfeat.losses.contrastive.kcl_loss``: it draws the k positives by repeated
sampling from a dense ``(B, K)`` mask (same distribution as ours, without replacement); it takes
``log`` of an L1-normalised ``exp(logits)`` without max subtraction (can overflow in fp16; ours
is a stable logsumexp); unchosen same-class keys stay negatives (= our ``loss_type="v1"``); the
initial queue is random unit vectors labelled -1 that count as negatives until overwritten (as in
balfeat without prefill); queue enqueue happens after the loss (current batch's keys are not in
the queue), like ours. With ``targeted`` but not ``sep_t`` their targets can be sampled as KCL
positives; we follow the ``sep_t`` variant that their README uses.
"""

from __future__ import annotations

import os

import torch

from balfeat.errors import BalfeatError
from balfeat.losses.contrastive import Positives, kcl_terms
from balfeat.losses.matching import assign_targets, hungarian, linear_assignment
from balfeat.losses.shapes import (
    check_keys,
    check_label_range,
    check_labels,
    check_temperature,
)

__all__ = [
    "assign_targets",
    "hungarian",
    "linear_assignment",
    "load_targets",
    "save_targets",
    "tsc_loss",
    "uniform_targets",
]


def uniform_targets(
    num_classes: int,
    dim: int,
    steps: int = 2000,
    lr: float = 0.01,
    seed: int = 0,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Spread ``num_classes`` unit vectors on the sphere (float64, CPU, deterministic).

    The energy is the authors' (``target_generation.py``: ``log sum_b exp(u_a·u_b / t)`` with the
    self term, mean over ``a``, ``t = 0.07``, best iterate kept); their optimiser runs 10,000 Adam
    steps at lr 1e-3 from ``randn``, the defaults here run 2,000 at lr 0.01 (same minimiser
    family, 5x fewer steps; pass ``steps=10000, lr=1e-3`` for their schedule).

    Args:
        num_classes: C.
        dim: feature dimension d.
        steps: optimisation steps.
        lr: step size (Adam).
        seed: random start.
        temperature: t of the energy ``mean_a logsumexp_b u_a·u_b / t`` (authors: 0.07; the
            default was 0.1 before the parity check).

    Returns:
        Unit targets. Shape: (C, dim), float64.
    """
    if num_classes < 2 or dim < 2:
        raise BalfeatError(f"TSC targets need C >= 2 and dim >= 2 (got {num_classes}, {dim})")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(num_classes, dim, generator=g, dtype=torch.float64).requires_grad_()
    opt = torch.optim.Adam([u], lr=lr)
    best: tuple[float, torch.Tensor] | None = None
    for _ in range(steps):
        v = torch.nn.functional.normalize(u, dim=1)
        energy = torch.logsumexp(v @ v.t() / temperature, dim=1).mean()
        value = float(energy.detach())
        if best is None or value < best[0]:
            best = (value, v.detach().clone())
        opt.zero_grad()
        energy.backward()
        opt.step()
    assert best is not None
    return best[1]


def save_targets(path: str | os.PathLike[str], targets: torch.Tensor) -> None:
    """Save targets (a plain tensor) with ``torch.save``, atomically."""
    from balfeat.atomic import atomic_write_bytes

    tensor = targets.detach().cpu()
    atomic_write_bytes(path, lambda fh: torch.save(tensor, fh))


def load_targets(path: str | os.PathLike[str], num_classes: int, dim: int) -> torch.Tensor:
    """Load targets saved by :func:`save_targets`, or a NumPy ``.npy`` array such as the TSC
    authors' committed ``optimal_1000_128_analytical.npy`` (which their training code loads,
    ``moco/builder.py:192``), checking their shape (C, dim). Used as stored (not renormalised).

    Raises:
        BalfeatError: a missing or unreadable file, or another shape.
    """
    if not os.path.isfile(path):
        raise BalfeatError(f"TSC targets file {str(path)!r} does not exist; check the path")
    t: object
    if str(path).endswith(".npy"):
        import numpy as np

        t = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        t = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != (num_classes, dim):
        raise BalfeatError(
            f"{path}: TSC targets of shape ({num_classes}, {dim}) (classes x method.dim) "
            f"expected, got {getattr(t, 'shape', type(t))}; use a file made for this class "
            "count, or leave method.targets_file empty (balfeat computes them, uniform_targets)"
        )
    return t


def tsc_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    positives: Positives,
    labels: torch.Tensor,
    class_targets: torch.Tensor,
    *,
    temperature: float = 0.1,
    target_weight: float = 1.0,
) -> torch.Tensor:
    """KCL (v1) with the targets in every denominator and the class target as a λ-weighted positive.

    The KCL part is ``kcl_loss``'s own computation (:func:`~balfeat.losses.contrastive.kcl_terms`);
    the positives are chosen by the caller (:func:`~balfeat.losses.contrastive.select_positives`,
    as TSC's method does each step), never here.

    Args:
        q: normalised queries. Shape: (B, dim).
        k: normalised keys. Shape: (B, dim).
        queue: Shape: (K, dim), K >= 1.
        positives: the queue positives of this batch (``select_positives(labels, queue_labels,
            posk, ...)``). Its ``positions`` Shape: (B, P).
        labels: class of each query, in ``[0, C)``. Shape: (B,).
        class_targets: the target of each class, already permuted by the assignment
            (``targets[assignment]``). Shape: (C, dim).
        temperature: T.
        target_weight: λ.

    Returns:
        Scalar mean loss.
    """
    check_temperature("tsc_loss", temperature)
    check_labels("tsc_loss", "labels", labels, q.shape[0])
    check_keys("tsc_loss", "class_targets", class_targets, q.shape[1])
    check_label_range("tsc_loss", "labels", labels, class_targets.shape[0])
    terms = kcl_terms("tsc_loss", q, k, queue, positives, temperature)
    t_logits = terms.q_t @ class_targets.to(terms.q_t.dtype).t()  # (B, C)
    lse = torch.logaddexp(terms.lse, torch.logsumexp(t_logits, dim=1))  # (B,)
    l_t = t_logits.gather(1, labels.long().unsqueeze(1)).squeeze(1)  # (B,)
    n_pos = terms.n_pos  # own key + chosen queue keys
    per = (n_pos * lse - terms.pos_sum + target_weight * (lse - l_t)) / (n_pos + 1)
    return per.mean()
