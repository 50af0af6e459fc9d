"""The control row of a study: the untrained network, probed as every trained cell is.

One control per (set, seed), written to ``cells/control__<set>/seed<s>/<probe>``: the backbone
the study's trained cells start from (the architecture of the study's first method, initialised
as :class:`balfeat.engine.trainer.Trainer` initialises it: ``seed_everything(seed)``, then the
backbone built first), its BatchNorm statistics adapted on the set's pre-training images (one
forward pass in train mode, cumulative average, no gradient: :func:`adapt_batchnorm`), then the
study's probes. No training, so it costs a probe. Each method's gain over it
(:func:`balfeat.study.summary.control_gains`, paired by seed) is what pre-training added.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from balfeat.data.datasets import ArrayDataset
from balfeat.device import default_device
from balfeat.engine.build import backbone_of
from balfeat.engine.config import Config
from balfeat.models.batchnorm import adapt_batchnorm
from balfeat.seeding import seed_everything
from balfeat.study.cells import (
    CellData,
    Row,
    StudyData,
    cell_data,
    pretrain_indices,
    probe_rows,
)
from balfeat.study.spec import StudySpec

#: Method name of the control rows (:data:`balfeat.study.summary.CONTROL`); not a method id.
CONTROL = "control"

#: What the report and the results call the control.
CONTROL_LABEL = "untrained (control)"


def initial_backbone(cfg: Config, seed: int) -> nn.Module:
    """The backbone a cell of ``cfg`` with run seed ``seed`` starts training from: the trainer
    seeds every RNG with the run seed, then builds the method, whose backbone is built first."""
    seed_everything(seed)
    return backbone_of(cfg)


def control_backbone(
    cd: CellData, data: StudyData, device: torch.device, batch_size: int = 256
) -> tuple[nn.Module, int]:
    """The control's network for a (set, seed): :func:`initial_backbone`, with its BatchNorm
    statistics adapted on the set's pre-training images (without augmentation).

    Returns:
        ``(backbone in eval mode on device, images the statistics were adapted on)``.
    """
    backbone = initial_backbone(cd.cfg, cd.seed).to(device)
    idx = pretrain_indices(data, cd)
    images = ArrayDataset(
        data.train_x[idx],
        data.train_y[idx],
        transform=cd.probe_ds.transform,  # the eval transform of the probe and test images
        num_classes=data.num_classes,
    )
    loader = DataLoader(images, batch_size=batch_size, shuffle=False)

    def batches() -> Iterator[torch.Tensor]:
        for x, _ in loader:
            yield x.to(device)

    seen = adapt_batchnorm(backbone, batches())
    backbone.eval()
    return backbone, seen


def run_control(
    spec: StudySpec,
    data: StudyData,
    set_name: str,
    out_dir: Path,
    seed: int,
    groups: tuple[list[int], str] | None,
    *,
    config: Config,
    source: str,
) -> list[Row]:
    """Probe the untrained, BN-adapted network of one (set, seed) with every study probe and
    write ``cells/control__<set>/seed<s>/<probe>/results.json``.

    Args:
        config: the pre-training config whose architecture (``model``, ``data``) the control
            takes: the first method's.
        source: the method id that config belongs to (recorded in the results).

    Returns:
        One ``control`` row per probe.
    """
    start = time.perf_counter()
    cd = cell_data(
        spec, data, CONTROL, set_name, out_dir, config=config, progress=False, seed=seed,
        groups=groups,
    )  # fmt: skip
    device = default_device(cd.cfg.run.device)
    backbone, seen = control_backbone(cd, data, device, batch_size=cd.cfg.optim.batch_size)
    control: dict[str, Any] = {
        "label": CONTROL_LABEL,
        "architecture_of": source,
        "backbone": cd.cfg.model.backbone,
        "init": f"seed_everything({seed}) then the backbone, as the trained cells start",
        "batchnorm": "running statistics reset, then a cumulative average (momentum None) over "
        "one forward pass in train mode without gradient",
        "batchnorm_images": seen,
        "trained": False,
    }
    return probe_rows(
        cd, data, spec, CONTROL, set_name, backbone, start,
        control=control, checkpoint=None, pretrain_summary=None, knn_seconds=None,
    )  # fmt: skip
