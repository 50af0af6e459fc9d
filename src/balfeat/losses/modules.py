"""The losses as ``nn.Module`` s for a training loop of your own (in the style of lightly's).

Each module checks its settings in ``__init__`` and only computes in ``forward``. What they share:

- **Inputs are normalised inside**: ``q`` and ``k`` (and BCL's prototypes) go through
  ``F.normalize(x, dim=1)``, so pass the raw outputs of your projection head. The values then
  equal the functional losses of :mod:`balfeat.losses` on normalised inputs (tested).
- **A module with a queue owns it** as buffers (``queue`` (K, dim), ``queue_labels`` (K,) with
  -1 for a slot not filled yet, ``queue_ptr`` (1,)), so ``state_dict()`` checkpoints it and
  ``load_state_dict`` resumes it. In training mode ``forward`` computes the loss against the queue
  as it was, then enqueues this batch's keys (detached; gathered over ranks under
  ``torch.distributed``); in eval mode the queue is left alone. The queue starts as random unit
  keys labelled -1 (negatives until overwritten), as MoCo's.
- **Random positive selection** (KCL, TSC) draws from a generator seeded by ``(seed, steps)``,
  with ``steps`` a buffer, so a resumed module draws what the uninterrupted one would.

``forward(q, k, labels)`` returns the scalar loss; PaCo also takes the classifier's logits and
BCL the class prototypes (see each class).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from balfeat import distributed
from balfeat.errors import BalfeatError
from balfeat.losses.bcl import bcl_loss
from balfeat.losses.contrastive import LOSS_TYPES, SELECTIONS, kcl_loss, select_positives
from balfeat.losses.matching import assign_targets
from balfeat.losses.paco import paco_loss
from balfeat.losses.shapes import check_temperature
from balfeat.losses.supcon import supcon_loss, supcon_queue_loss
from balfeat.losses.tsc import tsc_loss


def _whole(where: str, name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BalfeatError(f"{where}: {name} must be an integer >= {low}, got {value!r}")


def _weight(where: str, name: str, value: float, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise BalfeatError(f"{where}: {name} must be a finite number {bound}, got {value!r}")


class _LabelledQueue(nn.Module):
    """Buffers of a FIFO queue of unit keys and their labels, and its enqueue step."""

    queue: torch.Tensor
    queue_labels: torch.Tensor
    queue_ptr: torch.Tensor
    steps: torch.Tensor

    def __init__(self, where: str, queue_size: int, dim: int, seed: int) -> None:
        super().__init__()
        _whole(where, "queue_size", queue_size, 1)
        _whole(where, "dim", dim, 1)
        _whole(where, "seed", seed, 0)
        start = torch.randn(queue_size, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("queue", F.normalize(start, dim=1))
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("steps", torch.zeros(1, dtype=torch.long))
        self.seed = seed

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        salt = self.seed * 1_000_003 + int(self.steps) * 7919 + distributed.rank()
        return gen.manual_seed(salt % (2**63 - 1))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Write normalised ``keys`` (n, dim) and ``labels`` (n,) over the oldest slots.

        The pointer moves on the device (no synchronisation); with ``n > K`` the last K stay.
        """
        self._write(F.normalize(keys.detach(), dim=1), labels)

    @torch.no_grad()
    def _write(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys.detach()[-size:]
        labels = labels.detach()[-size:]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue.index_copy_(0, slots, keys.to(self.queue.dtype))
        self.queue_labels.index_copy_(0, slots, labels.to(torch.long))
        self.queue_ptr.add_(keys.shape[0]).remainder_(size)

    def _keys(self) -> torch.Tensor:
        """The queue as the loss sees it: a copy, since ``forward`` overwrites the buffer
        before ``backward`` needs the keys (lightly's memory bank hands out a copy too)."""
        return self.queue.clone() if self.training else self.queue

    def _after(self, k: torch.Tensor, labels: torch.Tensor) -> None:
        """In training mode: enqueue the batch's keys (all ranks') and count the step."""
        if self.training:
            self._write(
                distributed.all_gather_concat(k.detach()), distributed.all_gather_concat(labels)
            )
            self.steps.add_(1)


class KCLLoss(_LabelledQueue):
    """K-positive contrastive loss with its labelled key queue (Kang et al., ICLR 2021).

    https://openreview.net/forum?id=OqtLIabPTit; see :func:`balfeat.losses.kcl_loss`.

    Args:
        queue_size: K, the queued keys (paper: 65536).
        dim: feature size of ``q`` and ``k``.
        posk: the most same-class queue keys taken as positives per query (paper: 6).
        temperature: T (paper: 0.07).
        loss_type: ``"v1"`` (paper), ``"v2"`` or ``"sum"``.
        selection: ``"random"`` or ``"queue_order"``.
        num_classes: C when known: labels must then lie in ``[0, C)``; None: only ``>= 0``.
        seed: initial queue and random selection.

    ``forward(q, k, labels)``: q, k Shape: (B, dim), any norm; labels Shape: (B,).
    """

    def __init__(
        self,
        queue_size: int = 65536,
        dim: int = 128,
        *,
        posk: int = 6,
        temperature: float = 0.07,
        loss_type: str = "v1",
        selection: str = "random",
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("KCLLoss", queue_size, dim, seed)
        check_temperature("KCLLoss", temperature)
        _whole("KCLLoss", "posk", posk, 0)
        if posk > queue_size:
            raise BalfeatError(f"KCLLoss: posk={posk} exceeds queue_size={queue_size}")
        if loss_type not in LOSS_TYPES or selection not in SELECTIONS:
            raise BalfeatError(
                f"KCLLoss: loss_type {loss_type!r} / selection {selection!r}: use one of "
                f"{LOSS_TYPES} / {SELECTIONS}"
            )
        if num_classes is not None:
            _whole("KCLLoss", "num_classes", num_classes, 1)
        self.posk, self.temperature, self.num_classes = posk, temperature, num_classes
        self.loss_type, self.selection = loss_type, selection

    def forward(self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean KCL loss of the batch against the queue (scalar)."""
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        positives = select_positives(
            labels,
            self.queue_labels,
            self.posk,
            self.selection,  # type: ignore[arg-type]
            self._generator(labels.device),
            num_classes=self.num_classes,
        )
        loss = kcl_loss(q, k, self._keys(), positives, self.temperature, self.loss_type)  # type: ignore[arg-type]
        self._after(k, labels)
        return loss


class SupConQueueLoss(_LabelledQueue):
    """SupCon against a labelled key queue (Khosla et al., https://arxiv.org/abs/2004.11362).

    Every queued key of the query's class is a positive; see
    :func:`balfeat.losses.supcon.supcon_queue_loss`.

    Args:
        queue_size: K.
        dim: feature size.
        temperature: T (0.07).
        seed: initial queue.

    ``forward(q, k, labels)``: q, k Shape: (B, dim), any norm; labels Shape: (B,), ``>= 0``.
    """

    def __init__(
        self, queue_size: int = 65536, dim: int = 128, *, temperature: float = 0.07, seed: int = 0
    ) -> None:
        super().__init__("SupConQueueLoss", queue_size, dim, seed)
        check_temperature("SupConQueueLoss", temperature)
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean SupCon loss of the batch against ``[k, queue]`` (scalar)."""
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        loss = supcon_queue_loss(q, k, self._keys(), self.queue_labels, labels, self.temperature)
        self._after(k, labels)
        return loss


class TSCLoss(_LabelledQueue):
    """Targeted supervised contrastive loss (Li et al., https://arxiv.org/abs/2111.13998).

    Holds the class targets (buffer ``targets`` (C, dim), e.g. from
    :func:`balfeat.losses.tsc.uniform_targets`) and the class -> target ``assignment`` (C,),
    identity until :meth:`match` is given class centres; see :func:`balfeat.losses.tsc.tsc_loss`.

    Args:
        targets: unit targets, one per class. Shape: (C, dim).
        queue_size: K.
        posk: KCL's k (6).
        temperature: T (authors: 0.07).
        target_weight: λ of the target positive (authors: 0.2).
        selection: ``"random"`` or ``"queue_order"``.
        seed: initial queue and random selection.

    ``forward(q, k, labels)``: q, k Shape: (B, dim), any norm; labels Shape: (B,) in ``[0, C)``.
    """

    targets: torch.Tensor
    assignment: torch.Tensor

    def __init__(
        self,
        targets: torch.Tensor,
        queue_size: int = 65536,
        *,
        posk: int = 6,
        temperature: float = 0.07,
        target_weight: float = 0.2,
        selection: str = "random",
        seed: int = 0,
    ) -> None:
        if not isinstance(targets, torch.Tensor) or targets.dim() != 2 or targets.shape[0] < 2:
            raise BalfeatError("TSCLoss: targets must be a (C, dim) tensor with C >= 2 classes")
        super().__init__("TSCLoss", queue_size, targets.shape[1], seed)
        check_temperature("TSCLoss", temperature)
        _whole("TSCLoss", "posk", posk, 0)
        _weight("TSCLoss", "target_weight", target_weight)
        if selection not in SELECTIONS:
            raise BalfeatError(f"TSCLoss: selection {selection!r}: use one of {SELECTIONS}")
        self.register_buffer("targets", F.normalize(targets.detach().float(), dim=1))
        self.register_buffer("assignment", torch.arange(targets.shape[0]))
        self.posk, self.temperature, self.target_weight = posk, temperature, target_weight
        self.selection = selection

    @torch.no_grad()
    def match(self, centres: torch.Tensor) -> None:
        """Re-assign targets to classes from class centres (C, dim): the summed cosine's best."""
        self.assignment.copy_(assign_targets(centres, self.targets).to(self.assignment))

    def forward(self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean TSC loss of the batch (scalar)."""
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        num_classes = self.targets.shape[0]
        positives = select_positives(
            labels,
            self.queue_labels,
            self.posk,
            self.selection,  # type: ignore[arg-type]
            self._generator(labels.device),
            num_classes=num_classes,
        )
        class_targets = self.targets[self.assignment]
        loss = tsc_loss(
            q, k, self._keys(), positives, labels, class_targets,
            temperature=self.temperature, target_weight=self.target_weight,
        )  # fmt: skip
        self._after(k, labels)
        return loss


class PaCoLoss(_LabelledQueue):
    """Parametric contrastive loss with its labelled queue (Cui et al., arXiv:2107.12028).

    https://arxiv.org/abs/2107.12028; see :func:`balfeat.losses.paco.paco_loss` (in-batch
    contrast as the authors). The class prior for the logit adjustment is a buffer
    ``log_prior`` (C,), uniform unless ``class_counts`` are given.

    Args:
        num_classes: C.
        queue_size: K (authors: 8192).
        dim: feature size.
        alpha, beta, gamma: the weights of ``paco_loss`` (0.05, 1, 1).
        temperature: T (authors: 0.2).
        class_counts: training images per class, for ``log_prior``; None: uniform.
        seed: initial queue.

    ``forward(q, k, labels, logits)``: q, k Shape: (B, dim), any norm; labels Shape: (B,) in
    ``[0, C)``; logits: your classifier's logits of the query images, Shape: (B, C).
    """

    log_prior: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        queue_size: int = 8192,
        dim: int = 128,
        *,
        alpha: float = 0.05,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 0.2,
        class_counts: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("PaCoLoss", queue_size, dim, seed)
        _whole("PaCoLoss", "num_classes", num_classes, 1)
        check_temperature("PaCoLoss", temperature)
        _weight("PaCoLoss", "alpha", alpha)
        _weight("PaCoLoss", "beta", beta)
        _weight("PaCoLoss", "gamma", gamma, positive=True)
        counts = torch.ones(num_classes) if class_counts is None else class_counts.double()
        if counts.shape != (num_classes,) or not bool((counts > 0).all()):
            raise BalfeatError(f"PaCoLoss: class_counts must be ({num_classes},) values > 0")
        self.register_buffer("log_prior", (counts / counts.sum()).log().float())
        self.num_classes, self.temperature = num_classes, temperature
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        """The mean PaCo loss of the batch (scalar)."""
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        loss = paco_loss(
            q, k, labels, self._keys(), self.queue_labels, logits, self.log_prior,
            alpha=self.alpha, beta=self.beta, gamma=self.gamma, temperature=self.temperature,
        )  # fmt: skip
        self._after(k, labels)
        return loss


class SupConLoss(nn.Module):
    """In-batch SupCon over two views (Khosla et al., https://arxiv.org/abs/2004.11362).

    Args:
        temperature: T (0.07).
        base_temperature: scale the loss by ``T / T_base`` as the authors' code; None: no scale.

    ``forward(q, k, labels)``: the two views' features, Shape: (B, dim) each, any norm; labels
    Shape: (B,), ``>= 0`` (any values: memory does not grow with them).
    """

    def __init__(self, *, temperature: float = 0.07, base_temperature: float | None = None) -> None:
        super().__init__()
        check_temperature("SupConLoss", temperature)
        if base_temperature is not None:
            check_temperature("SupConLoss", base_temperature, "base_temperature")
        self.temperature, self.base_temperature = temperature, base_temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean loss over the 2B anchors of ``cat([q, k])`` (scalar)."""
        features = F.normalize(torch.cat([q, k.to(q.dtype)]), dim=1)
        return supcon_loss(
            features, torch.cat([labels, labels]), self.temperature, self.base_temperature
        )


class BCLLoss(nn.Module):
    """Balanced contrastive loss over two views (Zhu et al., https://arxiv.org/abs/2207.09052).

    The contrastive part of BCL (:func:`balfeat.losses.bcl.bcl_loss`); add the logit-adjusted
    cross-entropy of your classifier (:func:`balfeat.losses.bcl.logit_adjusted_ce`) yourself.

    Args:
        num_classes: C, the number of prototypes.
        temperature: T (authors: 0.07).

    ``forward(q, k, labels, prototypes)``: the two views' features Shape: (B, dim) each, any
    norm; labels Shape: (B,) in ``[0, C)``; prototypes, one per class (e.g. your classifier's
    weights through a projection), any norm, Shape: (C, dim).
    """

    def __init__(self, num_classes: int, *, temperature: float = 0.07) -> None:
        super().__init__()
        _whole("BCLLoss", "num_classes", num_classes, 1)
        check_temperature("BCLLoss", temperature)
        self.num_classes, self.temperature = num_classes, temperature

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor
    ) -> torch.Tensor:
        """The mean BCL loss over the 2B anchors (scalar)."""
        if prototypes.dim() != 2 or prototypes.shape[0] != self.num_classes:
            raise BalfeatError(
                f"BCLLoss: prototypes must be ({self.num_classes}, dim), one per class, got "
                f"{tuple(prototypes.shape)}"
            )
        features = F.normalize(torch.cat([q, k.to(q.dtype)]), dim=1)
        return bcl_loss(
            features, torch.cat([labels, labels]), F.normalize(prototypes, dim=1), self.temperature
        )
