"""PaCo (MoCo queue + learnable class centres) and GPaCo (no momentum encoder).

- PaCo: Cui et al., "Parametric Contrastive Learning", ICCV 2021, https://arxiv.org/abs/2107.12028.
- GPaCo: Cui et al., "Generalized Parametric Contrastive Learning", TPAMI 2023,
  https://arxiv.org/abs/2209.12400.

The class centres are a linear classifier ``fc`` on the backbone feature of the query: its
logits, logit-adjusted with ``log π`` of the training class counts, are the centre logits of
``balfeat.losses.paco.paco_loss`` (which holds the equations and the rebalancing weight ``α``).
``classify(images)`` returns the raw ``fc`` logits (no prior added: the adjustment during
training makes them balanced predictions), so the probe can evaluate PaCo "with its own
classifier". The class prior reaches the method through ``set_class_counts(counts)``, which the
trainer calls after building any method that has it (buffer ``log_prior``, uniform until set).

Compared with the authors' code (github:dvlab-research/Parametric-Contrastive-Learning,
``PaCo/LT/moco/builder.py``, ``PaCo/LT/losses.py``, ``PaCo/LT/paco_lt.py``), checked on identical
inputs in fp64: the loss and its gradients are equal (loss ≤ 3e-10, gradients ≤ 8e-10, from their
``+1e-12`` inside the log; 3e-15 without it). The same: anchors are the queries only, contrasted
with ``[q, k, queue]`` minus the anchor itself (``in_batch=True``); the keys of the step are
enqueued after it; the centre logits are a linear layer on the backbone feature (their ``linear``
on the pooled feature, not normalised by default), plus ``log π``, divided by ``supt = 1``; the
loss is scaled by ``T / T_base = 1``; evaluation uses the raw ``fc`` logits. Differences: their
prior is ``log(π + 1e-9)`` (here ``log π``, a class without images counted as one image: a
difference ≤ 1e-9/π). Their queue starts as random keys with random class labels, as here
(``queue_labels=random``; ``empty`` labels them -1, ``method.prefill=always`` fills it with real
keys first). Their in-batch contrast set is each GPU's own batch (``contrast=per_rank``, the
default; ``global`` contrasts every process's batch). Their MLP head is
``Linear(F, F)-BatchNorm1d(F)-ReLU-Linear(F, dim)`` (``PaCo/LT/moco/builder.py:48-51``, ``F`` the
backbone feature size, query and key encoder alike): ``head_bn=True`` builds it (the recipes set
it; the default False keeps the BN-free MoCo v2 head of earlier configs and checkpoints).

The own classifier trains slowly by design: ``fc`` gets only the centre's share
``β / (β + α|P(i)|)`` of each anchor's pull-up (``|P(i)|`` = same-class keys in batch and queue)
and a push-down ``∝ exp(s_c) / denominator``, where the denominator is dominated by the
contrastive terms ``exp(z·z_a / T)`` at small ``T``. On Fashion-MNIST (4000 images, resnet8,
K = 4096, T = 0.05, α = 0.02) the centre weight is 0.10 (0.04 for the head class, 0.32 for the
last class at ratio 10) and the centres hold 7% of the denominator; on the balanced set ``fc``
reaches 46% after 3 epochs against 76% for a linear probe on the same backbone, and 73% against
80% after 15 epochs (fc's training accuracy is as low as its test accuracy: under-fitting, no
label or prior error). The smaller pull-up of head classes is why, on the long-tailed sets, the
own classifier is worst on the many-shot group (ratio 10, 3 epochs: 23/33/46% many/medium/few).
The authors' regime keeps ``α·K/C`` near 0.1-0.4 (CIFAR-100-LT: α 0.01, K 1024, C 100;
ImageNet-LT: α 0.05, K 8192, C 1000; that study: 8.2) and trains 400 epochs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from balfeat import distributed
from balfeat.errors import BalfeatError
from balfeat.losses.paco import gpaco_loss, paco_loss
from balfeat.methods._gather import gather_rows
from balfeat.methods.base import MethodBase, from_constructor, register, resolve_params
from balfeat.methods.inputs import backbone_out_dim, check_batch, check_num_classes
from balfeat.methods.moco import MoCo
from balfeat.methods.params import HeadParams, QueueParams
from balfeat.models.backbones import Backbone
from balfeat.models.heads import make_head
from balfeat.models.queue import KeyQueue
from balfeat.typed_config import bounds

#: Initial labels of a PaCo/GPaCo queue (``queue_labels``).
QueueLabels = Literal["random", "empty"]
#: Which batch rows an anchor is contrasted with (``contrast``).
Contrast = Literal["per_rank", "global"]


def random_queue_labels(queue: KeyQueue, num_classes: int, seed: int) -> None:
    """Give the queue's initial keys uniform random class ids, as the PaCo/GPaCo authors
    (``torch.randint(0, num_classes, (K,))``); from a generator of its own (``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    queue.labels.copy_(torch.randint(0, num_classes, (queue.size,), generator=gen))


def rows_of(x: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """This rank's rows (``per_rank``) or the global batch's (``global``, ``gather_rows``)."""
    return gather_rows(x) if contrast == "global" else x


def log_prior_of(counts: torch.Tensor) -> torch.Tensor:
    """``log π_c`` of class counts (a class without images counts as 1 image: no ``-inf``).

    Shape: (C,) -> (C,) float32.
    """
    c = counts.to(torch.float64).clamp(min=1.0)
    return (c / c.sum()).log().float()


@dataclass
class PaCoParams(QueueParams):
    """``paco``: the ``method`` section of PaCo (Cui et al. 2021, Eq. 8).

    MoCo's fields with the authors' ImageNet-LT values (T 0.2, MLP head, K 8192), and:

    Attributes:
        alpha: ``α``, weight of each non-parametric (key) positive (paper: 0.05).
        beta: ``β``, weight of the class-centre positive (authors: 1).
        gamma: ``γ``, weight of the key terms in the denominator (authors: 1).
        head_bn: a ``BatchNorm1d`` in the MLP head, ``Linear-BN-ReLU-Linear``, in the query and
            the key encoder, as the authors' head (``PaCo/LT/moco/builder.py:50-51``); needs
            ``mlp``. False: MoCo v2's ``Linear-ReLU-Linear``.
        queue_labels: class of the queue's initial random keys: ``random`` (uniform class ids,
            the authors' ``PaCo/LT/moco/builder.py:66``; each slot is a random positive until
            overwritten) or ``empty`` (-1: a negative only; balfeat before issue 23).
        contrast: the in-batch part of the contrast set: ``per_rank`` (the local batch of each
            process, as the authors' DDP run, ``PaCo/LT/moco/builder.py:222``) or ``global``
            (every process's batch: N processes compute what one does).
    """

    name: str = "paco"
    T: float = field(default=0.2, metadata=bounds(gt=0))
    mlp: bool = True
    K: int = field(default=8192, metadata=bounds(ge=1))
    alpha: float = field(default=0.05, metadata=bounds(ge=0))
    beta: float = field(default=1.0, metadata=bounds(ge=0))
    gamma: float = field(default=1.0, metadata=bounds(gt=0))
    head_bn: bool = False
    queue_labels: QueueLabels = "random"
    contrast: Contrast = "per_rank"


@dataclass
class GPaCoParams(HeadParams):
    """``gpaco``: GPaCo's section (PaCo without the momentum encoder; α, β, γ as PaCo).

    Head fields with the authors' values (dim 128, T 0.2, MLP head), and:

    Attributes:
        K: length of the queue of past second-view features (0: none). The authors' GPaCo keeps
            one: 8192 (``GPaCo/LT/paco_lt.py`` default, ImageNet-LT / iNat), 1024 on CIFAR-100-LT.
        alpha: ``α``; the authors use 0.045 for ImageNet-LT ResNet-50 (the default), 0.05 for
            iNaturalist 2018, 0.01 for CIFAR-100-LT (``GPaCo/LT/sh/``).
        head_bn: a ``BatchNorm1d`` in the MLP head (``Linear-BN-ReLU-Linear``, PaCo's head);
            needs ``mlp``. The authors' GPaCo head has none (``GPaCo/LT/moco/builder.py:47``:
            ``Linear-ReLU-Linear-ReLU-Linear``), so the GPaCo recipes leave it False.
        head_layers: hidden layers of the MLP head (needs ``mlp`` when > 1); the authors' GPaCo
            head has 2 (set in the GPaCo recipes); 1 is balfeat's MoCo v2-style head.
        queue_labels: as PaCo's (the authors': ``random``, ``GPaCo/LT/moco/builder.py:54``).
        contrast: as PaCo's (the authors': ``per_rank``, ``GPaCo/LT/paco_lt.py:217`` and
            ``GPaCo/LT/moco/builder.py:122``: 64 rows per GPU in their 4-GPU run).
        per_view_bn: run the encoder once per view, so BatchNorm normalises each view's batch
            alone (the authors', ``GPaCo/LT/moco/builder.py:112-119``); False: both views in one
            forward (one BatchNorm batch of 2B rows, balfeat before issue 23).
    """

    name: str = "gpaco"
    T: float = field(default=0.2, metadata=bounds(gt=0))
    mlp: bool = True
    K: int = field(default=8192, metadata=bounds(ge=0))
    alpha: float = field(default=0.045, metadata=bounds(ge=0))
    beta: float = field(default=1.0, metadata=bounds(ge=0))
    gamma: float = field(default=1.0, metadata=bounds(gt=0))
    head_bn: bool = False
    head_layers: int = field(default=1, metadata=bounds(ge=1))
    queue_labels: QueueLabels = "random"
    contrast: Contrast = "per_rank"
    per_view_bn: bool = True


def check_head_bn(owner: str, head_bn: bool, mlp: bool) -> None:
    """``head_bn`` is a layer of the MLP head: refuse it with a linear head.

    Raises:
        BalfeatError: ``head_bn`` without ``mlp``.
    """
    if head_bn and not mlp:
        raise BalfeatError(
            f"{owner} argument head_bn=True needs mlp=True (the BatchNorm sits inside the MLP "
            "head); set method.mlp=true or method.head_bn=false"
        )


class _ClassPrior:
    """``set_class_counts`` for modules with a ``log_prior`` buffer of shape (C,)."""

    log_prior: torch.Tensor

    @torch.no_grad()
    def set_class_counts(self, counts: torch.Tensor) -> None:
        """Training images per class. Shape: (C,). Sets ``log_prior`` (logit adjustment).

        Called once, after the method is built (not per step).

        Raises:
            BalfeatError: counts of another shape, negative, NaN/inf, or all 0.
        """
        name = type(self).__name__
        counts = torch.as_tensor(counts)
        if counts.shape != self.log_prior.shape:
            raise BalfeatError(
                f"{name}: class counts of shape {tuple(counts.shape)} given for "
                f"{self.log_prior.numel()} classes; pass one count per class of the training "
                f"set, shape ({self.log_prior.numel()},)"
            )
        values = counts.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise BalfeatError(
                f"{name}: class counts must be finite numbers >= 0, got {values.tolist()[:8]}"
            )
        if float(values.sum()) <= 0:
            raise BalfeatError(
                f"{name}: every class count is 0; pass the training images per class (the "
                "class prior of logit adjustment is made from them)"
            )
        self.log_prior.copy_(log_prior_of(counts).to(self.log_prior.device))


class HeadClassifier(_ClassPrior, MethodBase):
    """Base of the two-view methods without a key encoder that train a classifier jointly
    (GPaCo, BCL): ``backbone``, projection ``head`` (dim), classifier ``fc`` (C classes),
    buffers ``log_prior`` (C,) and ``step``; ``classify`` is the method's own classifier.

    Args:
        backbone: the encoder trunk (``out_dim`` features).
        num_classes: C.
        params: the settings, already resolved (``dim``, ``T``, ``mlp`` are read here).
        head_bn: a ``BatchNorm1d`` in the MLP head (``Linear-BN-ReLU-Linear``); needs ``mlp``.
    """

    views = 2
    uses_labels = True
    has_classifier = True
    step: torch.Tensor

    def __init__(
        self, backbone: Backbone, num_classes: int, *, params: HeadParams, head_bn: bool
    ) -> None:
        super().__init__()
        self.params = params
        dim, mlp = params.dim, params.mlp
        check_head_bn(type(self).__name__, head_bn, mlp)
        self.backbone = backbone
        check_num_classes(type(self).__name__, num_classes)
        in_dim = backbone_out_dim(type(self).__name__, backbone)
        self.head: nn.Module = make_head(in_dim, dim, mlp, batch_norm=head_bn)
        self.head_bn = head_bn
        self.fc = nn.Linear(in_dim, num_classes)
        self.register_buffer("log_prior", log_prior_of(torch.ones(num_classes)))
        self.register_buffer("step", torch.zeros(1, dtype=torch.long))
        self.T = params.T

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """The method's own classifier. Shape: (B, C, H, W) -> logits (B, num_classes)."""
        return self.fc(self.backbone(images))

    def _check_two_views(
        self, images: Sequence[torch.Tensor] | torch.Tensor, labels: torch.Tensor
    ) -> None:
        check_batch(type(self).__name__, images, labels, 2, True, num_classes=self.fc.out_features)


class PaCo(_ClassPrior, MoCo):
    """MoCo with a labelled queue and learnable class centres (a linear classifier ``fc``).

    Submodules as ``MoCo`` plus ``fc`` (``Linear(backbone.out_dim, num_classes)``); buffer
    ``log_prior`` (C,).

    Args:
        backbone, backbone_k, seed: as ``MoCo``.
        num_classes: C, the number of centres.
        params: the settings (:class:`PaCoParams`: MoCo's plus ``alpha`` (``α``: 0.05
            ImageNet-LT / iNat, 0.02 CIFAR-100-LT in the paper), ``beta``, ``gamma``,
            ``head_bn``); or pass them as keyword arguments. ``head_bn``: the authors' MLP head
            ``Linear-BN-ReLU-Linear`` for ``head`` and ``head_k``. ``head_k`` starts as a copy of
            ``head`` (BN running statistics at their initial values, as the authors' freshly
            built key encoder) and follows it by momentum on the parameters only (BN weight and
            bias included); its running statistics come from its own forward passes, as the
            authors'. In one process the key head's BN sees the ``bn_splits`` groups, as the
            backbone's; with several processes the BN statistics are per rank (the authors use
            DDP without SyncBatchNorm).
        in_batch: also contrast with the other queries and keys of the (local) batch, as the
            authors do; False: MoCo style ``[k_i, queue]`` only (then 2 processes compute what one
            does).

    ``forward`` returns ``{"loss", "acc"}`` (``acc``: top-1 of ``fc`` on the query view).
    """

    uses_labels = True
    has_classifier = True
    params_type = PaCoParams
    params: PaCoParams

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        params: PaCoParams | None = None,
        backbone_k: Backbone | None = None,
        seed: int = 0,
        in_batch: bool = True,
        **overrides: Any,
    ) -> None:
        p = resolve_params(type(self).__name__, PaCoParams, params, overrides)
        check_head_bn(type(self).__name__, p.head_bn, p.mlp)
        super().__init__(backbone, params=p, backbone_k=backbone_k, seed=seed)
        if p.head_bn:  # the authors' head replaces MoCo v2's (same for the key encoder)
            self.head = make_head(backbone.out_dim, p.dim, p.mlp, batch_norm=True)
            self.head_k = copy.deepcopy(self.head)
            for param in self.head_k.parameters():
                param.requires_grad_(False)
        self.head_bn = p.head_bn
        check_num_classes(type(self).__name__, num_classes)
        self.fc = nn.Linear(backbone.out_dim, num_classes)
        self.register_buffer("log_prior", log_prior_of(torch.ones(num_classes)))
        self.alpha, self.beta, self.gamma, self.in_batch = p.alpha, p.beta, p.gamma, in_batch
        self.contrast = p.contrast
        if p.queue_labels == "random":
            random_queue_labels(self.queue, num_classes, seed + 1)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """PaCo's own classifier. Shape: (B, C, H, W) -> logits (B, num_classes)."""
        return self.fc(self.backbone(images))

    def forward(
        self, images: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """PaCo loss of ``[view_q, view_k]`` (each (B, C, H, W)) and labels (B,)."""
        self._check_views(images, labels)
        im_q, im_k = images
        feat = self.backbone(im_q)
        q = F.normalize(self.head(feat), dim=1)
        logits = self.fc(feat)  # (B, C): the centre logits
        k = self.encode_keys(im_k)
        global_batch = self.contrast == "global"
        loss = paco_loss(
            rows_of(q, self.contrast),
            rows_of(k, self.contrast),
            distributed.all_gather_concat(labels) if global_batch else labels,
            self.queue.keys,
            self.queue.labels,
            centre_logits=rows_of(logits, self.contrast),
            log_prior=self.log_prior,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            temperature=self.T,
            in_batch=self.in_batch,
        )
        if self.training:
            self._pending = (
                distributed.all_gather_concat(k.detach()),
                distributed.all_gather_concat(labels),
            )
        acc = (logits.detach().argmax(1) == labels).to(q.dtype).mean()
        return {"loss": loss, "acc": acc}


class GPaCo(HeadClassifier):
    """GPaCo: one encoder, both views as anchors, no momentum encoder, a queue of past keys.

    As the authors' ``GPaCo/LT/moco/builder.py``: both views pass through the one encoder (with
    gradient), every row of ``[z_1, z_2]`` is an anchor against the other rows and the queue,
    and the detached second-view features of the (global) batch are enqueued after the step.
    ``K = 0`` drops the queue (in-batch contrast only). The queue starts as random unit keys
    with random class ids, as the authors' (``queue_labels=random``; ``empty``: labelled -1,
    negatives until overwritten). As the authors', each view passes through the encoder alone
    (``per_view_bn``: BatchNorm statistics per view) and each process contrasts its own batch
    (``contrast=per_rank``). Their MLP head is ``Linear-ReLU-Linear-ReLU-Linear``
    (``GPaCo/LT/moco/builder.py:47``, no BatchNorm): ``mlp`` with ``head_layers=2`` (the
    recipes); ``head_layers=1`` is balfeat's one-hidden-layer ``MLPHead``, ``head_bn`` adds PaCo's
    BatchNorm after the first layer (not the authors' GPaCo).

    Submodules ``backbone``, ``head`` (MLP or linear, to ``dim``), ``fc`` (the centres),
    ``queue`` (``KeyQueue`` with labels, or None when ``K = 0``); buffers ``log_prior`` (C,) and
    ``step``.

    With several processes every rank enqueues the same global keys; the contrast set is the
    rank's own batch (``per_rank``, the authors') or the global batch (``global``,
    ``balfeat.methods._gather``: N processes compute what one does).

    Args:
        backbone: the encoder trunk.
        num_classes: C.
        params: the settings (:class:`GPaCoParams`: ``dim``, ``T``, ``mlp``, ``alpha``,
            ``beta``, ``gamma`` as PaCo, ``K`` (0: no queue), ``head_bn`` (the BN normalises the
            2B rows of both views together, per rank under DDP), ``head_layers``); or pass them
            as keyword arguments.

    ``forward`` returns ``{"loss", "acc"}`` (``acc``: top-1 of ``fc`` on both views).
    """

    params_type = GPaCoParams
    params: GPaCoParams

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        params: GPaCoParams | None = None,
        **overrides: Any,
    ) -> None:
        p = resolve_params("GPaCo", GPaCoParams, params, overrides)
        super().__init__(backbone, num_classes, params=p, head_bn=p.head_bn)
        head_layers, dim, K = p.head_layers, p.dim, p.K
        if head_layers > 1:
            if not p.mlp:
                raise BalfeatError(
                    f"GPaCo argument head_layers={head_layers} needs mlp=True (a linear head has "
                    "no hidden layer); set method.mlp=true or method.head_layers=1"
                )
            in_dim = backbone_out_dim("GPaCo", backbone)
            self.head = make_head(
                in_dim, dim, True, batch_norm=p.head_bn, hidden_layers=head_layers
            )
        self.head_layers = head_layers
        self.alpha, self.beta, self.gamma = p.alpha, p.beta, p.gamma
        # fixed generator: the initial random keys do not draw from the global random stream
        gen = torch.Generator().manual_seed(0)
        self.queue = KeyQueue(K, dim, with_labels=True, generator=gen) if K > 0 else None
        if self.queue is not None and p.queue_labels == "random":
            random_queue_labels(self.queue, num_classes, 1)
        self.contrast, self.per_view_bn = p.contrast, p.per_view_bn
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(
        self, images: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """GPaCo loss of ``[view_1, view_2]`` (each (B, C, H, W)) and labels (B,)."""
        self._check_two_views(images, labels)
        b = labels.shape[0]
        if self.per_view_bn:  # the authors': one encoder pass per view, BN statistics per view
            feat = torch.cat([self.backbone(v) for v in images])  # (2B, F)
            z = F.normalize(torch.cat([self.head(f) for f in feat.split(b)]), dim=1)
        else:
            feat = self.backbone(torch.cat(list(images)))  # (2B, F), one BN batch
            z = F.normalize(self.head(feat), dim=1)
        logits = self.fc(feat)  # (2B, C)
        # per_rank: this rank's rows (the authors'); global: N processes compute what one does
        z1, z2 = rows_of(z[:b], self.contrast), rows_of(z[b:], self.contrast)
        logits_all = torch.cat(
            [rows_of(logits[:b], self.contrast), rows_of(logits[b:], self.contrast)]
        )
        labels_all = labels
        if self.contrast == "global":
            labels_all = distributed.all_gather_concat(labels)
        loss = gpaco_loss(
            z1,
            z2,
            labels_all,
            logits_all,
            self.log_prior,
            alpha=self.alpha,
            temperature=self.T,
            queue=None if self.queue is None else self.queue.keys,
            queue_labels=None if self.queue is None else self.queue.labels,
            beta=self.beta,
            gamma=self.gamma,
        )
        if self.training and self.queue is not None:  # every rank enqueues the global keys
            self._pending = (
                distributed.all_gather_concat(z[b:].detach()),
                distributed.all_gather_concat(labels),
            )
        acc = (logits.detach().argmax(1) == labels.repeat(2)).to(z.dtype).mean()
        return {"loss": loss, "acc": acc}

    @torch.no_grad()
    def after_step(self) -> None:
        """Counts the step and enqueues the last forward's second-view features."""
        self.step += 1
        if self._pending is not None and self.queue is not None:
            self.queue.enqueue(*self._pending)
        self._pending = None


register("paco", views=2, params=PaCoParams, label="PaCo")(from_constructor(PaCo))
register("gpaco", views=2, params=GPaCoParams, label="GPaCo")(from_constructor(GPaCo))
