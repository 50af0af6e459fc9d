"""Weighted k-nearest-neighbour classifier on features: the online monitor of pre-training.

Cosine similarity, the ``k`` most similar training features vote for their class with weight
``exp(sim / T)``, as in Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR 2018, https://arxiv.org/abs/1805.01978, Sec. 3.4) and the weighted kNN
monitor of solo-learn (k = 20, T = 0.07 there; k = 200 in InstDisc).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    T: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores of each test feature from its ``k`` nearest training features.

    Args:
        train_features: (N, D) training features (normalised here).
        train_labels: (N,) int64 classes.
        test_features: (M, D) features to classify.
        num_classes: C.
        k: neighbours (clipped to N).
        T: temperature of the vote weights ``exp(cos / T)``.
        chunk: test rows per similarity block (bounds memory at chunk x N).

    Returns:
        (M, C) summed vote weights; ``argmax`` is the prediction.
    """
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise BalfeatError("knn_predict needs 2-D (N, D) feature matrices")
    if train_features.shape[0] == 0:
        raise BalfeatError("knn_predict needs at least one training feature")
    if k < 1 or T <= 0:
        raise BalfeatError(f"knn_predict needs k >= 1 and T > 0, got k={k}, T={T}")
    k = min(k, train_features.shape[0])
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    out = []
    for start in range(0, test_features.shape[0], chunk):
        q = F.normalize(test_features[start : start + chunk].float(), dim=1)
        sim = q @ train.T  # (m, N)
        top_sim, top_idx = sim.topk(k, dim=1)  # (m, k)
        weights = (top_sim / T).exp()
        scores = torch.zeros(q.shape[0], num_classes, device=q.device)
        scores.scatter_add_(1, labels[top_idx], weights)
        out.append(scores)
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    T: float = 0.07,
) -> float:
    """Top-1 accuracy (%) of :func:`knn_predict` on labelled test features."""
    if test_features.shape[0] == 0:
        raise BalfeatError("knn_accuracy needs at least one test feature")
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, T)
    return float((scores.argmax(1) == test_labels.long()).float().mean() * 100.0)
