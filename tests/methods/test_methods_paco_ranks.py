"""2 CPU processes (gloo): GPaCo's and PaCo's ``contrast`` option.

``per_rank`` (the authors': GPaCo/LT/paco_lt.py:217, PaCo/LT/moco/builder.py:222) contrasts each
rank's own batch, so each rank's loss is the loss of its half batch alone; ``global`` contrasts
the whole batch, so every rank's loss is the one-process loss. Both enqueue the global keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from balfeat.losses.paco import gpaco_loss, paco_loss
from balfeat.models.backbones import Backbone

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

B, C = 8, 4  # global batch, classes


class LinearBackbone(Backbone):
    """BN-free: a row's features do not depend on the other rows (only the contrast does)."""

    def __init__(self) -> None:
        super().__init__()
        self.out_dim = 16
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x.flatten(1)))


def _batch() -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    views = [torch.randn(B, 1, 4, 4, generator=gen) for _ in range(2)]
    return views, torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])


def _method(kind: str, contrast: str) -> Any:
    from balfeat.methods.paco import GPaCo, PaCo

    torch.manual_seed(0)
    if kind == "gpaco":
        return GPaCo(LinearBackbone(), C, dim=8, K=16, contrast=contrast)
    return PaCo(LinearBackbone(), C, dim=8, K=16, m=0.9, shuffle_bn=False, contrast=contrast)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        views, labels = _batch()
        mine = slice(rank * B // world, (rank + 1) * B // world)
        out = {}
        for kind in ("gpaco", "paco"):
            for contrast in ("per_rank", "global"):
                m = _method(kind, contrast).train()
                loss = m([v[mine] for v in views], labels[mine])["loss"]
                m.after_step()
                out[(kind, contrast)] = (float(loss), m.queue.keys.clone(), m.queue.labels.clone())
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _reference(kind: str, rows: slice) -> float:
    """The loss of ``rows`` alone, in one process, from the loss function itself."""
    views, labels = _batch()
    m = _method(kind, "per_rank").train()
    with torch.no_grad():
        v1, v2, y = views[0][rows], views[1][rows], labels[rows]
        if kind == "gpaco":
            f1, f2 = m.backbone(v1), m.backbone(v2)
            z1 = nn.functional.normalize(m.head(f1), dim=1)
            z2 = nn.functional.normalize(m.head(f2), dim=1)
            logits = torch.cat([m.fc(f1), m.fc(f2)])
            kw = {"queue": m.queue.keys, "queue_labels": m.queue.labels}
            return float(gpaco_loss(z1, z2, y, logits, m.log_prior, alpha=m.alpha, **kw))
        feat = m.backbone(v1)
        q = nn.functional.normalize(m.head(feat), dim=1)
        k = m.encode_keys(v2)
        return float(
            paco_loss(
                q, k, y, m.queue.keys, m.queue.labels, centre_logits=m.fc(feat),
                log_prior=m.log_prior, alpha=m.alpha, temperature=m.T,
            )
        )  # fmt: skip


def test_per_rank_contrast_is_each_half_batch_and_global_is_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    views, labels = _batch()
    for kind in ("gpaco", "paco"):
        one = _method(kind, "global").train()
        loss_one = float(one(views, labels)["loss"].detach())
        one.after_step()
        whole = _reference(kind, slice(0, B))
        assert loss_one == pytest.approx(whole, rel=1e-5)
        halves = [_reference(kind, slice(0, B // 2)), _reference(kind, slice(B // 2, B))]
        for rank in range(2):
            per_rank, glob = r[rank][(kind, "per_rank")], r[rank][(kind, "global")]
            assert glob[0] == pytest.approx(loss_one, rel=1e-5)  # N processes = one
            assert per_rank[0] == pytest.approx(halves[rank], rel=1e-5)  # its own half alone
            assert abs(per_rank[0] - glob[0]) > 1e-3  # the two contrasts differ
            for _, keys, queue_labels in (per_rank, glob):  # both enqueue the global batch
                torch.testing.assert_close(keys, one.queue.keys, rtol=1e-5, atol=1e-6)
                assert torch.equal(queue_labels, one.queue.labels)
