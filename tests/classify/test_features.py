"""The one loop that runs a frozen network over a dataset: features and own-classifier logits."""

from __future__ import annotations

import numpy as np
import torch
from classify_synthetic import TinyBackbone, TinyImages
from torch import nn

from balfeat.classify.features import classifier_logits, extract_features


class WithClassifier(nn.Module):
    """A method-shaped module: a backbone and a ``classify`` on top of it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = TinyBackbone()
        self.fc = nn.Linear(self.backbone.out_dim, 3)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def test_classifier_logits_equal_a_loop_in_eval_mode_and_restore_the_mode() -> None:
    ds = TinyImages([5, 3, 2])
    method = WithClassifier()
    method.train()
    bn_before = method.backbone.bn.running_mean.clone()
    logits, labels = classifier_logits(method, ds, "cpu", batch_size=4)
    assert method.training  # mode restored
    assert torch.equal(method.backbone.bn.running_mean, bn_before)  # eval: BN untouched
    method.eval()
    with torch.no_grad():
        want = torch.cat([method.classify(ds[i][0][None]) for i in range(len(ds))])
    assert logits.shape == (10, 3) and logits.dtype == np.float32
    assert np.allclose(logits, want.numpy(), atol=1e-6)
    assert labels.dtype == np.int64 and labels.tolist() == ds.targets.tolist()


def test_extract_features_runs_the_call_given() -> None:
    ds = TinyImages([2, 2])
    backbone = TinyBackbone()
    feats, _ = extract_features(backbone, ds, batch_size=3)
    doubled, _ = extract_features(backbone, ds, batch_size=3, call=lambda x: 2 * backbone(x))
    assert torch.allclose(doubled, 2 * feats)
