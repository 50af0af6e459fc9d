"""Tiny stand-ins obeying the Method and Dataset contracts of docs/DESIGN.md, for engine tests.

They keep the engine tests independent of the real backbones/methods and fast: 8x8 one-channel
images, a linear backbone without BatchNorm (so 2 ranks with half batches equal 1 rank).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from balfeat.distributed import all_gather_concat
from balfeat.methods.base import MethodBase

SIDE = 8


def _backbone() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 16), nn.ReLU())


class TinySL(MethodBase):
    """Supervised stand-in: linear backbone + linear head + cross-entropy."""

    views = 1

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.backbone = _backbone()
        self.head = nn.Linear(16, num_classes)
        self.nan_at_call = 0
        self.calls = 0

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        loss = F.cross_entropy(self.head(self.backbone(images)), labels)
        if self.nan_at_call and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return {"loss": loss}

    def after_step(self) -> None:
        pass


class TinyMoCo(MethodBase):
    """MoCo stand-in with a momentum encoder, key queue, label queue and pointer (all buffers)."""

    views = 2

    def __init__(self, dim: int = 8, K: int = 32, m: float = 0.9, T: float = 0.2) -> None:
        super().__init__()
        self.backbone = _backbone()
        self.head = nn.Linear(16, dim)
        self.backbone_k = copy.deepcopy(self.backbone)
        self.head_k = copy.deepcopy(self.head)
        for p in [*self.backbone_k.parameters(), *self.head_k.parameters()]:
            p.requires_grad = False
        self.m, self.T, self.K = m, T, K
        self.register_buffer("queue", F.normalize(torch.randn(K, dim), dim=1))
        self.register_buffer("queue_labels", torch.full((K,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, images: list[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        q = F.normalize(self.head(self.backbone(images[0])), dim=1)  # (B, dim)
        with torch.no_grad():
            k = F.normalize(self.head_k(self.backbone_k(images[1])), dim=1)  # (B, dim)
        l_pos = (q * k).sum(1, keepdim=True)  # (B, 1)
        l_neg = q @ self.queue.clone().T  # (B, K)
        logits = torch.cat([l_pos, l_neg], 1) / self.T  # (B, 1+K)
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        self._enqueue(all_gather_concat(k), all_gather_concat(labels))
        return {"loss": loss, "acc": (logits.argmax(1) == 0).float().mean()}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        n = len(keys)
        ptr = int(self.queue_ptr)
        idx = (torch.arange(n) + ptr) % self.K
        self.queue[idx] = keys
        self.queue_labels[idx] = labels
        self.queue_ptr.fill_((ptr + n) % self.K)

    @torch.no_grad()
    def after_step(self) -> None:
        for pq, pk in zip(
            [*self.backbone.parameters(), *self.head.parameters()],
            [*self.backbone_k.parameters(), *self.head_k.parameters()],
            strict=True,
        ):
            pk.mul_(self.m).add_(pq.detach(), alpha=1 - self.m)


class TinyImages(Dataset):
    """N images (1, 8, 8) with a class-dependent bright row; 2 noisy views when ``views=2``.

    The noise of the views comes from the global torch RNG (like torchvision transforms), so
    resume tests also check that the RNG state is restored.
    """

    def __init__(
        self, n: int = 64, num_classes: int = 4, views: int = 1, seed: int = 0, noise: float = 0.05
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.noise = noise
        self.targets = np.arange(n, dtype=np.int64) % num_classes
        self.num_classes = num_classes
        self.images = torch.rand(n, 1, SIDE, SIDE, generator=g) * 0.3
        for i, c in enumerate(self.targets):
            self.images[i, 0, int(c) * 2] += 1.0
        self.views = views

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x = self.images[i]
        if self.views == 2:
            return [self._noisy(x), self._noisy(x)], int(self.targets[i])
        return self._noisy(x), int(self.targets[i])

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.noise * torch.randn_like(x) if self.noise else x.clone()


def tiny_overrides(out: str, epochs: int = 2, batch: int = 16) -> list[str]:
    """Config overrides of a tiny CPU run."""
    return [
        f"run.output_dir={out}",
        f"optim.epochs={epochs}",
        f"optim.batch_size={batch}",
        "optim.base_lr=0.8",
        "run.device=cpu",
        "run.progress=false",
        "run.log_every=1",
        "data.num_workers=0",
    ]


def params_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of a module's state."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class TinyBackbone(nn.Module):
    """A BatchNorm-free backbone obeying the Backbone contract (``out_dim``)."""

    out_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = _backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def make_method(kind: str | bool) -> nn.Module:
    """``sl``/False: TinySL, ``moco``/True: TinyMoCo, ``real_moco``/``real_kcl``/``real_supcon``/
    ``real_tsc``/``real_paco``/``real_gpaco``/``real_bcl``: balfeat's methods on a tiny BN-free
    backbone (no shuffle BN, so 2 ranks with half batches compute what 1 rank does)."""
    if kind in ("moco", True):
        return TinyMoCo()
    if kind == "real_moco":
        from balfeat.methods.moco import MoCo

        return MoCo(TinyBackbone(), dim=8, K=32, m=0.9, T=0.2, mlp=False, shuffle_bn=False)
    if kind == "real_kcl":
        # posk >= K: every same-class queue key is a positive, so the loss does not depend on
        # the order in which ranks enqueue their keys (which differs from 1 process).
        from balfeat.methods.kcl import KCL

        return KCL(TinyBackbone(), dim=8, K=32, m=0.9, T=0.2, mlp=False, shuffle_bn=False, posk=32)
    if kind == "real_supcon":
        from balfeat.methods.supcon import SupConQueue

        return SupConQueue(TinyBackbone(), dim=8, K=32, m=0.9, T=0.2, mlp=False, shuffle_bn=False)
    if kind == "real_tsc":
        # posk >= K as for real_kcl; centres gathered over ranks, re-matched every 2 steps
        from balfeat.methods.tsc import TSC

        return TSC(
            TinyBackbone(), 4, dim=8, K=32, m=0.9, T=0.2, mlp=False, shuffle_bn=False, posk=32,
            rematch_every=2, target_warmup_steps=2, target_steps=20,
        )  # fmt: skip
    if kind == "real_supcon_inbatch":
        from balfeat.methods.supcon import SupConBatch

        return SupConBatch(TinyBackbone(), dim=8, T=0.2, mlp=False)
    if kind == "real_bcl":  # in-batch over the global batch (balfeat.methods._gather)
        from balfeat.methods.bcl import BCL

        return BCL(TinyBackbone(), 4, dim=8, T=0.2, mlp=False)
    if kind == "real_gpaco":
        from balfeat.methods.paco import GPaCo

        # contrast=global: the option whose N processes compute what one does (the authors'
        # per_rank contrasts each rank's half batch: tests/methods/test_methods_paco_ranks.py)
        return GPaCo(TinyBackbone(), 4, dim=8, T=0.2, mlp=False, K=32, contrast="global")
    if kind == "real_paco_head_bn":  # the authors' BN head, shuffle BN across ranks (smoke)
        from balfeat.methods.paco import PaCo

        return PaCo(TinyBackbone(), 4, dim=8, K=32, m=0.9, T=0.2, mlp=True, head_bn=True)
    if kind == "real_bcl_head_bn":  # BN in the projection and prototype heads (smoke)
        from balfeat.methods.bcl import BCL

        return BCL(TinyBackbone(), 4, dim=8, T=0.2, mlp=True, head_bn=True)
    if kind == "real_paco":
        # in_batch=False: the authors' in-batch contrast uses the local batch only, which differs
        # between 1 and 2 processes; the queue part (and the centres) are rank-independent.
        from balfeat.methods.paco import PaCo

        return PaCo(
            TinyBackbone(), 4, dim=8, K=32, m=0.9, T=0.2, mlp=False, shuffle_bn=False,
            in_batch=False,
        )  # fmt: skip
    return TinySL()


def run_standin(
    out: str, moco: bool | str, extra: list[str], epochs: int = 2, noise: float = 0.05
) -> Any:
    """Train a stand-in method on TinyImages; the same in every process of a job."""
    from balfeat.engine.config import load_config
    from balfeat.engine.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_config(None, [*tiny_overrides(out, epochs=epochs), *extra])
    torch.manual_seed(123)
    method = make_method(moco)
    dataset = TinyImages(views=method.views, noise=noise)  # type: ignore[arg-type]
    trainer = Trainer(cfg, method=method, train_dataset=dataset, resume=True)
    trainer.fit()
    return trainer


def spawn_worker(
    local_rank: int, world: int, port: int, out: str, kinds: list[str], extra: list[str]
) -> None:
    """``torch.multiprocessing.spawn`` target: one rank of a gloo job on localhost that trains
    each method of ``kinds`` in turn (into ``out/KIND``)."""
    import os

    from balfeat.distributed import destroy_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
    )
    try:
        for kind in kinds:
            run_standin(f"{out}/{kind}", kind, extra, noise=0.0)
    finally:
        destroy_distributed()


def free_port() -> int:
    """A free TCP port on localhost."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
