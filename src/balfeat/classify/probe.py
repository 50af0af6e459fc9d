"""Linear probes on a frozen backbone: the reference protocol and a fast cached-feature protocol.

The reference protocol is MoCo's ``main_lincls.py`` (He et al., "Momentum Contrast for
Unsupervised Visual Representation Learning", https://arxiv.org/abs/1911.05722) as BalFeat uses
it: frozen backbone in eval mode, a linear classifier initialised N(0, 0.01) with zero bias, SGD
lr 30, momentum 0.9, no weight decay, 100 epochs with the lr divided by 10 at epochs 60 and 80,
batch 256, RandomResizedCrop + flip while training, the best epoch kept by validation accuracy,
and afterwards a check that the backbone was not modified.

The fast protocol extracts the features once (or over a fixed number of augmented passes) and
trains the same classifier with the same schedule on the cached features, as full tensors on the
device: one random permutation per epoch from a seeded generator, no data loading per step.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from balfeat.classify.features import extract_features
from balfeat.data.prepare import ClassSubset, dataset_targets
from balfeat.errors import BalfeatError, TrainingError
from balfeat.schedules import ScheduleName, lr_factor


@dataclass
class ProbeConfig:
    """Hyper-parameters of a linear probe (defaults: MoCo's linear classification protocol).

    Attributes:
        epochs: training epochs (reference 100).
        lr: initial learning rate (reference 30, for features of an unnormalised backbone).
        momentum: SGD momentum.
        weight_decay: SGD weight decay (reference 0).
        milestones: epochs at which the lr is multiplied by ``gamma``; ``None`` scales the
            reference's (60, 80) of 100 epochs to ``epochs``.
        gamma: lr factor at each milestone.
        schedule: ``"step"`` (milestones) or ``"cosine"`` (cosine decay to 0 over ``epochs``).
        batch_size: samples per step.
        bias: learn a bias (``False`` is BalFeat's ``--no-bias`` option).
        init_std: std of the normal initialisation of the weights.
        balanced: class-balanced sampling (pick a class uniformly, then ``repeat`` of its
            samples) instead of one pass over the shuffled data per epoch.
        repeat: samples of a class drawn together under balanced sampling.
        seed: seed of the initialisation and the sampling order.
        eval_every: validate every this many epochs (and always after the last one).
    """

    epochs: int = 100
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    schedule: str = "step"
    batch_size: int = 256
    bias: bool = True
    init_std: float = 0.01
    balanced: bool = False
    repeat: int = 1
    seed: int = 0
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise BalfeatError(f"probe epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise BalfeatError(f"probe batch_size must be >= 1, got {self.batch_size}")
        if self.schedule not in ("step", "cosine"):
            raise BalfeatError(f"unknown probe schedule {self.schedule!r}; use 'step' or 'cosine'")
        if self.repeat < 1:
            raise BalfeatError(f"repeat must be >= 1, got {self.repeat}")

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
        d = asdict(self)
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


def balanced_indices(
    labels: torch.Tensor, num_samples: int, repeat: int, generator: torch.Generator
) -> torch.Tensor:
    """Class-balanced sample: pick a class uniformly, then ``repeat`` random samples of it.

    Args:
        labels: class of each sample (CPU). Shape: (N,).
        num_samples: indices to return (rounded up to a multiple of ``repeat`` then cut).
        repeat: samples drawn per picked class.
        generator: CPU generator (seeded per epoch by the caller).

    Returns:
        Sample indices. Shape: (num_samples,).
    """
    labels = labels.cpu()
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique(labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    groups = -(-num_samples // repeat)
    picked = torch.randint(len(classes), (groups,), generator=generator)
    picked = picked.repeat_interleave(repeat)
    offs = (torch.rand(picked.shape, generator=generator) * counts[picked]).long()
    offs = torch.minimum(offs, counts[picked] - 1)
    return order[starts[picked] + offs][:num_samples]


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


class _BalancedSampler(Sampler[int]):
    """Fallback class-balanced sampler (``balfeat.data.samplers.ClassBalancedSampler`` shape)."""

    def __init__(self, labels: np.ndarray, repeat: int = 1, seed: int = 0) -> None:
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.repeat = repeat
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        idx = balanced_indices(self.labels, len(self.labels), self.repeat, gen)
        return iter(idx.tolist())


def _balanced_sampler(labels: np.ndarray, repeat: int, seed: int) -> Sampler[int]:
    try:
        from balfeat.data.samplers import ClassBalancedSampler
    except ImportError:
        return _BalancedSampler(labels, repeat=repeat, seed=seed)
    return ClassBalancedSampler(labels, repeat=repeat, seed=seed, num_replicas=1, rank=0)


def _topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(1) == labels).sum())


def snapshot_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of every parameter and buffer (BN running stats included)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def check_backbone_unchanged(
    backbone: nn.Module, snapshot: dict[str, torch.Tensor], where: str = "linear probe"
) -> None:
    """The reference sanity check: the frozen backbone must be exactly as before training.

    Raises:
        TrainingError: listing the weights or buffers (e.g. BN running stats) that changed.
    """
    now = backbone.state_dict()
    changed = [
        k
        for k, v in snapshot.items()
        if k not in now or now[k].shape != v.shape or not torch.equal(now[k].detach().cpu(), v)
    ]
    if changed:
        shown = ", ".join(changed[:8]) + (
            f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        )
        raise TrainingError(
            f"{where}: the frozen backbone changed during training ({len(changed)} tensors: "
            f"{shown}); a frozen backbone must run in eval mode with no gradient - check that "
            "its forward does not switch BatchNorm to train mode or update weights"
        )


def _evaluate_logits(fc: nn.Module, feats: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fc(feats[i : i + batch]) for i in range(0, len(feats), batch)])


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


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

    Returns:
        The :class:`ProbeResult` of the best validation epoch.
    """
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
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
        return _train_loop(
            fc, xs, ys, xv, yv, n, cfg, dev, params, protocol, log, start, train_labels
        )
    finally:
        torch.set_num_threads(threads)


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
) -> ProbeResult:
    train_params = list(params) if params is not None else list(fc.parameters())
    opt = torch.optim.SGD(
        train_params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    labels_cpu = train_labels.cpu().long()
    best_top1 = -1.0
    best_state: dict[str, torch.Tensor] = {}
    best_logits = torch.empty(0)
    best_epoch = 0
    history: list[dict[str, float]] = []
    epochs: Any = range(cfg.epochs)
    if log is not None:  # one bar over the epochs (each takes well under a second)
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=f"[{protocol}] epochs", file=sys.stderr, leave=False)
    for epoch in epochs:
        lr = cfg.lr_at(epoch)
        _set_lr(opt, lr)
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
            loss = F.cross_entropy(logits, yb)
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
        if not math.isfinite(record["loss"]):
            raise TrainingError(
                f"{protocol} probe: non-finite loss at epoch {epoch + 1} (lr {lr}); lower the "
                "learning rate (--lr) or check the features for NaN/inf"
            )
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            fc.eval()
            vlog = _evaluate_logits(fc, xv)
            top1 = _topk_hits(vlog, yv) * 100.0 / max(len(yv), 1)
            record["val_top1"] = top1
            if top1 > best_top1:
                best_top1, best_epoch = top1, epoch + 1
                best_state = {k: v.detach().clone() for k, v in fc.state_dict().items()}
                best_logits = vlog.detach()
            if log is not None:
                log(
                    f"[{protocol}] epoch {epoch + 1}/{cfg.epochs} lr {lr:.4g} "
                    f"loss {record['loss']:.4f} train {record['train_top1']:.2f} val {top1:.2f}"
                )
        history.append(record)
    fc.load_state_dict(best_state)
    return ProbeResult(
        classifier=_to_cpu_linear(fc),
        best_epoch=best_epoch,
        best_top1=best_top1,
        val_logits=best_logits.cpu(),
        val_labels=yv.cpu(),
        history=history,
        protocol=protocol,
        seconds=time.perf_counter() - start,
    )


def _to_cpu_linear(fc: nn.Module) -> Any:
    return fc.cpu().eval()


def _backbone_out_dim(backbone: nn.Module, dataset: Dataset, device: torch.device) -> int:
    out_dim = getattr(backbone, "out_dim", None)
    if isinstance(out_dim, int):
        return out_dim
    image, _ = dataset[0]
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        d = int(backbone(torch.as_tensor(image).unsqueeze(0).to(device)).shape[1])
    backbone.train(was)
    return d


def probe_fast(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    device: torch.device | str | None = None,
    passes: int = 0,
    feature_batch_size: int = 256,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Fast protocol end to end: extract features once, then :func:`train_linear_on_features`.

    Args:
        backbone: frozen feature extractor (B, C, H, W) -> (B, D).
        train_dataset: training images; with ``passes > 0`` its transform should augment.
        val_dataset: validation images with the evaluation transform.
        num_classes: C.
        cfg: probe hyper-parameters.
        device: where to run; defaults to the backbone's device.
        passes: 0 for un-augmented features, N for N augmented passes over the training set.
        feature_batch_size: batch size of the feature extraction.
        num_workers: DataLoader workers of the feature extraction.
        log: progress lines.
    """
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else _module_device(backbone)
    backbone.to(dev)
    snap = snapshot_state(backbone)
    show = log is not None
    xtr, ytr = extract_features(
        backbone, train_dataset, feature_batch_size, dev, passes, cfg.seed, num_workers, True, show
    )
    xva, yva = extract_features(
        backbone, val_dataset, feature_batch_size, dev, 0, cfg.seed, num_workers, True, show
    )
    t_feat = time.perf_counter() - start
    check_backbone_unchanged(backbone, snap, "fast probe feature extraction")
    res = train_linear_on_features(xtr, ytr, xva, yva, num_classes, cfg, dev, log=log)
    res.seconds = time.perf_counter() - start
    res.extras["feature_seconds"] = t_feat
    res.extras["passes"] = passes
    return res


def _module_device(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def probe_reference(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Reference protocol: every step runs the frozen backbone on freshly augmented images.

    The backbone stays in eval mode (BN statistics frozen) and runs without gradients; only the
    linear classifier learns. After training, every backbone weight and buffer is compared to
    its value before training (the reference's ``sanity_check``).

    Args:
        backbone: frozen feature extractor (B, C, H, W) -> (B, D).
        train_dataset: training images with the augmenting transform (RandomResizedCrop + flip).
        val_dataset: validation images with the evaluation transform.
        num_classes: C.
        cfg: probe hyper-parameters.
        device: where to run; defaults to the backbone's device.
        num_workers: DataLoader workers.
        log: progress lines.

    Raises:
        TrainingError: the backbone changed during training, or the loss became non-finite.
    """
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else _module_device(backbone)
    backbone.to(dev)
    snap = snapshot_state(backbone)
    requires = [p.requires_grad for p in backbone.parameters()]
    for p in backbone.parameters():
        p.requires_grad_(False)
    fc = make_classifier(_backbone_out_dim(backbone, val_dataset, dev), num_classes, cfg).to(dev)
    opt = torch.optim.SGD(
        fc.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    train_targets = dataset_targets(train_dataset)
    sampler: Sampler[int] | None = None
    if cfg.balanced:
        sampler = _balanced_sampler(train_targets, cfg.repeat, cfg.seed)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    pin = dev.type == "cuda"
    val_loader = DataLoader(
        val_dataset,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin,
    )
    best_top1, best_epoch = -1.0, 0
    best_state: dict[str, torch.Tensor] = {}
    best_logits = torch.empty(0)
    val_labels = torch.empty(0, dtype=torch.int64)
    history: list[dict[str, float]] = []
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        for epoch in range(cfg.epochs):
            lr = cfg.lr_at(epoch)
            _set_lr(opt, lr)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            loader_gen.manual_seed(cfg.seed * 100003 + epoch)
            loader = DataLoader(
                train_dataset,
                batch_size=cfg.batch_size,
                shuffle=sampler is None,
                sampler=sampler,
                num_workers=num_workers,
                pin_memory=pin,
                generator=loader_gen,
            )
            backbone.eval()
            fc.train()
            total_loss, hits, seen = 0.0, 0, 0
            # Augmentations draw from torch's global RNG: fork it so training is reproducible
            # and the caller's RNG stream is left alone.
            with torch.random.fork_rng(devices=cuda_devices):
                torch.manual_seed(cfg.seed * 100003 + epoch)
                batches: Any = loader
                if log is not None:  # a progress bar per epoch (off with --quiet)
                    from tqdm import tqdm

                    batches = tqdm(
                        loader,
                        desc=f"[reference] epoch {epoch + 1}/{cfg.epochs}",
                        file=sys.stderr,
                        leave=False,
                        dynamic_ncols=True,
                    )
                for images, labels in batches:
                    images = images.to(dev, non_blocking=True)
                    labels = torch.as_tensor(labels).to(dev, non_blocking=True)
                    with torch.no_grad():
                        feats = backbone(images)
                    logits = fc(feats.float())
                    loss = F.cross_entropy(logits, labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total_loss += float(loss.detach()) * len(labels)
                    hits += _topk_hits(logits.detach(), labels)
                    seen += len(labels)
            record = {
                "epoch": float(epoch + 1),
                "lr": lr,
                "loss": total_loss / max(seen, 1),
                "train_top1": hits * 100.0 / max(seen, 1),
            }
            if not math.isfinite(record["loss"]):
                raise TrainingError(
                    f"reference probe: non-finite loss at epoch {epoch + 1} (lr {lr}); lower the "
                    "learning rate (--lr)"
                )
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                backbone.eval()
                fc.eval()
                outs: list[torch.Tensor] = []
                labs: list[torch.Tensor] = []
                with torch.no_grad():
                    for images, labels in val_loader:
                        outs.append(fc(backbone(images.to(dev)).float()).cpu())
                        labs.append(torch.as_tensor(labels, dtype=torch.int64))
                vlog, val_labels = torch.cat(outs), torch.cat(labs)
                top1 = _topk_hits(vlog, val_labels) * 100.0 / max(len(val_labels), 1)
                record["val_top1"] = top1
                if top1 > best_top1:
                    best_top1, best_epoch = top1, epoch + 1
                    best_state = {k: v.detach().clone() for k, v in fc.state_dict().items()}
                    best_logits = vlog
                if log is not None:
                    log(
                        f"[reference] epoch {epoch + 1}/{cfg.epochs} lr {lr:.4g} "
                        f"loss {record['loss']:.4f} train {record['train_top1']:.2f} "
                        f"val {top1:.2f}"
                    )
            history.append(record)
    finally:
        for p, r in zip(backbone.parameters(), requires, strict=True):
            p.requires_grad_(r)
    check_backbone_unchanged(backbone, snap, "reference probe")
    fc.load_state_dict(best_state)
    return ProbeResult(
        classifier=_to_cpu_linear(fc),
        best_epoch=best_epoch,
        best_top1=best_top1,
        val_logits=best_logits,
        val_labels=val_labels,
        history=history,
        protocol="reference",
        seconds=time.perf_counter() - start,
    )


def copy_classifier(fc: nn.Linear) -> nn.Linear:
    """A deep copy of a classifier (so decoupled methods never modify their input)."""
    return copy.deepcopy(fc)


def run_probe(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    protocol: str = "fast",
    device: torch.device | str | None = None,
    passes: int = 0,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Dispatch to :func:`probe_fast` or :func:`probe_reference` by ``protocol``."""
    if protocol == "fast":
        return probe_fast(
            backbone,
            train_dataset,
            val_dataset,
            num_classes,
            cfg,
            device,
            passes,
            num_workers=num_workers,
            log=log,
        )
    if protocol == "reference":
        return probe_reference(
            backbone, train_dataset, val_dataset, num_classes, cfg, device, num_workers, log
        )
    raise BalfeatError(f"unknown probe protocol {protocol!r}; use 'fast' or 'reference'")


def probe_summary(
    result: ProbeResult,
    train_counts: Sequence[int] | np.ndarray,
    class_names: Sequence[str] | None = None,
    grouping: Any = None,
    cfg: ProbeConfig | None = None,
) -> dict[str, Any]:
    """The results dict of a probe: metrics of its best epoch plus protocol details."""
    from balfeat.evaluation.metrics import evaluate

    out = evaluate(
        result.val_logits.numpy(), result.val_labels.numpy(), train_counts, class_names, grouping
    )
    out.update(
        protocol=result.protocol,
        best_epoch=result.best_epoch,
        epochs=len(result.history),
        seconds=result.seconds,
        history=result.history,
        **{k: v for k, v in result.extras.items() if isinstance(v, (int, float, str))},
    )
    if cfg is not None:
        out["config"] = cfg.as_dict()
    return out


def probe_unseen(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    class_set: Sequence[int],
    cfg: ProbeConfig | None = None,
    protocol: str = "fast",
    device: torch.device | str | None = None,
    grouping: Any = None,
    class_names: Sequence[str] | None = None,
    passes: int = 0,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Unseen-class protocol: probe on class set A and, separately, on its complement B.

    A representation learned on classes A is evaluated on A ("seen") and on the remaining classes
    B ("unseen"), each with its own linear classifier, reported side by side.

    Args:
        backbone: frozen feature extractor.
        train_dataset: training images of all classes (``.targets``).
        val_dataset: validation images of all classes.
        class_set: the labels of set A.
        cfg, protocol, device, passes, num_workers, log: as in :func:`run_probe`.
        grouping: many/medium/few grouping.
        class_names: names of all classes.

    Returns:
        ``{"A": results, "B": results, "classes_A": [...], "classes_B": [...]}`` with the results
        of :func:`probe_summary` (per-class rows carry the original class ids).
    """
    targets = dataset_targets(train_dataset)
    num_classes = int(getattr(train_dataset, "num_classes", int(targets.max()) + 1))
    a = sorted({int(c) for c in class_set})
    bad = [c for c in a if c < 0 or c >= num_classes]
    if bad:
        raise BalfeatError(f"class set holds labels {bad} outside [0, {num_classes})")
    b = [c for c in range(num_classes) if c not in set(a)]
    if not a or not b:
        raise BalfeatError(
            f"the class set must leave both sets non-empty (A has {len(a)} classes, B {len(b)})"
        )
    counts = np.bincount(targets, minlength=num_classes)
    out: dict[str, Any] = {"classes_A": a, "classes_B": b}
    for name, classes in (("A", a), ("B", b)):
        tr, va = ClassSubset(train_dataset, classes), ClassSubset(val_dataset, classes)
        res = run_probe(
            backbone, tr, va, len(classes), cfg, protocol, device, passes, num_workers, log
        )
        names = [class_names[c] for c in classes] if class_names is not None else None
        summary = probe_summary(res, counts[classes], names, grouping, cfg)
        for row in summary["per_class"]:
            row["class"] = classes[row["class"]]
        out[name] = summary
    return out
