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
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from balfeat.classify.image_loop import train_on_images
from balfeat.classify.linear import (
    ProbeConfig,
    ProbeResult,
    copy_classifier,
    train_linear_on_features,
)
from balfeat.data.prepare import dataset_targets
from balfeat.errors import BalfeatError
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
    keep: Literal["best", "last"] = "best",
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
        keep: the ``best`` epoch on the validation features or the ``last`` one.
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
        keep=keep,
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
    if not math.isfinite(tau):
        raise BalfeatError(f"tau_normalize: tau must be a finite number (0 to 1), got {tau}")
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
    keep: Literal["best", "last"] = "best",
) -> tuple[LWSClassifier, ProbeResult]:
    """Learnable weight scaling: learn one scale per class, class-balanced, classifier frozen.

    Returns:
        The trained :class:`LWSClassifier` (the kept epoch: ``keep`` best or last) and the
        :class:`ProbeResult` whose ``classifier`` is that module.
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
        keep=keep,
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
    return train_on_images(
        backbone,
        copy_classifier(classifier),
        train_dataset,
        val_dataset,
        cfg,
        device,
        train_backbone=True,
        protocol="finetune",
        num_workers=num_workers,
        drop_last=len(dataset_targets(train_dataset)) > cfg.batch_size,
        log=log,
    )


def tau_sweep_from_logits(saved: dict[str, Any], grouping: str, counts: Any) -> dict[str, Any]:
    """Tau sweep from a saved probe (``probe.pth``: ``classifier`` state, ``val_logits``,
    ``val_labels``): the features are recovered as the least-squares preimage of the logits."""
    state = saved["classifier"]
    w = state["weight"]
    b = state.get("bias")
    fc = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    fc.load_state_dict(state)
    z = saved["val_logits"] - (b if b is not None else 0)
    # x = W^+ z reproduces the logits exactly when D >= C (the usual case)
    x = z @ torch.linalg.pinv(w).T
    return tau_sweep(fc, x, saved["val_labels"], counts, grouping=grouping)
