"""Decoupled classifier learning on a fixed representation.

Implements the classifier-balancing methods of Kang et al., "Decoupling Representation and
Classifier for Long-Tailed Recognition" (ICLR 2020, https://arxiv.org/abs/1910.09217):

- cRT: a fresh linear classifier re-trained with class-balanced sampling on frozen features;
- tau-normalisation: each class's weight vector divided by its norm to the power tau;
- LWS: a learnable scale per class on top of a frozen classifier, trained class-balanced;
- full fine-tuning of backbone and classifier from a checkpoint (BalFeat's ``2full`` step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from balfeat.classify.probe import (
    ProbeConfig,
    ProbeResult,
    _balanced_sampler,
    _module_device,
    copy_classifier,
    dataset_targets,
    train_linear_on_features,
)
from balfeat.errors import BalfeatError, TrainingError
from balfeat.evaluation.metrics import ShotGrouping, evaluate

#: The tau values of the reference sweep: 0.0, 0.1, ..., 1.0.
DEFAULT_TAUS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def crt(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    device: torch.device | str | None = None,
    log: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Classifier re-training: a fresh linear classifier, class-balanced sampling, frozen features.

    Args:
        train_features: Shape: (N, D) or (P, N, D) for P augmented passes.
        train_labels: Shape: (N,).
        val_features: Shape: (N_val, D).
        val_labels: Shape: (N_val,).
        num_classes: C.
        cfg: probe hyper-parameters; ``balanced`` is forced on.
        device: where to train.
        log: progress lines.
    """
    cfg = replace(cfg or ProbeConfig(), balanced=True)
    return train_linear_on_features(
        train_features,
        train_labels,
        val_features,
        val_labels,
        num_classes,
        cfg,
        device,
        protocol="crt",
        log=log,
    )


def tau_normalize(classifier: nn.Linear, tau: float, keep_bias: bool = True) -> nn.Linear:
    """Tau-normalised copy of a classifier: row ``w_c`` becomes ``w_c / ||w_c||^tau``.

    Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition" (ICLR
    2020, https://arxiv.org/abs/1910.09217, Sec. 4): tau-normalisation rescales the weights only,
    so at ``tau = 0`` the classifier is unchanged — the bias is kept by default, which makes
    ``tau = 0`` reproduce the plain classifier exactly. BalFeat's ``util.TauLayer`` (and
    classifier-balancing, whose classifiers are trained without bias) drop the bias; pass
    ``keep_bias=False`` for that behaviour (identical when the classifier has no bias).

    Args:
        classifier: weights (C, D) and an optional bias (C,).
        tau: 0 leaves the weights as they are, 1 gives unit-norm class vectors.
        keep_bias: keep the bias (default); ``False`` drops it as BalFeat's TauLayer does.
    """
    out = nn.Linear(
        classifier.in_features,
        classifier.out_features,
        bias=keep_bias and classifier.bias is not None,
    )
    with torch.no_grad():
        w = classifier.weight.detach()
        norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out.weight.copy_(w / norms.pow(tau))
        if out.bias is not None and classifier.bias is not None:
            out.bias.copy_(classifier.bias.detach())
    return out


def tau_sweep(
    classifier: nn.Linear,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    train_counts: Sequence[int] | np.ndarray,
    taus: Sequence[float] = DEFAULT_TAUS,
    grouping: str | ShotGrouping | None = None,
    keep_bias: bool = True,
) -> dict[str, Any]:
    """Evaluate tau-normalisation for each tau.

    Args:
        classifier: trained classifier (C, D).
        val_features: Shape: (N_val, D).
        val_labels: Shape: (N_val,).
        train_counts: training images per class, for many/medium/few. Shape: (C,).
        taus: the values to try (default 0.0 to 1.0 in steps of 0.1).
        grouping: many/medium/few grouping.
        keep_bias: keep the classifier bias (default; ``tau = 0`` is then the plain classifier).

    Returns:
        ``{"sweep": [{"tau", "top1", "many", "medium", "few"}...], "best_tau", "best_top1"}``.
        Selecting tau on the test set is optimistic; use a held-out split to pick it.
    """
    rows: list[dict[str, Any]] = []
    x = val_features.float().cpu()
    for tau in taus:
        fc = tau_normalize(classifier.cpu(), tau, keep_bias)
        with torch.no_grad():
            logits = fc(x).numpy()
        res = evaluate(logits, val_labels.cpu().numpy(), train_counts, grouping=grouping)
        rows.append(
            {
                "tau": float(tau),
                "top1": res["top1"],
                "many": res["many"],
                "medium": res["medium"],
                "few": res["few"],
            }
        )
    best = max(rows, key=lambda r: -1.0 if r["top1"] is None else r["top1"])
    return {"sweep": rows, "best_tau": best["tau"], "best_top1": best["top1"]}


class LWSClassifier(nn.Module):
    """A frozen linear classifier with a learnable scale per class: ``s_c * (w_c . x + b_c)``.

    Shape: input (B, D) -> logits (B, C).
    """

    def __init__(self, classifier: nn.Linear) -> None:
        super().__init__()
        self.fc = copy_classifier(classifier)
        for p in self.fc.parameters():
            p.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(classifier.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scales


def lws(
    classifier: nn.Linear,
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    cfg: ProbeConfig | None = None,
    device: torch.device | str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[LWSClassifier, ProbeResult]:
    """Learnable weight scaling: learn one scale per class, class-balanced, classifier frozen.

    Returns:
        The trained :class:`LWSClassifier` (best epoch) and the :class:`ProbeResult` whose
        ``classifier`` is that module.
    """
    cfg = replace(cfg or ProbeConfig(epochs=10, lr=0.2), balanced=True)
    model = LWSClassifier(classifier)
    res = train_linear_on_features(
        train_features,
        train_labels,
        val_features,
        val_labels,
        classifier.out_features,
        cfg,
        device,
        classifier=model,
        params=[model.scales],
        protocol="lws",
        log=log,
    )
    return model, res


def finetune(
    backbone: nn.Module,
    classifier: nn.Linear,
    train_dataset: Dataset,
    val_dataset: Dataset,
    cfg: ProbeConfig | None = None,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Fine-tune backbone and classifier together (BalFeat's ``2full`` step, 10 epochs).

    The backbone runs in train mode (BN statistics update) and is modified in place; the best
    epoch by validation top-1 is restored in both at the end.

    Args:
        backbone: feature extractor (B, C, H, W) -> (B, D), modified in place.
        classifier: initial linear classifier (e.g. from a probe), copied.
        train_dataset: training images with the augmenting transform; ``cfg.balanced`` samples
            them class-balanced.
        val_dataset: validation images with the evaluation transform.
        cfg: hyper-parameters; default 10 epochs, lr 0.01, cosine, weight decay 1e-4.
        device: where to train.
        num_workers: DataLoader workers.
        log: progress lines.
    """
    cfg = cfg or ProbeConfig(epochs=10, lr=0.01, weight_decay=1e-4, schedule="cosine")
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else _module_device(backbone)
    fc = copy_classifier(classifier).to(dev)
    backbone.to(dev)
    for p in backbone.parameters():
        p.requires_grad_(True)
    params = list(backbone.parameters()) + list(fc.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sampler = (
        _balanced_sampler(dataset_targets(train_dataset), cfg.repeat, cfg.seed)
        if (cfg.balanced)
        else None
    )
    gen = torch.Generator()
    val_loader = DataLoader(val_dataset, batch_size=cfg.batch_size, num_workers=num_workers)
    best_top1, best_epoch = -1.0, 0
    best_state: dict[str, Any] = {}
    best_logits = torch.empty(0)
    val_labels = torch.empty(0, dtype=torch.int64)
    history: list[dict[str, float]] = []
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    for epoch in range(cfg.epochs):
        lr = cfg.lr_at(epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        gen.manual_seed(cfg.seed * 100003 + epoch)
        loader = DataLoader(
            train_dataset,
            batch_size=cfg.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=num_workers,
            generator=gen,
            drop_last=len(dataset_targets(train_dataset)) > cfg.batch_size,
        )
        backbone.train()
        fc.train()
        total, seen = 0.0, 0
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(cfg.seed * 100003 + epoch)
            for images, labels in loader:
                images, labels = images.to(dev), torch.as_tensor(labels).to(dev)
                loss = F.cross_entropy(fc(backbone(images)), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(labels)
                seen += len(labels)
        record = {"epoch": float(epoch + 1), "lr": lr, "loss": total / max(seen, 1)}
        if not math.isfinite(record["loss"]):
            raise TrainingError(
                f"fine-tuning: non-finite loss at epoch {epoch + 1} (lr {lr}); lower the lr"
            )
        backbone.eval()
        fc.eval()
        outs, labs = [], []
        with torch.no_grad():
            for images, labels in val_loader:
                outs.append(fc(backbone(images.to(dev))).cpu())
                labs.append(torch.as_tensor(labels, dtype=torch.int64))
        vlog, val_labels = torch.cat(outs), torch.cat(labs)
        top1 = float((vlog.argmax(1) == val_labels).float().mean() * 100)
        record["val_top1"] = top1
        if top1 > best_top1:
            best_top1, best_epoch, best_logits = top1, epoch + 1, vlog
            best_state = {
                "backbone": {k: v.detach().clone() for k, v in backbone.state_dict().items()},
                "fc": {k: v.detach().clone() for k, v in fc.state_dict().items()},
            }
        if log is not None:
            log(
                f"[finetune] epoch {epoch + 1}/{cfg.epochs} "
                f"loss {record['loss']:.4f} val {top1:.2f}"
            )
        history.append(record)
    if not best_state:
        raise BalfeatError("fine-tuning ran no epoch")
    backbone.load_state_dict(best_state["backbone"])
    fc.load_state_dict(best_state["fc"])
    return ProbeResult(
        classifier=fc.cpu().eval(),
        best_epoch=best_epoch,
        best_top1=best_top1,
        val_logits=best_logits,
        val_labels=val_labels,
        history=history,
        protocol="finetune",
        seconds=time.perf_counter() - start,
    )
