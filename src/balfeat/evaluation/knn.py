"""Weighted k-nearest-neighbour classifier on features: the online monitor of pre-training.

Cosine similarity, the ``k`` most similar training features vote for their class with weight
``exp(sim / T)``, as in Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR 2018, https://arxiv.org/abs/1805.01978, Sec. 3.4) and the weighted kNN
monitor of solo-learn (k = 20, T = 0.07 there; k = 200 in InstDisc).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError

#: images in the monitor's memory, and again in its queries (a study's cells and pretrain)
KNN_MONITOR_IMAGES = 200


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
        raise BalfeatError(
            "knn_predict needs 2-D (N, D) feature matrices, got train_features "
            f"{tuple(train_features.shape)} and test_features {tuple(test_features.shape)}"
        )
    if train_features.shape[0] == 0:
        raise BalfeatError("knn_predict needs at least one training feature")
    if train_features.shape[1] != test_features.shape[1]:
        raise BalfeatError(
            f"knn_predict: test_features {tuple(test_features.shape)} and train_features "
            f"{tuple(train_features.shape)} have different dims; extract both with one backbone"
        )
    if (
        train_labels.shape != (train_features.shape[0],)
        or train_labels.is_floating_point()
        or train_labels.dtype == torch.bool
    ):
        raise BalfeatError(
            f"knn_predict: train_labels must be integer class ids of shape "
            f"({train_features.shape[0]},), one per training feature, got "
            f"{tuple(train_labels.shape)} {train_labels.dtype}"
        )
    if not (k >= 1 and T > 0 and math.isfinite(T) and chunk >= 1 and num_classes >= 1):
        raise BalfeatError(
            f"knn_predict needs k >= 1, a finite T > 0, chunk >= 1 and num_classes >= 1, got "
            f"k={k}, T={T}, chunk={chunk}, num_classes={num_classes}"
        )
    low, high = (int(v) for v in torch.stack(torch.aminmax(train_labels)).tolist())
    if low < 0 or high >= num_classes:
        raise BalfeatError(
            f"knn_predict: train_labels must lie in [0, {num_classes}), got [{low}, {high}]"
        )
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
    if test_labels.shape != (test_features.shape[0],):
        raise BalfeatError(
            f"knn_accuracy: test_labels must have shape ({test_features.shape[0]},), one per "
            f"test feature, got {tuple(test_labels.shape)}"
        )
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, T)
    return float((scores.argmax(1) == test_labels.long()).float().mean() * 100.0)


@torch.no_grad()
def backbone_features(
    backbone: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    device: torch.device,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) and labels (N,) of ``dataset`` (images, label) under ``backbone`` in eval
    mode; the backbone's train/eval mode is restored afterwards."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for x, y in loader:
            feats.append(backbone(x.to(device)).float().cpu())
            labels.append(torch.as_tensor(y))
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


class KNNMonitor:
    """Online kNN accuracy of a backbone during pre-training, every ``every`` epochs.

    Called by the trainer at the end of an epoch with ``(backbone, epoch, device)``; returns
    ``{"knn_top1": accuracy}`` on the epochs it runs (and on the last epoch), else ``{}``. The
    trainer logs what it returns into ``metrics.jsonl`` (and TensorBoard).

    Args:
        train_set: labelled images whose features form the kNN memory (a held-out balanced set).
        test_set: labelled images scored against it.
        num_classes: C.
        every: epochs between evaluations (>= 1).
        k: neighbours (20 as solo-learn's monitor).
        T: vote temperature (0.07).
    """

    def __init__(
        self,
        train_set: torch.utils.data.Dataset,
        test_set: torch.utils.data.Dataset,
        num_classes: int,
        every: int = 1,
        k: int = 20,
        T: float = 0.07,
    ) -> None:
        if every < 1:
            raise BalfeatError(f"kNN monitor: every must be >= 1 epoch, got {every}")
        self.train_set = train_set
        self.test_set = test_set
        self.num_classes = num_classes
        self.every = every
        self.k = k
        self.T = T
        self.seconds = 0.0

    def __call__(
        self, backbone: torch.nn.Module, epoch: int, epochs: int, device: torch.device
    ) -> dict[str, float]:
        """``epoch`` is the number of finished epochs (1-based)."""
        import time

        if epoch % self.every != 0 and epoch != epochs:
            return {}
        t0 = time.perf_counter()
        fx, fy = backbone_features(backbone, self.train_set, device)
        tx, ty = backbone_features(backbone, self.test_set, device)
        acc = knn_accuracy(fx, fy, tx, ty, self.num_classes, self.k, self.T)
        self.seconds += time.perf_counter() - t0
        return {"knn_top1": acc}


def knn_monitor(
    memory_pool: torch.utils.data.Dataset,
    query_pool: torch.utils.data.Dataset,
    num_classes: int,
    every: int,
    seed: int,
    size: int = KNN_MONITOR_IMAGES,
) -> KNNMonitor:
    """The monitor a study's cells and ``balfeat pretrain`` run: ``size`` random images of
    ``memory_pool`` as its memory and ``size`` of ``query_pool`` as its queries (all of a smaller
    pool), drawn with ``seed``.

    Args:
        memory_pool: labelled images (a cell's probe set; pretrain's held-out balanced subset).
        query_pool: labelled images scored against the memory (a test set).
        num_classes: C.
        every: epochs between evaluations (>= 1).
        seed: seed of the draw.
        size: images drawn from each pool.
    """
    from torch.utils.data import Subset

    rng = np.random.default_rng(seed)
    mem = Subset(memory_pool, sorted(rng.permutation(len(memory_pool))[:size].tolist()))  # type: ignore[arg-type]
    qry = Subset(query_pool, sorted(rng.permutation(len(query_pool))[:size].tolist()))  # type: ignore[arg-type]
    return KNNMonitor(mem, qry, num_classes, every=every)
