"""SupCon: the label-queue form equals KCL with every same-class key; the in-batch form."""

from __future__ import annotations

from pathlib import Path

import torch
from method_standins import TinyBackbone, batches, falls, train, trainer_one_step

from balfeat.losses.supcon import supcon_loss
from balfeat.methods import KCL, get_method
from balfeat.methods.supcon import SupConBatch, SupConQueue

KW = {"dim": 8, "K": 32, "m": 0.9, "T": 0.2, "mlp": True, "bn_splits": 2, "seed": 3}


def _pair() -> tuple[SupConQueue, KCL]:
    torch.manual_seed(0)
    sup = SupConQueue(TinyBackbone(), **KW)  # type: ignore[arg-type]
    torch.manual_seed(0)
    kcl = KCL(TinyBackbone(), posk=32, loss_type="v1", **KW)  # type: ignore[arg-type]
    return sup, kcl


def test_supcon_equals_kcl_with_all_positives_on_first_steps() -> None:
    sup, kcl = _pair()
    for m in (sup, kcl):  # the same labelled queue (prefill, as the trainer does for both)
        m.train()
        assert m.prefill(batches(4, seed=5)) == 2
        assert bool((m.queue.labels >= 0).all())
    opts = [torch.optim.SGD(m.parameters(), lr=0.3) for m in (sup, kcl)]
    for step, (views, labels) in enumerate(batches(3, seed=1)):
        outs = [m(views, labels) for m in (sup, kcl)]
        torch.testing.assert_close(outs[0]["loss"], outs[1]["loss"], rtol=1e-5, atol=1e-6)
        # every same-class key is a positive of KCL too
        torch.testing.assert_close(outs[0]["positives"], outs[1]["positives"])
        for m, o, opt in zip((sup, kcl), outs, opts, strict=True):
            opt.zero_grad()
            o["loss"].backward()
            if step == 0:
                continue
            opt.step()
            m.after_step()
        if step == 0:
            for p, r in zip(sup.parameters(), kcl.parameters(), strict=True):
                if p.grad is not None:
                    torch.testing.assert_close(p.grad, r.grad, rtol=1e-4, atol=1e-6)
            for m, opt in zip((sup, kcl), opts, strict=True):
                opt.step()
                m.after_step()


def test_supcon_trains_and_uses_labels() -> None:
    torch.manual_seed(0)
    m = SupConQueue(TinyBackbone(), **KW)  # type: ignore[arg-type]
    assert m.uses_labels and m.views == 2 and m.queue.labels is not None
    assert falls(train(m, steps=30))
    assert bool((m.queue.labels >= 0).any())


def test_supcon_registry_and_one_trainer_step(tmp_path: Path) -> None:
    entry = get_method("supcon")
    # the TSC authors' SupCon baseline starts from random keys labelled -1 (moco/builder.py:225)
    assert entry.views == 2 and not entry.prefill_by_default
    trainer = trainer_one_step("supcon", tmp_path / "default")
    assert isinstance(trainer.method, SupConQueue)
    assert bool((trainer.method.queue.labels == -1).any())  # not prefilled
    trainer = trainer_one_step("supcon", tmp_path / "always", ("method.prefill=always",))
    assert bool((trainer.method.queue.labels >= 0).all())  # prefilled before the step


def test_supcon_inbatch_trains_and_is_the_in_batch_loss() -> None:
    torch.manual_seed(0)
    m = SupConBatch(TinyBackbone(), dim=8, T=0.2)  # type: ignore[arg-type]
    assert m.views == 2 and not hasattr(m, "queue")
    assert falls(train(m, steps=30))
    assert int(m.step) == 30
    views, labels = next(batches(1))
    with torch.no_grad():
        out = m(views, labels)
        z = torch.nn.functional.normalize(m.head(m.backbone(torch.cat(views))), dim=1)
        ref = supcon_loss(z, labels.repeat(2), 0.2)
    torch.testing.assert_close(out["loss"], ref)


def test_supcon_inbatch_one_trainer_step(tmp_path: Path) -> None:
    entry = get_method("supcon_inbatch")
    assert entry.views == 2 and not entry.prefill_by_default
    trainer = trainer_one_step("supcon_inbatch", tmp_path, ("method.T=0.1",))
    assert isinstance(trainer.method, SupConBatch) and trainer.method.T == 0.1
