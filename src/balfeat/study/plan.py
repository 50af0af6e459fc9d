"""``balfeat study FILE --plan``: every cell's commands and its estimated pre-training cost.

The cost of a cell is ``steps x seconds per step``. Seconds per step are measured here, once per
method, by a short run of the method's pre-training config on synthetic images of the cell's
shape (its batch size, image size, channels and class count), so a study over ImageNet is planned
on a machine without ImageNet. Two short runs (1 and 1 + N steps) are timed and their
difference divided by N, which leaves out setup, queue prefill and the first step's warm-up.
Steps are ``epochs x ceil(images / batch)``, the images counted in the set's split file (or
``folder.set_sizes`` when it is absent). Probes are not costed.

A plain ``balfeat study`` prints :func:`study_estimate` first: the same cost summed over the
cells not finished yet, measured cheaply (a proxy of at most :data:`PROXY_BATCH` images per step,
scaled to the cell's batch, which on a CPU costs in proportion and on a GPU over-estimates).
"""

from __future__ import annotations

import copy
import math
import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from balfeat.data.catalog import dataset_info
from balfeat.data.cifar_lt import STANDARD_TOTALS
from balfeat.device import default_device
from balfeat.engine.config import Config
from balfeat.study.cells import cell_dir
from balfeat.study.jobs import (
    CellJob,
    cell_jobs,
    job_done,
    pretrain_command,
    probe_command,
    set_counts,
)
from balfeat.study.run import cell_done
from balfeat.study.spec import StudySpec, cell_config

#: Images per step of the timing run of :func:`study_estimate` (a larger batch is scaled).
PROXY_BATCH = 16


def set_images(spec: StudySpec, job: CellJob) -> int:
    """Images of the cell's pre-training set."""
    if not spec.is_job_study:  # sets drawn in memory: family.total images each
        return spec.total
    if spec.dataset == "image-folder":
        path = Path(job.config.data.train_split)
        if path.is_file():
            return int(sum(set_counts(str(path))))
        return int(spec.folder.set_sizes.get(job.set_name, 0))
    base = str(dataset_info(spec.dataset).long_tailed_from)
    ratio = float(spec.family.sets[job.set_name])
    return STANDARD_TOTALS.get((base, int(ratio)), 0)


def num_classes(spec: StudySpec, job: CellJob) -> int:
    """Classes of the cell's images (for the synthetic timing run)."""
    if spec.dataset == "synthetic":
        return int(job.config.data.num_classes)
    if spec.dataset != "image-folder":
        return int(dataset_info(spec.dataset).num_classes or 10)
    path = Path(job.config.data.train_split)
    if path.is_file():
        return len(set_counts(str(path)))
    return spec.folder.num_classes or 1000


def cell_steps(cfg: Config, images: int) -> int:
    """Optimiser steps of a pre-training over ``images``."""
    steps = cfg.optim.epochs * math.ceil(images / cfg.optim.batch_size)
    return min(steps, cfg.run.max_steps) if cfg.run.max_steps else steps


def seconds_per_step(cfg: Config, classes: int, steps: int = 3, batch: int = 0) -> float:
    """Measured seconds per step of ``cfg``'s method on synthetic images of its shape.

    Args:
        batch: time steps of at most this many images and scale the time to ``cfg``'s batch
            (0 = time ``cfg``'s batch itself).
    """
    from balfeat.engine.trainer import Trainer

    probe = copy.deepcopy(cfg)
    full = probe.optim.batch_size
    if 0 < batch < full:
        probe.optim.batch_size = batch
    probe.data.dataset = "synthetic"
    probe.data.train_split = probe.data.class_set = ""
    probe.data.num_classes = classes
    probe.data.channels = 3
    probe.data.synthetic_size = probe.optim.batch_size * (steps + 2)
    probe.data.num_workers = 0
    probe.data.imbalance_ratio = 1.0
    probe.data.per_class = probe.data.max_samples = 0
    probe.data.loader = "auto"
    probe.data.decode = "pil"
    probe.run.progress = False
    probe.run.tensorboard = "off"  # trackers and monitors are not the step's cost
    probe.run.wandb = ""
    probe.run.knn_every = 0

    def fit(n: int, tmp: str) -> float:
        run = copy.deepcopy(probe)
        run.run.max_steps = n
        run.run.output_dir = str(Path(tmp) / f"run{n}")
        start = time.perf_counter()
        Trainer(run).fit()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="balfeat-plan-") as tmp:
        # one step, then 1 + steps: the difference leaves out setup, queue prefill and warm-up
        first = fit(1, tmp)
        longer = fit(1 + steps, tmp)
        # a difference lost in timer noise (tiny models) falls back to the mean over the run,
        # an upper bound, never to zero
        per_step = (longer - first) / steps if longer > first else longer / (1 + steps)
    return per_step * full / probe.optim.batch_size


@dataclass
class Estimate:
    """The estimated pre-training time of the cells a study has left to train.

    Attributes:
        cells: (cell, seed)s not finished yet.
        hours: their estimated device-hours of pre-training (probes not included).
        rates: method id -> measured seconds per step at the cell's batch.
        device: where it was measured (:func:`device_name`).
        seconds: what measuring took.
    """

    cells: int
    hours: float
    rates: dict[str, float] = field(default_factory=dict)
    device: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        """The one line ``balfeat study`` prints before it trains."""
        per = ", ".join(f"{m} {s:.3g} s/step" for m, s in self.rates.items())
        return (
            f"estimate: {self.cells} cell(s) to pre-train, about {_duration(self.hours)} on "
            f"{self.device} (measured in {self.seconds:.0f} s on synthetic images, steps of at "
            f"most {PROXY_BATCH} images scaled to each batch: {per}; probes not included)"
        )


def pending_jobs(spec: StudySpec, out: Path, overrides: Sequence[str] = ()) -> list[CellJob]:
    """The (cell, seed)s of a study that have not written all their results under ``out``."""
    if spec.is_job_study:
        return [job for job in cell_jobs(spec, out, overrides) if not job_done(job)]
    configs = {m: cell_config(spec, m, overrides) for m in spec.methods}
    return [
        CellJob(m, s, seed, cell_dir(out, m, s, seed), configs[m], {})
        for s in spec.sets
        for m in spec.methods
        for seed in spec.run_seeds
        if not cell_done(out, m, s, spec.probes, seed)
    ]


def cell_hours(spec: StudySpec, job: CellJob, rate: float) -> float:
    """Device-hours of one cell's pre-training at ``rate`` seconds per step."""
    return rate * cell_steps(job.config, set_images(spec, job)) / 3600 * spec.nproc_per_node


def study_estimate(spec: StudySpec, out: Path, overrides: Sequence[str] = ()) -> Estimate:
    """The estimated pre-training time of the cells left to train (measured once per method,
    by :func:`seconds_per_step` at a batch of at most :data:`PROXY_BATCH`)."""
    start = time.perf_counter()
    jobs = pending_jobs(spec, out, overrides)
    rates: dict[str, float] = {}
    for job in jobs:
        if job.method not in rates:
            rates[job.method] = seconds_per_step(
                job.config, num_classes(spec, job), steps=2, batch=PROXY_BATCH
            )
    hours = sum(cell_hours(spec, job, rates[job.method]) for job in jobs)
    where = device_name(jobs[0].config.run.device) if jobs else ""
    return Estimate(len(jobs), hours, rates, where, time.perf_counter() - start)


def plan_lines(spec: StudySpec, jobs: Sequence[CellJob], measure_steps: int = 3) -> list[str]:
    """The plan: per cell its commands, steps and estimated hours; then the total."""
    measured: dict[str, float] = {}
    where = device_name(jobs[0].config.run.device if jobs else "auto")
    lines = [f"plan of {spec.name!r}: {len(jobs)} cells (launcher {spec.launcher})"]
    total = 0.0
    for i, job in enumerate(jobs):
        cfg = job.config
        key = job.method
        if measure_steps and key not in measured:
            measured[key] = seconds_per_step(cfg, num_classes(spec, job), measure_steps)
        images = set_images(spec, job)
        steps = cell_steps(cfg, images)
        hours = cell_hours(spec, job, measured.get(key, float("nan")))
        total += hours if math.isfinite(hours) else 0.0
        lines.append(
            f"[{i}] {job.method} on {job.set_name}, seed {job.seed}: {images} images, "
            f"{steps} steps of batch {cfg.optim.batch_size}, est. {_hours(hours)} device-hours"
        )
        lines.append("    " + shlex.join(pretrain_command(spec, job)))
        lines += ["    " + shlex.join(probe_command(job, p)) for p in job.probes]
    per = ", ".join(f"{m} {s:.3g} s/step" for m, s in measured.items())
    lines.append(
        f"total: est. {_hours(total)} device-hours of pre-training on {where} "
        f"({per or 'not measured'}; probes not included)"
    )
    lines.append(
        "the plan wrote every cell's config files: a SLURM array job runs cell "
        "[$SLURM_ARRAY_TASK_ID]'s commands; `balfeat study FILE --collect` builds the table"
    )
    return lines


def device_name(requested: str) -> str:
    """The name of the device a cell would train on (the GPU's, or the CPU's thread count)."""
    import torch

    device = default_device(requested)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def _hours(h: float) -> str:
    return "n/a" if not math.isfinite(h) else f"{h:.3g}"


def _duration(hours: float) -> str:
    """``"2.5 h"``, ``"12 min"`` or ``"40 s"``."""
    if hours >= 1:
        return f"{hours:.3g} h"
    return f"{hours * 60:.2g} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"
