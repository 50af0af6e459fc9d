"""BCL: training, its parts (logit-adjusted CE + balanced contrastive), its own classifier."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from method_standins import TinyBackbone, batches, falls, train, trainer_one_step

from balfeat.losses.bcl import bcl_total
from balfeat.methods import get_method
from balfeat.methods.bcl import BCL


def test_bcl_trains_and_logs_its_parts() -> None:
    torch.manual_seed(0)
    m = BCL(TinyBackbone(), 4, dim=8, T=0.1, ce_weight=1.0, bcl_weight=0.35)  # type: ignore[arg-type]
    m.set_class_counts(torch.tensor([8, 4, 2, 1]))
    assert m.views == 2 and m.uses_labels and not hasattr(m, "queue")
    assert m.prototypes().shape == (4, 8)
    torch.testing.assert_close(m.prototypes().norm(dim=1), torch.ones(4))
    assert falls(train(m, steps=30))
    views, labels = next(batches(1))
    m.train()
    out = m(views, labels)
    torch.testing.assert_close(out["loss"], out["ce"] + 0.35 * out["bcl"])
    with torch.no_grad():
        feat = m.backbone(torch.cat(views))
        z = F.normalize(m.head(feat), dim=1)
        ref = bcl_total(m.fc(feat[:16]), labels, z, m.prototypes(), m.log_prior, 1.0, 0.35, 0.1)
    torch.testing.assert_close(out["loss"].detach(), ref, rtol=1e-5, atol=1e-6)
    m.eval()
    assert m.classify(views[0]).shape == (16, 4)


def test_prototypes_get_gradient_through_the_classifier() -> None:
    torch.manual_seed(0)
    m = BCL(TinyBackbone(), 4, dim=8, ce_weight=0.0)  # type: ignore[arg-type]
    views, labels = next(batches(1))
    m(views, labels)["loss"].backward()
    assert m.fc.weight.grad is not None and float(m.fc.weight.grad.abs().sum()) > 0
    assert m.proto_head.fc1.weight.grad is not None  # type: ignore[union-attr]


def test_bcl_classifier_is_thirty_times_the_cosine_by_default() -> None:
    # the authors' BCL classifier: s * cos(feature, w_c) with s = 30, no bias
    torch.manual_seed(0)
    m = BCL(TinyBackbone(), 4, dim=8)  # type: ignore[arg-type]
    views, _ = next(batches(1))
    m.eval()
    with torch.no_grad():
        feat = m.backbone(views[0])
        w = m.fc.weight
        cos = (feat / feat.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).t()
        torch.testing.assert_close(m.classify(views[0]), 30.0 * cos)
        torch.testing.assert_close(w.norm(dim=1), torch.ones(4))  # unit class vectors at start
        assert float(m.classify(views[0]).abs().max()) <= 30.0 + 1e-4
    assert m.fc.bias is None
    # the prototypes come from the classifier's raw weight vectors
    want = F.normalize(m.proto_head(m.fc.weight), dim=1)
    torch.testing.assert_close(m.prototypes(), want)


def test_bcl_plain_linear_classifier_on_request() -> None:
    torch.manual_seed(0)
    m = BCL(TinyBackbone(), 4, dim=8, cosine_classifier=False)  # type: ignore[arg-type]
    assert type(m.fc) is torch.nn.Linear and m.fc.bias is not None
    assert falls(train(m, steps=20))


def test_bcl_registry_and_one_trainer_step(tmp_path: Path) -> None:
    assert get_method("bcl").views == 2
    trainer = trainer_one_step("bcl", tmp_path, ("method.bcl_weight=0.5",))
    assert trainer.method.bcl_weight == 0.5
    assert trainer.method.cosine_classifier  # the authors' default
    assert float(trainer.method.log_prior[0]) > float(trainer.method.log_prior[3])


def test_bcl_head_bn_is_the_authors_head_and_prototype_head() -> None:
    # models/resnext.py:291, 301: head and head_fc are Linear(F, F)-BN(F)-ReLU-Linear(F, feat_dim)
    torch.manual_seed(0)
    m = BCL(TinyBackbone(), 4, dim=8, head_bn=True)  # type: ignore[arg-type]
    want = [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU, torch.nn.Linear]
    for head in (m.head, m.proto_head):
        assert [type(c) for c in head.children()] == want
        assert (head.fc1.in_features, head.fc1.out_features) == (16, 16)
        assert head.bn.num_features == 16 and head.fc2.out_features == 8
    m.set_class_counts(torch.tensor([8, 4, 2, 1]))
    m.train()
    # in training the prototype head's BN normalises over the C class vectors
    with torch.no_grad():
        h = m.proto_head.fc1(m.fc.weight)
        want_h = (h - h.mean(0)) / (h.var(0, unbiased=False) + m.proto_head.bn.eps).sqrt()
        ref = F.normalize(m.proto_head.fc2(torch.relu(want_h)), dim=1)  # BN weight 1, bias 0
    torch.testing.assert_close(m.prototypes(), ref, rtol=1e-5, atol=1e-5)
    assert falls(train(m, steps=30))
    views, _ = next(batches(1))
    m.eval()  # running statistics: prototypes and classifier work in eval mode
    assert m.prototypes().shape == (4, 8) and m.classify(views[0]).shape == (16, 4)
    plain = BCL(TinyBackbone(), 4, dim=8)  # type: ignore[arg-type]
    heads = [*plain.head.modules(), *plain.proto_head.modules()]
    assert not any(isinstance(c, torch.nn.BatchNorm1d) for c in heads)


def test_bcl_head_bn_through_the_trainer(tmp_path: Path) -> None:
    trainer = trainer_one_step("bcl", tmp_path, ("method.head_bn=true",))
    sd = trainer.method.state_dict()
    assert trainer.method.head_bn and {"head.bn.weight", "proto_head.bn.running_mean"} <= set(sd)
