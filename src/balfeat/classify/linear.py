"""Linear classifiers on cached features: the probe's hyper-parameters, its result, and training.

:func:`train_linear_on_features` trains a linear classifier (or any module, e.g. LWS's scales) on
features held as whole tensors on the device: one seeded permutation (or the reference's
class-balanced cycle order) per epoch, the learning rate of :func:`balfeat.schedules.lr_factor`,
the best epoch by validation top-1 kept as MoCo's ``main_lincls.py`` keeps it
(:class:`BestEpoch`). The image-level loop (reference probe, fine-tuning) is
:mod:`balfeat.classify.image_loop`; the protocol front-ends are :mod:`balfeat.classify.probe`.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from balfeat.errors import BalfeatError, ConfigError, TrainingError
from balfeat.schedules import ScheduleName, lr_factor
from balfeat.typed_config import bounds
from balfeat.typed_config.schema import check_fields


@dataclass
class ProbeConfig:
    """Hyper-parameters of a linear probe (defaults: MoCo's linear classification protocol).

    Each value, default and range is declared here once: the probe job
    (:class:`balfeat.classify.job.ProbeOptions`), a study's ``probes:`` entries
    (:class:`balfeat.classify.job.ProbeSettings`) and the ``balfeat probe`` flags all derive from
    these fields; a direct ``ProbeConfig(...)`` is checked against the same declarations.

    Attributes:
        epochs: classifier training epochs (reference 100).
        lr: initial learning rate (reference 30, MoCo's, for features of an unnormalised
            self-supervised backbone; use ~0.1-1 for a supervised backbone or normalised features).
        momentum: SGD momentum.
        weight_decay: SGD weight decay (reference 0).
        milestones: epochs at which the lr is multiplied by ``gamma``; ``None`` scales the
            reference's (60, 80) of 100 epochs to ``epochs``; ``[]`` keeps the lr constant.
        gamma: lr factor at each milestone.
        schedule: ``step`` (milestones) or ``cosine`` (cosine decay to 0 over ``epochs``).
        batch_size: samples per step (reference 256).
        bias: the classifier learns a bias (BalFeat's no-bias option turns it off).
        init_std: std of the normal initialisation of the weights.
        balanced: class-balanced sampling (pick a class uniformly, then ``repeat`` of its
            samples) instead of one pass over the shuffled data per epoch; turn on for cRT-style
            probes of long-tailed training sets.
        repeat: balanced sampling: samples of a picked class drawn together.
        seed: seed of the initialisation and the sampling order.
        eval_every: validate every this many epochs (and always after the last one).
        loss: ``ce`` (cross-entropy, the reference's) or ``ldam`` (LDAM, Cao et al. 2019:
            :func:`balfeat.losses.ldam.ldam_loss` with margins from the training counts; the TSC
            authors' CIFAR-LT second stage). Fast protocol only.
        ldam_max_margin: LDAM: the margin of the rarest class (their ``max_m`` 0.5).
        ldam_scale: LDAM: the factor on the margin-adjusted logits (their ``s`` 30).
        reweight: ``none`` or ``class_balanced`` (per-class loss weights ``(1 - b) / (1 - b^n)``,
            Cui et al. 2019, as LDAM-DRW's re-weighting). Fast protocol only.
        reweight_beta: class_balanced: the ``b`` above (0.9999 in LDAM-DRW).
        reweight_from_epoch: class_balanced: first 0-based epoch with the weights, plain loss
            before (LDAM-DRW's deferred re-weighting starts at 160 of 200; 0 = from the start).
    """

    epochs: int = field(default=100, metadata=bounds(ge=1))
    lr: float = field(default=30.0, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
    milestones: list[int] | None = field(default=None, metadata=bounds(ge=1))
    gamma: float = field(default=0.1, metadata=bounds(gt=0))
    schedule: Literal["step", "cosine"] = "step"
    batch_size: int = field(default=256, metadata=bounds(ge=1))
    bias: bool = True
    init_std: float = field(default=0.01, metadata=bounds(ge=0))
    balanced: bool = False
    repeat: int = field(default=1, metadata=bounds(ge=1))
    seed: int = field(default=0, metadata=bounds(ge=0))
    eval_every: int = field(default=1, metadata=bounds(ge=1))
    loss: Literal["ce", "ldam"] = "ce"
    ldam_max_margin: float = field(default=0.5, metadata=bounds(gt=0))
    ldam_scale: float = field(default=30.0, metadata=bounds(gt=0))
    reweight: Literal["none", "class_balanced"] = "none"
    reweight_beta: float = field(default=0.9999, metadata=bounds(ge=0, lt=1))
    reweight_from_epoch: int = field(default=0, metadata=bounds(ge=0))

    def __post_init__(self) -> None:
        check_fields(self, "probe ")  # types, choices and ranges, as the loader checks them
        ms = self.milestones
        if ms is not None and ms != sorted(set(ms)):
            raise ConfigError(f"probe milestones {ms} must be increasing epochs >= 1")

    def linear_config(self) -> ProbeConfig:
        """The classifier's hyper-parameters alone (this class's fields of a subclass)."""
        return ProbeConfig(**{f.name: getattr(self, f.name) for f in fields(ProbeConfig)})

    def resolved_milestones(self) -> tuple[int, ...]:
        """The lr milestones; the reference's (60, 80) of 100 epochs scaled to ``epochs``."""
        if self.milestones is not None:
            return tuple(self.milestones)
        return (round(0.6 * self.epochs), round(0.8 * self.epochs))

    def lr_at(self, epoch: int) -> float:
        """Learning rate used during ``epoch`` (0-based)."""
        schedule: ScheduleName = "cosine" if self.schedule == "cosine" else "step"
        return self.lr * lr_factor(
            epoch,
            self.epochs,
            schedule=schedule,
            milestones=self.resolved_milestones(),
            gamma=self.gamma,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the configuration."""
        d = {f.name: getattr(self, f.name) for f in fields(ProbeConfig)}
        d["milestones"] = list(self.resolved_milestones())
        return d


@dataclass
class ProbeResult:
    """What a probe produced.

    Attributes:
        classifier: the linear classifier of the best epoch (on the CPU).
        best_epoch: 1-based epoch of the best validation top-1.
        best_top1: validation top-1 (percent) at that epoch.
        val_logits: validation logits of the best epoch. Shape: (N_val, C).
        val_labels: validation labels. Shape: (N_val,).
        history: one dict per epoch: ``epoch``, ``lr``, ``loss``, ``train_top1``, ``val_top1``.
        protocol: ``"reference"``, ``"fast"`` or a decoupled method's name.
        seconds: wall time of the whole probe, feature extraction included.
        extras: anything else (e.g. feature extraction seconds).
    """

    classifier: nn.Linear
    best_epoch: int
    best_top1: float
    val_logits: torch.Tensor
    val_labels: torch.Tensor
    history: list[dict[str, float]]
    protocol: str
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


def make_classifier(in_dim: int, num_classes: int, cfg: ProbeConfig) -> nn.Linear:
    """A linear classifier initialised as the reference: weights N(0, init_std), zero bias."""
    gen = torch.Generator().manual_seed(cfg.seed)
    fc = nn.Linear(in_dim, num_classes, bias=cfg.bias)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen) * cfg.init_std)
        if fc.bias is not None:
            fc.bias.zero_()
    return fc


def copy_classifier(fc: nn.Linear) -> nn.Linear:
    """A deep copy of a classifier (so decoupled methods never modify their input)."""
    return copy.deepcopy(fc)


def balanced_order(
    labels: torch.Tensor, num_samples: int, repeat: int, seed: int, epoch: int
) -> torch.Tensor:
    """The reference's ``--balanced --bal_repeat`` order of one epoch (BalFeat
    ``loader/sampler.py``: classes in random cycles, each class's images in random cycles,
    ``repeat`` consecutive images per class pick), via
    :class:`balfeat.data.samplers.ClassBalancedSampler` — the sampler the reference protocol uses.

    Args:
        labels: class of each sample. Shape: (N,).
        num_samples: indices to return.
        repeat: images per class pick.
        seed: base seed; the order is seeded by ``(seed, epoch)``.
        epoch: 0-based epoch.

    Returns:
        Sample indices (CPU, int64). Shape: (num_samples,).
    """
    from balfeat.data.samplers import ClassBalancedSampler

    sampler = ClassBalancedSampler(
        labels.cpu().numpy(), repeat, num_samples=num_samples, seed=seed, num_replicas=1, rank=0
    )
    sampler.set_epoch(epoch)
    return torch.as_tensor(sampler.global_order()[:num_samples], dtype=torch.int64)


class BestEpoch:
    """Keeps the epoch of the best validation top-1, as ``main_lincls.py``'s ``best_acc1``.

    The reference validates after every epoch and keeps ``is_best = acc1 > best_acc1``: the
    *first* epoch reaching the maximum wins a tie. With ``keep="last"`` every validated epoch
    replaces the previous one: nothing is chosen, the last epoch is kept.
    """

    def __init__(self, keep: Literal["best", "last"] = "best") -> None:
        self.keep = keep
        self.epoch = 0
        self.top1 = -1.0
        self.logits = torch.empty(0)
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.history: list[dict[str, float]] = []

    def update(
        self,
        epoch: int,
        top1: float,
        logits: torch.Tensor,
        states: dict[str, dict[str, torch.Tensor]],
    ) -> bool:
        """Record ``epoch`` (1-based) if strictly better than the best so far (or always, keeping
        the last); returns whether."""
        if top1 > self.top1 or self.keep == "last":
            self.epoch, self.top1, self.logits = epoch, top1, logits.detach()
            self.state = {
                name: {k: v.detach().clone() for k, v in s.items()} for name, s in states.items()
            }
            return True
        return False


def topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows' arg-max is the label. Shapes: (N, C), (N,)."""
    return int((logits.argmax(1) == labels).sum())


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for g in opt.param_groups:
        g["lr"] = lr


def check_finite(record: dict[str, float], protocol: str, epoch: int, hint: str) -> None:
    """Raise :class:`TrainingError` when an epoch's mean loss is NaN/inf."""
    if not math.isfinite(record["loss"]):
        raise TrainingError(
            f"{protocol}: non-finite loss at epoch {epoch + 1} (lr {record['lr']}); {hint}"
        )


def _evaluate_logits(fc: nn.Module, feats: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fc(feats[i : i + batch]) for i in range(0, len(feats), batch)])


def _check_probe_inputs(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
) -> None:
    """Shapes, label dtypes and ranges, finite features: once per probe, before training."""
    where = "linear probe on features"
    if train_features.dim() not in (2, 3) or val_features.dim() != 2:
        raise BalfeatError(
            f"{where}: train_features must be (N, D) or (P, N, D) and val_features (N_val, D), "
            f"got {tuple(train_features.shape)} and {tuple(val_features.shape)}"
        )
    if val_features.shape[1] != train_features.shape[-1]:
        raise BalfeatError(
            f"{where}: val_features {tuple(val_features.shape)} and train_features "
            f"{tuple(train_features.shape)} have different dims; extract both with one backbone"
        )
    if num_classes < 1:
        raise BalfeatError(f"{where}: num_classes must be >= 1, got {num_classes}")
    n_train = train_features.shape[-2]
    for name, labels, n in (
        ("train_labels", train_labels, n_train),
        ("val_labels", val_labels, val_features.shape[0]),
    ):
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise BalfeatError(
                f"{where}: {name} must be a 1-D tensor of integer class ids, got "
                f"{tuple(labels.shape)} {labels.dtype}"
            )
        if labels.shape[0] != n:
            kind = "training" if name == "train_labels" else "validation"
            raise BalfeatError(f"{where}: {n} {kind} features but {labels.shape[0]} {name}")
    if val_labels.shape[0] == 0:
        raise BalfeatError(f"{where}: no validation samples; the best epoch is chosen on them")
    if val_labels.numel():
        low, high = (int(v) for v in torch.stack(torch.aminmax(val_labels)).tolist())
        if low < 0 or high >= num_classes:
            raise BalfeatError(
                f"{where}: val_labels must lie in [0, {num_classes}), got [{low}, {high}]"
            )
    for name, feats in (("train_features", train_features), ("val_features", val_features)):
        if not feats.is_floating_point():
            raise BalfeatError(f"{where}: {name} must be floating point, got {feats.dtype}")
        if feats.numel() and not bool(torch.isfinite(feats).all()):
            raise TrainingError(
                f"{where}: {name} {tuple(feats.shape)} contain NaN or inf; check the backbone "
                "(a diverged pre-training?) or the feature cache"
            )


def train_linear_on_features(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    device: torch.device | str | None = None,
    classifier: nn.Module | None = None,
    params: Sequence[nn.Parameter] | None = None,
    protocol: str = "fast",
    log: Callable[[str], None] | None = None,
    keep: Literal["best", "last"] = "best",
) -> ProbeResult:
    """Fast protocol: train a linear classifier on cached features, whole tensors on the device.

    Args:
        train_features: cached training features, (N, D), or (P, N, D) for P augmented passes
            (epoch ``e`` uses pass ``e % P``).
        train_labels: Shape: (N,).
        val_features: Shape: (N_val, D).
        val_labels: Shape: (N_val,).
        num_classes: C.
        cfg: hyper-parameters (defaults: the reference protocol's).
        device: where to train; defaults to where the features are.
        classifier: a module to train instead of a fresh :func:`make_classifier` (used by LWS).
        params: the parameters to optimise (default: all of ``classifier``).
        protocol: name recorded in the result.
        log: called with one line per validated epoch.
        keep: ``best``: the epoch of the best validation top-1; ``last``: the last epoch.

    Returns:
        The :class:`ProbeResult` of the kept epoch.

    Raises:
        BalfeatError: features/labels of other lengths or dims, labels that are not 1-D integer
            class ids in ``[0, num_classes)``, no training or validation sample.
        TrainingError: NaN/inf in the features, or a non-finite loss during training.
    """
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    _check_probe_inputs(train_features, train_labels, val_features, val_labels, num_classes)
    dev = torch.device(device) if device is not None else train_features.device
    xs = train_features.to(dev, torch.float32)
    if xs.dim() == 2:
        xs = xs.unsqueeze(0)
    ys = train_labels.to(dev, torch.int64)
    xv = val_features.to(dev, torch.float32)
    yv = val_labels.to(dev, torch.int64)
    n = xs.shape[1]
    if ys.shape[0] != n:
        raise BalfeatError(f"{n} training features but {ys.shape[0]} labels")
    if n == 0:
        raise BalfeatError("no training samples for the linear probe")
    if int(ys.max()) >= num_classes or int(ys.min()) < 0:
        raise BalfeatError(f"training labels must lie in [0, {num_classes})")
    fc = classifier if classifier is not None else make_classifier(xs.shape[2], num_classes, cfg)
    fc = fc.to(dev)
    # Small problems on the CPU: intra-op threads cost far more than they save (measured 40x
    # slower with 2 threads on a loaded 2-core machine), so train single-threaded.
    threads = torch.get_num_threads()
    if dev.type == "cpu" and cfg.batch_size * xs.shape[2] * num_classes < 20_000_000:
        torch.set_num_threads(1)
    try:
        loss_fn = probe_loss(cfg, train_labels, num_classes)
        return _train_loop(
            fc,
            xs,
            ys,
            xv,
            yv,
            n,
            cfg,
            dev,
            params,
            protocol,
            log,
            start,
            train_labels,
            loss_fn,
            keep,
        )
    finally:
        torch.set_num_threads(threads)


LossFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def probe_loss(cfg: ProbeConfig, train_labels: torch.Tensor, num_classes: int) -> LossFn:
    """The probe's training loss ``(logits, labels, epoch) -> loss`` from ``cfg.loss`` and
    ``cfg.reweight``, with LDAM margins and class-balanced weights from the training counts."""
    from balfeat.losses.ldam import class_balanced_weights, ldam_loss, ldam_margins

    counts = torch.bincount(train_labels.cpu().long(), minlength=num_classes)
    weight = None
    if cfg.reweight == "class_balanced":
        weight = class_balanced_weights(counts, cfg.reweight_beta).float()
    margins = ldam_margins(counts, cfg.ldam_max_margin) if cfg.loss == "ldam" else None

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        w = weight if weight is not None and epoch >= cfg.reweight_from_epoch else None
        if margins is not None:
            return ldam_loss(logits, labels, margins, cfg.ldam_scale, w)
        return F.cross_entropy(logits, labels, weight=None if w is None else w.to(logits))

    return loss_fn


def _train_loop(
    fc: nn.Module,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    n: int,
    cfg: ProbeConfig,
    dev: torch.device,
    params: Sequence[nn.Parameter] | None,
    protocol: str,
    log: Callable[[str], None] | None,
    start: float,
    train_labels: torch.Tensor,
    loss_fn: LossFn,
    keep: Literal["best", "last"] = "best",
) -> ProbeResult:
    train_params = list(params) if params is not None else list(fc.parameters())
    opt = torch.optim.SGD(
        train_params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    labels_cpu = train_labels.cpu().long()
    tracker = BestEpoch(keep)
    epochs: Any = range(cfg.epochs)
    if log is not None:  # one bar over the epochs (each takes well under a second)
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=f"[{protocol}] epochs", file=sys.stderr, leave=False)
    for epoch in epochs:
        lr = cfg.lr_at(epoch)
        set_lr(opt, lr)
        fc.train()
        if cfg.balanced:
            order = balanced_order(labels_cpu, n, cfg.repeat, cfg.seed, epoch).to(dev)
        else:
            order = torch.randperm(n, generator=gen).to(dev)
        x = xs[epoch % xs.shape[0]]
        total_loss = torch.zeros((), device=dev)
        hits = torch.zeros((), device=dev, dtype=torch.int64)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb = x.index_select(0, idx)
            yb = ys.index_select(0, idx)
            logits = fc(xb)
            loss = loss_fn(logits, yb, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach() * len(idx)
            hits += (logits.detach().argmax(1) == yb).sum()
        record = {
            "epoch": float(epoch + 1),
            "lr": lr,
            "loss": float(total_loss) / n,
            "train_top1": float(hits) * 100.0 / n,
        }
        check_finite(
            record, f"{protocol} probe", epoch,
            "lower the learning rate (--lr) or check the features for NaN/inf",
        )  # fmt: skip
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            fc.eval()
            vlog = _evaluate_logits(fc, xv)
            top1 = topk_hits(vlog, yv) * 100.0 / max(len(yv), 1)
            record["val_top1"] = top1
            tracker.update(epoch + 1, top1, vlog, {"fc": fc.state_dict()})
            if log is not None:
                log(
                    f"[{protocol}] epoch {epoch + 1}/{cfg.epochs} lr {lr:.4g} "
                    f"loss {record['loss']:.4f} train {record['train_top1']:.2f} val {top1:.2f}"
                )
        tracker.history.append(record)
    fc.load_state_dict(tracker.state["fc"])
    return ProbeResult(
        classifier=cast(nn.Linear, fc.cpu().eval()),  # an LWS module where LWS trains
        best_epoch=tracker.epoch,
        best_top1=tracker.top1,
        val_logits=tracker.logits.cpu(),
        val_labels=yv.cpu(),
        history=tracker.history,
        protocol=protocol,
        seconds=time.perf_counter() - start,
    )
