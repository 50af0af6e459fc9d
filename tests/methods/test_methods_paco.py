"""PaCo and GPaCo: training, their own classifier, the class prior from the trainer."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from method_standins import TinyBackbone, batches, falls, train, trainer_one_step

from balfeat.errors import BalfeatError
from balfeat.losses.paco import gpaco_loss, paco_loss
from balfeat.methods import get_method
from balfeat.methods.paco import GPaCo, PaCo, log_prior_of

KW = {"dim": 8, "K": 32, "m": 0.9, "T": 0.2, "mlp": True, "bn_splits": 2, "seed": 3}


def test_log_prior_of_counts() -> None:
    lp = log_prior_of(torch.tensor([6, 3, 1, 0]))
    torch.testing.assert_close(lp.exp(), torch.tensor([6, 3, 1, 1]) / 11.0)


@pytest.mark.parametrize("in_batch", [True, False])
def test_paco_trains_and_classifies(in_batch: bool) -> None:
    torch.manual_seed(0)
    m = PaCo(TinyBackbone(), 4, alpha=0.05, in_batch=in_batch, **KW)  # type: ignore[arg-type]
    assert m.uses_labels and m.views == 2
    assert {"fc.weight", "log_prior", "queue.labels"} <= set(m.state_dict())
    losses = train(m, steps=30)
    assert falls(losses)
    views, labels = next(batches(1, seed=9))
    m.eval()
    logits = m.classify(views[0])
    assert logits.shape == (16, 4)
    assert float((logits.argmax(1) == labels).float().mean()) > 0.5


def test_paco_loss_is_paco_loss_of_its_parts() -> None:
    torch.manual_seed(0)
    m = PaCo(TinyBackbone(), 4, shuffle_bn=False, **KW)  # type: ignore[arg-type]
    m.set_class_counts(torch.tensor([8, 4, 2, 1]))
    m.train()
    views, labels = next(batches(1))
    out = m(views, labels)
    with torch.no_grad():  # train-mode BN: batch statistics, the same as in forward
        feat = m.backbone(views[0])
        q = torch.nn.functional.normalize(m.head(feat), dim=1)
        k = torch.nn.functional.normalize(m.head_k(m.backbone_k(views[1])), dim=1)
        ref = paco_loss(
            q, k, labels, m.queue.keys, m.queue.labels, m.fc(feat), m.log_prior,
            alpha=0.05, temperature=0.2,
        )  # fmt: skip
    torch.testing.assert_close(out["loss"].detach(), ref, rtol=1e-5, atol=1e-6)


def test_set_class_counts_checks_length() -> None:
    m = PaCo(TinyBackbone(), 4, **KW)  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match="class counts"):
        m.set_class_counts(torch.ones(3))


def test_gpaco_trains_without_momentum_encoder() -> None:
    torch.manual_seed(0)
    m = GPaCo(TinyBackbone(), 4, dim=8, T=0.2, alpha=0.05, K=0)  # type: ignore[arg-type]
    assert not hasattr(m, "backbone_k") and m.queue is None
    assert falls(train(m, steps=30))
    assert int(m.step) == 30
    views, labels = next(batches(1))
    with torch.no_grad():
        out = m(views, labels)
        # per_view_bn (the default, the authors'): two separate encoder passes
        feat = torch.cat([m.backbone(v) for v in views])
        z = torch.nn.functional.normalize(m.head(feat), dim=1)
        ref = gpaco_loss(z[:16], z[16:], labels, m.fc(feat), m.log_prior, alpha=0.05)
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
    assert m.classify(views[0]).shape == (16, 4)


def test_gpaco_queue_holds_second_view_features_and_enters_the_loss() -> None:
    # the authors' GPaCo keeps a queue: contrast set [z1, z2, queue], the detached second-view
    # features of each step are enqueued after it
    torch.manual_seed(0)
    m = GPaCo(TinyBackbone(), 4, dim=8, T=0.2, alpha=0.05, K=48)  # type: ignore[arg-type]
    assert m.queue is not None and m.queue.size == 48
    assert falls(train(m, steps=20))
    m.train()
    it = batches(2, seed=5)
    views, labels = next(it)
    m(views, labels)
    with torch.no_grad():  # train-mode BN: the same batch gives the same features
        feat = torch.cat([m.backbone(v) for v in views])  # per_view_bn, the default
        z2 = torch.nn.functional.normalize(m.head(feat), dim=1)[16:]
    m.after_step()
    ptr = (int(m.queue.ptr) - 16) % 48
    rows = (ptr + torch.arange(16)) % 48
    torch.testing.assert_close(m.queue.keys[rows], z2, rtol=1e-5, atol=1e-6)
    assert torch.equal(m.queue.labels[rows], labels)
    views, labels = next(it)
    with torch.no_grad():
        out = m(views, labels)
        feat = torch.cat([m.backbone(v) for v in views])
        z = torch.nn.functional.normalize(m.head(feat), dim=1)
        kw = {"alpha": 0.05, "queue": m.queue.keys, "queue_labels": m.queue.labels}
        ref = gpaco_loss(z[:16], z[16:], labels, m.fc(feat), m.log_prior, **kw)  # type: ignore[arg-type]
        no_queue = gpaco_loss(z[:16], z[16:], labels, m.fc(feat), m.log_prior, alpha=0.05)
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
    assert abs(float(ref) - float(no_queue)) > 1e-3  # the queue matters


@pytest.mark.parametrize("name", ["paco", "gpaco"])
def test_registry_and_class_prior_from_trainer(name: str, tmp_path: Path) -> None:
    assert get_method(name).views == 2
    trainer = trainer_one_step(name, tmp_path, ("method.alpha=0.02",))
    m = trainer.method
    assert m.alpha == 0.02
    counts = np.bincount(np.asarray(trainer.dataset.targets), minlength=4)
    assert counts[0] > counts[3]  # the synthetic set is imbalanced
    torch.testing.assert_close(m.log_prior, log_prior_of(torch.from_numpy(counts)))


def test_paco_resume_is_exact() -> None:
    torch.manual_seed(0)
    a = PaCo(TinyBackbone(), 4, **KW)  # type: ignore[arg-type]
    a.set_class_counts(torch.tensor([8, 4, 2, 1]))
    train(a, steps=4)
    torch.manual_seed(1)
    b = PaCo(TinyBackbone(), 4, **KW)  # type: ignore[arg-type]
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.log_prior, b.log_prior)
    assert train(a, steps=3, seed=8) == train(b, steps=3, seed=8)


def _layers(head: torch.nn.Module) -> list[tuple[str, int, int]]:
    """(type, in, out) of the layers of a head, in forward order."""
    out = []
    for mod in head.children():
        if isinstance(mod, torch.nn.Sequential):
            out += _layers(mod)
        elif isinstance(mod, torch.nn.Linear):
            out.append(("Linear", mod.in_features, mod.out_features))
        elif isinstance(mod, torch.nn.BatchNorm1d):
            out.append(("BatchNorm1d", mod.num_features, mod.num_features))
        elif isinstance(mod, torch.nn.ReLU):
            out.append(("ReLU", 0, 0))
    return out


AUTHORS_HEAD = [("Linear", 16, 16), ("BatchNorm1d", 16, 16), ("ReLU", 0, 0), ("Linear", 16, 8)]


def test_paco_head_bn_is_the_authors_head_in_both_encoders() -> None:
    # PaCo/LT/moco/builder.py:50-51: Linear(F, F)-BatchNorm1d(F)-ReLU-Linear(F, dim), q and k
    torch.manual_seed(0)
    m = PaCo(TinyBackbone(), 4, head_bn=True, **KW)  # type: ignore[arg-type]
    assert _layers(m.head) == _layers(m.head_k) == AUTHORS_HEAD
    assert all(not p.requires_grad for p in m.head_k.parameters())
    for name, v in m.head.state_dict().items():
        assert torch.equal(v, m.head_k.state_dict()[name]), name
    plain = PaCo(TinyBackbone(), 4, **KW)  # type: ignore[arg-type]
    assert not plain.head_bn and "head.bn.weight" not in plain.state_dict()
    assert {"head.fc1.weight", "head.fc2.weight"} <= set(plain.state_dict())  # old checkpoints


def test_paco_head_bn_momentum_covers_bn_parameters_not_statistics() -> None:
    torch.manual_seed(0)
    m = PaCo(TinyBackbone(), 4, head_bn=True, **KW)  # type: ignore[arg-type]
    w_k0 = m.head_k.bn.weight.clone()
    losses = train(m, steps=1)
    assert np.isfinite(losses[0])
    # the query's BN weight got an SGD step, the key's followed it by momentum m = 0.9
    assert not torch.equal(m.head.bn.weight, w_k0)
    torch.testing.assert_close(m.head_k.bn.weight, 0.9 * w_k0 + 0.1 * m.head.bn.weight)
    # running statistics: each encoder's own forward (the key BN saw other images)
    assert not torch.equal(m.head_k.bn.running_mean, torch.zeros(16))
    assert not torch.allclose(m.head_k.bn.running_mean, m.head.bn.running_mean)
    assert falls(train(m, steps=30, seed=1))


def test_paco_head_bn_key_head_sees_the_split_groups() -> None:
    # one process, shuffle_bn with bn_splits=2: the key head's BN normalises each group, as the
    # backbone's (the authors' whole key encoder sees one rank's shuffled batch)
    torch.manual_seed(0)
    m = PaCo(TinyBackbone(), 4, head_bn=True, **KW)  # type: ignore[arg-type]
    m.train()
    ref = copy.deepcopy(m)
    views, _ = next(batches(1))
    k = m.encode_keys(views[1])
    perm = torch.randperm(16, generator=ref._generator(1))
    with torch.no_grad():
        parts = [ref.head_k(ref.backbone_k(p)) for p in views[1][perm].tensor_split(2)]
    want = torch.nn.functional.normalize(torch.cat(parts), dim=1)[torch.argsort(perm)]
    torch.testing.assert_close(k, want)
    with torch.no_grad():  # a whole-batch head BN would give other keys
        whole = torch.nn.functional.normalize(
            ref.head_k(torch.cat([ref.backbone_k(p) for p in views[1][perm].tensor_split(2)])),
            dim=1,
        )[torch.argsort(perm)]
    assert not torch.allclose(k, whole)


@pytest.mark.parametrize("cls", [PaCo, GPaCo])
def test_head_bn_needs_an_mlp_head(cls: type) -> None:
    kw = {"dim": 8, "T": 0.2, "mlp": False, "head_bn": True}
    with pytest.raises(BalfeatError, match=r"head_bn=True needs mlp=True.*method\.mlp"):
        cls(TinyBackbone(), 4, **kw)


def test_gpaco_head_bn_builds_the_bn_head_and_trains() -> None:
    torch.manual_seed(0)
    m = GPaCo(TinyBackbone(), 4, dim=8, T=0.2, alpha=0.05, K=48, head_bn=True)  # type: ignore[arg-type]
    assert _layers(m.head) == AUTHORS_HEAD
    assert falls(train(m, steps=30))
    plain = GPaCo(TinyBackbone(), 4, dim=8, K=0)  # type: ignore[arg-type]
    assert _layers(plain.head) == [("Linear", 16, 16), ("ReLU", 0, 0), ("Linear", 16, 8)]


def test_gpaco_head_layers_2_is_the_authors_gpaco_head_and_trains() -> None:
    """GPaCo/LT/moco/builder.py:45-47: Linear(F,F)-ReLU-Linear(F,F)-ReLU-Linear(F,dim), no BN."""
    torch.manual_seed(0)
    m = GPaCo(TinyBackbone(), 4, dim=8, T=0.2, alpha=0.05, K=48, head_layers=2)  # type: ignore[arg-type]
    assert _layers(m.head) == [
        ("Linear", 16, 16), ("ReLU", 0, 0), ("Linear", 16, 16), ("ReLU", 0, 0), ("Linear", 16, 8),
    ]  # fmt: skip
    assert falls(train(m, steps=30))
    plain = GPaCo(TinyBackbone(), 4, dim=8, K=0)  # type: ignore[arg-type]
    assert not any(k.startswith("head.extra") for k in plain.state_dict())  # old checkpoints load
    with pytest.raises(BalfeatError, match=r"head_layers=2 needs mlp=True"):
        GPaCo(TinyBackbone(), 4, dim=8, mlp=False, head_layers=2)  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match="head_layers"):
        GPaCo(TinyBackbone(), 4, dim=8, head_layers=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["paco", "gpaco"])
def test_head_bn_through_the_trainer(name: str, tmp_path: Path) -> None:
    trainer = trainer_one_step(name, tmp_path, ("method.head_bn=true",))
    assert trainer.method.head_bn
    assert "head.bn.running_var" in trainer.method.state_dict()


@pytest.mark.parametrize("name", ["paco", "gpaco", "bcl"])
def test_head_bn_defaults_false_and_is_shown(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from balfeat.cli.main import main
    from balfeat.engine.config import config_from_dict, load_config
    from balfeat.typed_config import to_dict

    # a config written before the key existed still loads, with the BN-free head
    cfg = load_config(None, [f"method.name={name}"])
    assert cfg.method.head_bn is False
    saved = to_dict(cfg)
    del saved["method"]["head_bn"]  # as a checkpoint written before head_bn holds it
    assert config_from_dict(saved).method.head_bn is False
    assert main(["pretrain", "--show-config", f"method.name={name}"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["method"]["head_bn"] is False


# ---- issue 23: the authors' per-view BatchNorm, per-rank contrast and random queue labels ----


def test_gpaco_per_view_bn_equals_two_separate_forwards_and_the_option_one_forward() -> None:
    """The authors run the encoder once per view (GPaCo/LT/moco/builder.py:112-119): with
    BatchNorm in training mode each view is normalised by its own batch statistics."""
    views, labels = next(batches(1, seed=2))
    losses = {}
    for per_view in (True, False):
        torch.manual_seed(0)
        m = GPaCo(TinyBackbone(), 4, dim=8, K=0, per_view_bn=per_view)  # type: ignore[arg-type]
        m.train()
        twin = copy.deepcopy(m)
        with torch.no_grad():
            out = m(views, labels)
            if per_view:
                feat = torch.cat([twin.backbone(views[0]), twin.backbone(views[1])])
            else:
                feat = twin.backbone(torch.cat(views))
            z = torch.nn.functional.normalize(twin.head(feat), dim=1)
            ref = gpaco_loss(z[:16], z[16:], labels, twin.fc(feat), twin.log_prior, alpha=0.045)
        torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
        losses[per_view] = float(out["loss"])
        # BN running statistics: two updates per step per view pass, one with one forward
        assert int(m.backbone.bn.num_batches_tracked) == (2 if per_view else 1)
    assert abs(losses[True] - losses[False]) > 1e-4  # the two BN modes differ


@pytest.mark.parametrize("cls", [PaCo, GPaCo])
def test_queue_starts_with_random_labels_as_the_authors(cls: type) -> None:
    """PaCo/LT/moco/builder.py:66 and GPaCo/LT/moco/builder.py:54: torch.randint(0, C, (K,));
    queue_labels=empty keeps balfeat's earlier -1 (no class)."""
    kw = dict(KW) if cls is PaCo else {"dim": 8, "K": 400}
    m = cls(TinyBackbone(), 4, **kw)
    labels = m.queue.labels
    assert int(labels.min()) >= 0 and int(labels.max()) <= 3
    assert len(set(labels.tolist())) == 4  # every class drawn (K >= 32 draws of 4 classes)
    again = cls(TinyBackbone(), 4, **kw)
    assert torch.equal(again.queue.labels, labels)  # seeded: a rebuilt method matches
    empty = cls(TinyBackbone(), 4, queue_labels="empty", **kw)
    assert bool((empty.queue.labels == -1).all())


@pytest.mark.parametrize("cls", [PaCo, GPaCo])
def test_contrast_and_queue_labels_are_checked(cls: type) -> None:
    with pytest.raises(BalfeatError, match="contrast"):
        cls(TinyBackbone(), 4, contrast="everyone")
    with pytest.raises(BalfeatError, match="queue_labels"):
        cls(TinyBackbone(), 4, queue_labels="zeros")


@pytest.mark.parametrize("name", ["paco", "gpaco", "tsc", "supcon"])
def test_methods_whose_authors_do_not_prefill_start_without_it(name: str) -> None:
    """Only KCL's reference fills its queue before the first step (issue 23)."""
    assert not get_method(name).prefill_by_default
    assert get_method("kcl").prefill_by_default
