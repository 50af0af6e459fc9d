"""TSC: KCL plus class targets spread uniformly on the hypersphere.

Li et al., "Targeted Supervised Contrastive Learning for Long-Tailed Recognition", CVPR 2022,
https://arxiv.org/abs/2111.13998 (equations and the comparison with the authors' KCL are in
``balfeat.losses.tsc``). State kept by the method (all buffers, so a checkpoint resumes exactly):

- ``targets`` (C, dim): ``uniform_targets(C, dim, steps=target_steps, seed=seed)`` computed once
  at build time (deterministic, float64 optimisation stored as float32);
- ``centres`` (C, dim): per-class EMA of the batch class means of the normalised queries
  (``normalise(0.9·old + 0.1·batch mean)`` for the classes of the batch, gathered over ranks), as
  in the authors' code;
- ``assignment`` (C,): class -> target index, the matching of centres to targets
  (``scipy.optimize.linear_sum_assignment``, as the authors), recomputed every ``rematch_every``
  steps; the default 1 is the authors' rate (cost: ``benchmarks/bench_tsc_matching.py``);
- warm-up: the first ``target_warmup_steps`` steps train plain KCL (centres already tracked).

Differences from the authors' ``moco/builder.py`` / ``main_moco_supcon_imba.py`` (the loss itself
is equal, see ``balfeat.losses.tsc``): (1) they update the centres with the current batch's
queries *before* matching and computing that step's loss, and re-match every step; here the
update of a step's batch happens in ``after_step`` (the matching of step t sees the batches up
to t-1) and matching runs every ``rematch_every`` steps. (2) Their centres start as random unit
vectors and are not updated during the KCL warm-up (the update sits in the targeted branch), so
the first matchings mostly follow that random start; here they start at 0 and are tracked from
the first step. (3) Their warm-up is ``epochs // 2`` epochs, after which the optimizer is
re-created and the learning-rate schedule restarts for the TSC half; here the warm-up is a
number of steps inside one schedule. (4) Only their ``--sep_t --tr 1`` variant (their README's
command) is implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from balfeat import distributed
from balfeat.errors import BalfeatError
from balfeat.losses.contrastive import select_positives
from balfeat.losses.shapes import check_label_range
from balfeat.losses.supcon import class_sums
from balfeat.losses.tsc import assign_targets, load_targets, tsc_loss, uniform_targets
from balfeat.methods.base import from_constructor, register
from balfeat.methods.kcl import KCL
from balfeat.methods.params import PositivesParams
from balfeat.models.backbones import Backbone
from balfeat.typed_config import bounds, path_kind


@dataclass
class TSCParams(PositivesParams):
    """``tsc``: the ``method`` section of TSC (Li et al. 2022, Eq. 4-6): KCL plus class targets.

    KCL's fields (``posk``, ``selection``; no ``loss_type``: always ``v1``, as the authors) with
    an MLP head, and:

    Attributes:
        target_weight: ``λ``, weight of the class-target positive (authors: 0.2).
        rematch_every: steps between two Hungarian matchings of class centres to targets.
        target_warmup_steps: steps of plain KCL before the target term is switched on.
        target_steps: optimisation steps of the uniform targets (computed at build time).
        targets_file: a ``.npy`` (or ``save_targets`` ``.pt``) file of (C, dim) targets to use
            instead of computing them, e.g. the authors' ``optimal_1000_128_analytical.npy``
            (github:LTH14/targeted-supcon; their training code loads it,
            ``moco/builder.py:192``). You supply the file; balfeat never downloads it.
            ``""``: balfeat's own (``uniform_targets``, ``target_steps``).
    """

    name: str = "tsc"
    mlp: bool = True
    target_weight: float = field(default=0.2, metadata=bounds(ge=0))
    rematch_every: int = field(default=1, metadata=bounds(ge=1))  # authors: every step
    target_warmup_steps: int = field(default=0, metadata=bounds(ge=0))
    target_steps: int = field(default=2000, metadata=bounds(ge=1))
    targets_file: str = field(default="", metadata=path_kind("file"))


class TSC(KCL):
    """KCL with a λ-weighted class target as an extra positive and all targets as negatives.

    Args:
        backbone, backbone_k, seed: as ``KCL``.
        num_classes: C, the number of targets.
        params: the settings (:class:`TSCParams`: KCL's plus ``target_weight`` (``λ``, the
            authors' ``--tw``), ``rematch_every``, ``target_warmup_steps``, ``target_steps``,
            ``targets_file``); or pass them as keyword arguments.
        targets: precomputed unit targets (C, dim) instead of computing them or reading
            ``targets_file`` (e.g. loaded with ``balfeat.losses.tsc.load_targets``).

    ``forward`` returns ``{"loss", "positives", "target_cos"}`` (``target_cos``: mean cosine of
    the queries to their class's assigned target).
    """

    params_type = TSCParams
    params: TSCParams
    step: torch.Tensor
    targets: torch.Tensor
    centres: torch.Tensor
    assignment: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        params: TSCParams | None = None,
        backbone_k: Backbone | None = None,
        seed: int = 0,
        targets: torch.Tensor | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(backbone, params=params, backbone_k=backbone_k, seed=seed, **overrides)
        p, dim = self.params, self.params.dim
        if targets is None and p.targets_file:
            targets = load_targets(p.targets_file, num_classes, dim)
        if targets is None:
            targets = uniform_targets(num_classes, dim, steps=p.target_steps, seed=seed)
        if tuple(targets.shape) != (num_classes, dim):
            raise BalfeatError(
                f"TSC targets have shape {tuple(targets.shape)}, expected ({num_classes}, {dim})"
            )
        self.register_buffer("targets", targets.float().clone())
        self.register_buffer("centres", torch.zeros(num_classes, dim))
        self.register_buffer("assignment", torch.arange(num_classes))
        self.num_classes = num_classes
        self.target_weight = p.target_weight
        self.rematch_every = p.rematch_every
        self.target_warmup_steps = p.target_warmup_steps
        self._pending_centres: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def rematch(self) -> None:
        """Re-assign targets to classes (Hungarian matching of ``centres`` to ``targets``)."""
        self.assignment.copy_(assign_targets(self.centres, self.targets).to(self.assignment))

    def forward(
        self, images: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """KCL (warm-up) or TSC loss of ``[view_q, view_k]`` (each (B, C, H, W)), labels (B,)."""
        self._check_views(images, labels)
        check_label_range("TSC", "labels", labels, self.num_classes)  # also during warm-up
        step = int(self.step)
        if (
            self.training
            and step >= self.target_warmup_steps
            and (step - self.target_warmup_steps) % self.rematch_every == 0
        ):
            self.rematch()
        return super().forward(images, labels)

    def compute_loss(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """KCL during warm-up, then KCL + targets; also stages the centre update."""
        class_targets = self.targets[self.assignment]  # (C, dim)
        if int(self.step) < self.target_warmup_steps:
            out = super().compute_loss(q, k, labels)
        else:
            gen = self._device_generator(q.device, 2 + distributed.rank())
            positives = select_positives(  # TSC selects; the loss only computes
                labels,
                self.queue.labels,
                self.posk,
                self.selection,
                gen,
                num_classes=self.num_classes,
            )
            loss = tsc_loss(
                q,
                k,
                self.queue.keys,
                positives,
                labels,
                class_targets,
                temperature=self.T,
                target_weight=self.target_weight,
            )
            out = {"loss": loss}
        with torch.no_grad():
            out["target_cos"] = (q.detach() * class_targets[labels]).sum(1).mean()
            if self.training:
                self._pending_centres = (
                    distributed.all_gather_concat(q.detach()),
                    distributed.all_gather_concat(labels),
                )
        return out

    @torch.no_grad()
    def after_step(self) -> None:
        """MoCo's update, then the EMA of the class centres with the last batch's queries."""
        super().after_step()
        if self._pending_centres is not None:
            q, labels = self._pending_centres
            sums, counts = class_sums(q, labels, self.num_classes)
            seen = counts > 0
            mean = sums[seen] / counts[seen].unsqueeze(1).to(sums.dtype)
            self.centres[seen] = F.normalize(0.9 * self.centres[seen] + 0.1 * mean, dim=1)
            self._pending_centres = None


register("tsc", views=2, params=TSCParams, label="TSC")(from_constructor(TSC))
