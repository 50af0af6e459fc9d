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

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from balfeat.classify.features import extract_features
from balfeat.classify.image_loop import (
    check_backbone_unchanged,
    module_device,
    snapshot_state,
    train_on_images,
)
from balfeat.classify.linear import (
    ProbeConfig,
    ProbeResult,
    balanced_order,
    copy_classifier,
    make_classifier,
    train_linear_on_features,
)
from balfeat.data.prepare import ClassSubset, dataset_targets
from balfeat.errors import BalfeatError

# The building blocks live in classify.linear / classify.image_loop; this module is the protocol
# front-end and re-exports them for ``from balfeat.classify.probe import ProbeConfig`` users.
__all__ = [
    "ProbeConfig",
    "ProbeResult",
    "balanced_order",
    "check_backbone_unchanged",
    "copy_classifier",
    "make_classifier",
    "probe_decoupled",
    "probe_fast",
    "probe_reference",
    "probe_summary",
    "probe_unseen",
    "run_probe",
    "short_summary",
    "snapshot_state",
    "train_linear_on_features",
]


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
    *,
    device: torch.device | str | None = None,
    passes: int = 0,
    feature_batch_size: int = 256,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
    keep: Literal["best", "last"] = "best",
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
        keep: ``best`` epoch on ``val_dataset`` or the ``last`` one.
    """
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else module_device(backbone)
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
    res = train_linear_on_features(xtr, ytr, xva, yva, num_classes, cfg, dev, log=log, keep=keep)
    res.seconds = time.perf_counter() - start
    res.extras["feature_seconds"] = t_feat
    res.extras["passes"] = passes
    return res


def probe_reference(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    *,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
    keep: Literal["best", "last"] = "best",
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
        keep: ``best`` epoch on ``val_dataset`` or the ``last`` one.

    Raises:
        TrainingError: the backbone changed during training, or the loss became non-finite.
    """
    cfg = cfg or ProbeConfig()
    dev = torch.device(device) if device is not None else module_device(backbone)
    backbone.to(dev)
    fc = make_classifier(_backbone_out_dim(backbone, val_dataset, dev), num_classes, cfg)
    return train_on_images(
        backbone, fc, train_dataset, val_dataset, cfg, dev, train_backbone=False,
        protocol="reference", num_workers=num_workers, log=log, keep=keep,
    )  # fmt: skip


def run_probe(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    *,
    protocol: str = "fast",
    device: torch.device | str | None = None,
    passes: int = 0,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
    keep: Literal["best", "last"] = "best",
) -> ProbeResult:
    """Dispatch to :func:`probe_fast` or :func:`probe_reference` by ``protocol``."""
    if protocol == "fast":
        return probe_fast(
            backbone, train_dataset, val_dataset, num_classes, cfg,
            device=device, passes=passes, num_workers=num_workers, log=log, keep=keep,
        )  # fmt: skip
    if protocol == "reference":
        return probe_reference(
            backbone, train_dataset, val_dataset, num_classes, cfg,
            device=device, num_workers=num_workers, log=log, keep=keep,
        )  # fmt: skip
    raise BalfeatError(f"unknown probe protocol {protocol!r}; use 'fast' or 'reference'")


def probe_summary(
    result: ProbeResult,
    train_counts: Sequence[int] | np.ndarray,
    *,
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
    *,
    protocol: str = "fast",
    device: torch.device | str | None = None,
    grouping: Any = None,
    class_names: Sequence[str] | None = None,
    passes: int = 0,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
    select_dataset: Dataset | None = None,
    keep: Literal["best", "last"] = "best",
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
        select_dataset: where the best epoch is chosen (default ``val_dataset``, the
            reference's practice); the numbers are measured on ``val_dataset`` either way.
        keep: ``best`` epoch or the ``last`` one.

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
        sv = va if select_dataset is None else ClassSubset(select_dataset, classes)
        res = run_probe(
            backbone, tr, sv, len(classes), cfg, protocol=protocol, device=device,
            passes=passes, num_workers=num_workers, log=log, keep=keep,
        )  # fmt: skip
        if sv is not va:  # chosen on the selection split: measured on the evaluation list
            from balfeat.classify.selection import evaluate_on_test

            dev = device if device is not None else module_device(backbone)
            evaluate_on_test(res, backbone, va, dev, num_workers)
        names = [class_names[c] for c in classes] if class_names is not None else None
        summary = probe_summary(res, counts[classes], class_names=names, grouping=grouping, cfg=cfg)
        for row in summary["per_class"]:
            row["class"] = classes[row["class"]]
        out[name] = summary
    return out


def short_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a results dict (top-1/5, many/medium/few, balancedness, ...)."""
    keys = ("top1", "top5", "many", "medium", "few", "balancedness", "best_epoch", "protocol")
    return {k: results[k] for k in keys if k in results}


def probe_decoupled(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    result: ProbeResult,
    cfg: ProbeConfig,
    *,
    methods: Sequence[str],
    counts: Sequence[int] | np.ndarray,
    names: Sequence[str],
    grouping: Any,
    device: torch.device,
    num_workers: int = 0,
    test_dataset: Dataset | None = None,
    keep: Literal["best", "last"] = "best",
) -> dict[str, Any]:
    """Decoupled classifiers (``methods`` from crt, tau, lws) on the probe's un-augmented
    features, beside the probe's own ``result``: ``{name: short results}`` (tau: its sweep).

    Their choices (cRT/LWS epoch, τ) are made on ``val_dataset``; their numbers are measured on
    ``test_dataset`` (default: ``val_dataset``, the reference's practice). ``keep="last"``
    chooses nothing: the last epochs, and the τ sweep without a pick.
    """
    from balfeat.classify.decoupled import crt, lws

    seed = cfg.seed
    xtr, ytr = extract_features(backbone, train_dataset, 256, device, 0, seed, num_workers, True)
    xva, yva = extract_features(backbone, val_dataset, 256, device, 0, seed, num_workers, True)
    xte, yte = xva, yva
    if test_dataset is not None and test_dataset is not val_dataset:
        xte, yte = extract_features(backbone, test_dataset, 256, device, 0, seed, num_workers, True)
    num_classes = int(result.val_logits.shape[1])

    def on_test(r: ProbeResult) -> dict[str, Any]:
        if xte is not xva:
            r.val_logits = r.classifier.to(xte.device)(xte.float()).detach().cpu()
            r.val_labels = yte.cpu()
        return short_summary(probe_summary(r, counts, class_names=names, grouping=grouping))

    out: dict[str, Any] = {}
    if "crt" in methods:
        out["crt"] = on_test(crt(xtr, ytr, xva, yva, num_classes, cfg, device, keep=keep))
    if "tau" in methods:
        base = result.classifier
        if cfg.balanced:  # tau-norm is applied to an instance-balanced classifier
            plain = replace(cfg, balanced=False)
            base = train_linear_on_features(
                xtr, ytr, xva, yva, num_classes, plain, device, keep=keep
            ).classifier
        test = (xte, yte) if xte is not xva else None
        out["tau"] = tau_choice(base, xva, yva, test, counts, grouping, keep)
    if "lws" in methods:
        lws_cfg = replace(cfg, lr=0.2, milestones=None)
        _, r = lws(result.classifier, xtr, ytr, xva, yva, lws_cfg, device, keep=keep)
        out["lws"] = on_test(r)
    return out


def tau_choice(
    base: nn.Linear,
    xva: torch.Tensor,
    yva: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    counts: Sequence[int] | np.ndarray,
    grouping: Any,
    keep: Literal["best", "last"],
) -> dict[str, Any]:
    """The τ sweep measured on the ``test`` features (None: the selection features themselves,
    the reference's practice), τ picked on the selection features ``xva``/``yva``;
    ``keep="last"``: no pick (``best_tau`` None)."""
    from balfeat.classify.decoupled import tau_sweep

    xte, yte = test if test is not None else (xva, yva)
    swept = tau_sweep(base, xte, yte, counts, grouping=grouping)
    if keep == "last":
        return {"sweep": swept["sweep"], "best_tau": None, "best_top1": None}
    if test is not None:
        picked = tau_sweep(base, xva, yva, counts, grouping=grouping)
        tau = picked["best_tau"]
        top1 = next(r["top1"] for r in swept["sweep"] if r["tau"] == tau)
        return {**swept, "best_tau": tau, "best_top1": top1, "select_sweep": picked["sweep"]}
    return swept
