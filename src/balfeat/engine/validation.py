"""Best-by-validation selection of a pre-training run (``run.keep_best``).

BalFeat's ``main_sl.py`` validates after every epoch (``main_sl.py:240-255``) and
``helper.save_checkpoint`` copies the epoch's checkpoint to ``NAME.pth.tar`` only when the top-1
improved (``helper.py:246-251``); the README's re-training commands load that copy. Here the
trainer asks :class:`BestByValidation` after every epoch: it measures the method's classifier
(``classify``) on the validation images (``data.val_split`` under ``data.val_root`` or
``data.root``, eval transform, every rank a shard) and copies ``last.pth`` to ``best.pth`` when
the top-1 is higher than every earlier epoch's (the first of equal epochs is kept, as the
reference's ``acc1 > best_acc1``). ``best.json`` holds the best epoch and accuracy, so a resumed
run compares with the same best.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from balfeat import distributed
from balfeat.atomic import atomic_write_text
from balfeat.engine import build
from balfeat.engine.checkpoint import LAST_NAME
from balfeat.engine.config import Config
from balfeat.errors import TrainingError
from balfeat.methods.base import MethodBase

log = logging.getLogger("balfeat.engine")

#: The copy of the best epoch's checkpoint in the run folder.
BEST_NAME = "best.pth"
#: ``{"epoch": int, "val_top1": float}`` of :data:`BEST_NAME`.
BEST_INFO = "best.json"


def build_val_dataset(cfg: Config) -> Dataset[Any] | None:
    """The validation images of an image-folder run, with the eval transform; None where the
    config names none (no ``data.val_split`` / ``data.val_root``, or an in-memory dataset).

    Built as the training set is (:func:`balfeat.engine.build.build_train_dataset`: the same
    class set and labels), from ``data.val_split`` under ``data.val_root`` (default
    ``data.root``), or every image under ``data.val_root`` without a split file.
    """
    d = cfg.data
    if d.dataset not in ("imagenet", "inat") or not (d.val_split or d.val_root):
        return None
    data = dataclasses.replace(
        d,
        root=d.val_root or d.root,
        train_split=d.val_split,
        augmentation="none",
        max_samples=0,
        decode="pil",
    )
    return build.build_train_dataset(dataclasses.replace(cfg, data=data))


class BestByValidation:
    """Validates after every epoch and keeps the best epoch's checkpoint as ``best.pth``.

    Args:
        dataset: the validation images (``(image, label)`` items).
        output_dir: the run folder (``last.pth`` is copied from it).
        batch_size: images per rank and batch.
        num_workers: DataLoader workers.
    """

    def __init__(
        self, dataset: Dataset[Any], output_dir: Path, batch_size: int, num_workers: int = 0
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        mine = Subset(dataset, range(distributed.rank(), n, distributed.world_size()))
        self.loader = DataLoader(mine, batch_size=batch_size, num_workers=num_workers)
        self.output_dir = output_dir
        self.best = float("-inf")
        info = output_dir / BEST_INFO
        if info.is_file():  # a resumed run compares with the best so far
            self.best = float(json.loads(info.read_text())["val_top1"])

    @torch.no_grad()
    def top1(self, method: MethodBase, device: torch.device) -> float:
        """Top-1 accuracy (%) of ``method.classify`` on the validation images, all ranks."""
        was_training = method.training
        method.eval()
        counts = torch.zeros(2, dtype=torch.float64, device=device)
        for images, labels in self.loader:
            logits = method.classify(images.to(device))
            counts[0] += (logits.argmax(1).cpu() == labels).sum().item()
            counts[1] += labels.numel()
        method.train(was_training)
        counts = distributed.all_reduce_sum(counts)
        if counts[1] == 0:
            raise TrainingError("run.keep_best: the validation set has no images")
        return float(100.0 * counts[0] / counts[1])

    def update(self, epoch: int, top1: float) -> bool:
        """After the epoch's checkpoint is written: copy it to ``best.pth`` when ``top1`` beats
        every earlier epoch (rank 0 writes). Returns whether it did."""
        if not top1 > self.best:
            return False
        self.best = top1
        if distributed.is_main_process():
            tmp = self.output_dir / (BEST_NAME + ".tmp")
            shutil.copyfile(self.output_dir / LAST_NAME, tmp)
            tmp.replace(self.output_dir / BEST_NAME)
            atomic_write_text(
                self.output_dir / BEST_INFO, json.dumps({"epoch": epoch, "val_top1": top1})
            )
            log.info(
                "epoch %d: validation top-1 %.3f%%, the best so far: %s", epoch, top1, BEST_NAME
            )
        return True


def best_by_validation(
    cfg: Config, method: MethodBase, output_dir: Path, batch_size: int
) -> BestByValidation | None:
    """``run.keep_best``: the validator of a run, or None (off, or no validation set: a warning).

    Raises:
        TrainingError: ``run.keep_best`` for a method without a classifier of its own.
    """
    if not cfg.run.keep_best:
        return None
    if not has_own_classifier(method):
        raise TrainingError(
            f"run.keep_best validates the method's classifier, and {cfg.method.name!r} has "
            "none (sl, paco, gpaco and bcl have one); set run.keep_best=false"
        )
    val = build_val_dataset(cfg)
    if val is None:
        log.warning(
            "run.keep_best: no validation set (image-folder datasets with data.val_split or "
            "data.val_root only); best.pth is not written"
        )
        return None
    return BestByValidation(val, output_dir, batch_size, cfg.data.num_workers)


def has_own_classifier(method: MethodBase) -> bool:
    """Whether ``method`` overrides :meth:`MethodBase.classify` (SL, PaCo, GPaCo, BCL)."""
    return type(method).classify is not MethodBase.classify
