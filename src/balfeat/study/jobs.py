"""A study whose cells are ``balfeat pretrain`` and ``balfeat probe`` jobs.

Image-folder studies (the paper's ImageNet-LT family: one split file per set) and CIFAR-LT
studies (a ratio per set) train on data that ``balfeat pretrain`` reads from a config, so each
(cell, seed) is written down as the files a user would run by hand::

    cells/<method>__<set>/seed<s>/pretrain.yaml        # balfeat pretrain --config ...
    cells/<method>__<set>/seed<s>/pretrain/            # its run folder (run.output_dir)
    cells/<method>__<set>/seed<s>/<probe>.probe.yaml    # balfeat probe --config ...
    cells/<method>__<set>/seed<s>/<probe>/results.json # its results (probe.out)

The study runs these jobs in-process (``launcher: local``) or starts the pre-training as
``torchrun --nproc_per_node N -m balfeat pretrain --config …`` (``launcher: torchrun``); the probes
run in-process. ``--plan`` prints the commands, ``--collect`` (:func:`collect_rows`) reads what the
jobs wrote, whoever ran them. Many/medium/few come from the counts of the grouping set, passed to
every probe as ``group_counts``, so "few" names the same classes in every row.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from balfeat.atomic import atomic_write_text
from balfeat.classify.job import ProbeJob, ProbeOptions
from balfeat.data.catalog import dataset_info
from balfeat.data.imbalance import exponential_counts
from balfeat.data.splits import labels_of, read_split
from balfeat.engine.checkpoint import find_last_checkpoint
from balfeat.engine.config import Config, config_to_dict
from balfeat.errors import ConfigError
from balfeat.study.cells import Row, cell_dir
from balfeat.study.report import row_from_results
from balfeat.study.spec import StudySpec, cell_config

#: The counts file of a CIFAR-LT study's grouping set, written into its output folder.
GROUP_COUNTS_FILE = "group_counts.txt"


@dataclass
class CellJob:
    """One (cell, seed) as jobs: its pre-training config and its probes' options."""

    method: str
    set_name: str
    seed: int
    cdir: Path
    config: Config
    probes: dict[str, ProbeOptions]

    @property
    def config_file(self) -> Path:
        """The cell's resolved pre-training config (``balfeat pretrain --config``)."""
        return self.cdir / "pretrain.yaml"

    def probe_file(self, probe: str) -> Path:
        """A probe's job file (``balfeat probe --config``)."""
        return self.cdir / f"{probe}.probe.yaml"


def set_counts(path: str) -> list[int]:
    """Images per class of a split file (classes 0..max label)."""
    return [int(n) for n in np.bincount(labels_of(read_split(path)))]


def grouping_source(spec: StudySpec, out: Path) -> str:
    """The file fixing many/medium/few of every probe: the grouping set's split file, or for a
    CIFAR-LT study the counts of its most imbalanced ratio (written into ``out``)."""
    if spec.groups:
        return spec.groups
    if spec.dataset == "image-folder":  # '' (a whole folder): the probe's own counts
        name = spec.folder.grouping_set or list(spec.folder.sets)[-1]
        return spec.folder.path(spec.folder.sets[name])
    info = dataset_info(spec.dataset)
    per_class = 5000 if info.long_tailed_from == "cifar10" else 500  # the protocol's n_max
    ratio = max(spec.family.sets.values())
    counts = exponential_counts(int(info.num_classes or 0), per_class, ratio)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GROUP_COUNTS_FILE
    atomic_write_text(path, "".join(f"{n}\n" for n in counts))
    return str(path)


def _pretrain_config(spec: StudySpec, base: Config, set_name: str, cdir: Path, seed: int) -> Config:
    cfg = copy.deepcopy(base)
    cfg.run.output_dir = str(cdir / "pretrain")
    cfg.run.seed = seed
    if spec.dataset == "image-folder":
        folder = spec.folder
        cfg.data.dataset = "imagenet"
        cfg.data.root = folder.root
        cfg.data.train_split = folder.path(folder.sets[set_name])
        cfg.data.class_set = folder.path(folder.class_set)
    else:  # cifar10-lt / cifar100-lt by ratio
        cfg.data.dataset = spec.dataset
        cfg.data.root = spec.root
        cfg.data.imbalance_ratio = float(spec.family.sets[set_name])
    return cfg


def _probe_options(
    spec: StudySpec, cfg: Config, cdir: Path, groups: str
) -> dict[str, ProbeOptions]:
    folder = spec.folder
    out: dict[str, ProbeOptions] = {}
    for name, probe in spec.probes.items():
        values = {f.name: getattr(probe, f.name) for f in dataclasses.fields(probe)}
        values["eval_every"] = values["epochs"]  # evaluated once, after the last epoch
        opts = ProbeOptions(**values)
        opts.seed = int(cfg.run.seed)
        opts.checkpoint = cfg.run.output_dir
        opts.grouping = spec.grouping
        opts.group_counts = groups
        opts.device = cfg.run.device
        opts.workers = cfg.data.num_workers
        opts.image_size = cfg.data.image_size
        opts.out = str(cdir / name)
        opts.quiet = True
        if spec.dataset == "image-folder":
            opts.dataset = "imagenet"
            opts.data_root = folder.probe_root or folder.root
            opts.train_split = folder.path(folder.probe_train)
            opts.val_split = folder.path(folder.test)
            opts.val_root = folder.test_root or folder.root
            opts.class_set = folder.path(folder.class_set)
        else:
            opts.dataset = dataset_info(spec.dataset).long_tailed_from  # type: ignore[assignment]
            opts.data_root = spec.root
        out[name] = opts
    return out


def cell_jobs(spec: StudySpec, out: Path, overrides: Sequence[str] = ()) -> list[CellJob]:
    """Every (method x set x seed) of the study as jobs, in the order the study runs them."""
    groups = grouping_source(spec, out)
    configs = {m: cell_config(spec, m, overrides) for m in spec.methods}
    jobs: list[CellJob] = []
    for set_name in spec.sets:
        for method in spec.methods:
            for seed in spec.run_seeds:
                cdir = cell_dir(out, method, set_name, seed)
                cfg = _pretrain_config(spec, configs[method], set_name, cdir, seed)
                probes = _probe_options(spec, cfg, cdir, groups)
                jobs.append(CellJob(method, set_name, seed, cdir, cfg, probes))
    return jobs


# ----------------------------------------------------------------------------- commands


def pretrain_command(spec: StudySpec, job: CellJob) -> list[str]:
    """The command that pre-trains a cell, as a user would type it."""
    if spec.launcher == "torchrun":
        head = [
            "torchrun",
            "--standalone",
            "--nproc_per_node",
            str(spec.nproc_per_node),
            "-m",
            "balfeat",
        ]
    else:
        head = ["balfeat"]
    return [*head, "pretrain", "--config", str(job.config_file)]


def probe_command(job: CellJob, probe: str) -> list[str]:
    """The command that runs one probe of a cell."""
    return ["balfeat", "probe", "--config", str(job.probe_file(probe))]


def write_job_files(job: CellJob) -> None:
    """Write the cell's ``pretrain.yaml`` and ``<probe>.probe.yaml`` files.

    Raises:
        ConfigError: the cell has a checkpoint made with another pre-training config (the
            study's base or methods changed): resuming it would mix two configurations.
    """
    job.cdir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(job.config), sort_keys=False)
    before = job.config_file.read_text() if job.config_file.is_file() else text
    if before != text and find_last_checkpoint(Path(job.config.run.output_dir)) is not None:
        raise ConfigError(
            f"cell {job.method} on {job.set_name} in {str(job.cdir)!r} was trained with another "
            f"pre-training configuration ({job.config_file.name}); delete that folder to re-run "
            "it, or give the changed method a new name"
        )
    atomic_write_text(job.config_file, text)
    for name, opts in job.probes.items():
        probe_job = {"probe": dataclasses.asdict(ProbeJob(opts).probe)}
        atomic_write_text(job.probe_file(name), yaml.safe_dump(probe_job, sort_keys=False))


# ----------------------------------------------------------------------------- results


def _results_files(job: CellJob, probe: str) -> dict[str, Path]:
    """Row label -> results file of one probe (``<probe>/A`` and ``/B`` under a class split)."""
    base = job.cdir / probe
    if job.probes[probe].class_set:
        return {
            f"{probe}.A": base / "A" / "results.json",
            f"{probe}.B": base / "B" / "results.json",
        }
    return {probe: base / "results.json"}


def job_done(job: CellJob) -> bool:
    """Whether every probe of the cell has written its results."""
    return all(p.is_file() for name in job.probes for p in _results_files(job, name).values())


def pretrain_counts(spec: StudySpec, job: CellJob) -> list[int]:
    """Images per class of the cell's pre-training set (its split file, or the CIFAR-LT
    protocol's counts at its ratio)."""
    if spec.dataset == "image-folder":
        split = job.config.data.train_split
        return set_counts(split) if split else []  # '' = the whole folder: counted by the probe
    info = dataset_info(spec.dataset)
    per_class = 5000 if info.long_tailed_from == "cifar10" else 500
    ratio = float(spec.family.sets[job.set_name])
    return exponential_counts(int(info.num_classes or 0), per_class, ratio)


def job_rows(spec: StudySpec, job: CellJob) -> list[Row]:
    """The table rows of a finished cell, from the results its probes wrote."""
    rows: list[Row] = []
    counts = pretrain_counts(spec, job)
    present = [n for n in counts if n > 0]
    ratio = max(present) / min(present) if present else 1.0
    for name in job.probes:
        for label, path in _results_files(job, name).items():
            results = json.loads(path.read_text())
            rows.append(
                row_from_results(
                    results,
                    job.method,
                    job.set_name,
                    ratio,
                    label,
                    cell=f"{job.method}__{job.set_name}",
                    seed=job.seed,
                )
            )
            per_class = results.get("per_class") or []
            if len(per_class) == len(counts):  # the pre-training counts, as the study's rows
                rows[-1]["train_counts"] = counts
                rows[-1]["train_images"] = int(sum(counts))
    return rows


def collect_rows(spec: StudySpec, jobs: Sequence[CellJob]) -> tuple[list[Row], list[CellJob]]:
    """The rows of the finished cells and the list of missing ones; never trains."""
    rows: list[Row] = []
    missing: list[CellJob] = []
    for job in jobs:
        if job_done(job):
            rows += job_rows(spec, job)
        else:
            missing.append(job)
    return rows, missing


# ----------------------------------------------------------------------------- running


def run_job(
    spec: StudySpec, job: CellJob, echo: Callable[[str], None] = print, progress: bool = True
) -> None:
    """Pre-train the cell (resuming its checkpoint) and run its probes that have no results."""
    from balfeat.classify.runner import run_probe_job

    write_job_files(job)
    run = Path(job.config.run.output_dir)
    resume = find_last_checkpoint(run) is not None
    # a finished run resumed trains nothing (engine.run_dir.finished_summary)
    cmd = pretrain_command(spec, job)
    cmd += ["--resume"] if resume else ["run.overwrite=true"]
    cmd += [] if progress else ["--quiet"]
    echo("    $ " + shlex.join(cmd))
    if spec.launcher == "torchrun":
        torchrun = [sys.executable, "-m", "torch.distributed.run", *cmd[1:]]
        subprocess.run(torchrun, check=True)
    else:
        from balfeat.engine.trainer import Trainer

        cfg = copy.deepcopy(job.config)
        cfg.run.overwrite = not resume
        cfg.run.progress = progress
        Trainer(cfg, resume=resume).fit()
    for name, opts in job.probes.items():
        if all(p.is_file() for p in _results_files(job, name).values()):
            continue
        echo("    $ " + shlex.join(probe_command(job, name)))
        for line in run_probe_job(dataclasses.replace(opts)):
            echo("    " + line)


def missing_lines(spec: StudySpec, jobs: Sequence[CellJob]) -> list[str]:
    """One line per unfinished cell: its folder and the commands that finish it."""
    lines = []
    for job in jobs:
        lines.append(f"missing: {job.method} on {job.set_name}, seed {job.seed} ({job.cdir})")
        lines.append("    " + shlex.join(pretrain_command(spec, job)))
        lines += ["    " + shlex.join(probe_command(job, p)) for p in job.probes]
    return lines


def check_launcher(spec: StudySpec) -> None:
    """Refuse a torchrun launcher without torchrun's module (torch.distributed.run)."""
    if spec.launcher != "torchrun":
        return
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError as err:  # pragma: no cover - every supported torch has it
        raise ConfigError(f"launcher: torchrun needs torch.distributed.run ({err})") from None


def run_job_study(
    spec: StudySpec,
    out: Path,
    overrides: Sequence[str] = (),
    echo: Callable[[str], None] = print,
    progress: bool = True,
    before_cell: Callable[[], str] = lambda: "",
) -> list[Row]:
    """Run every unfinished (cell, seed) of a job study; return the rows of all of them.

    ``before_cell`` runs before each cell that runs (the study's thread re-check); what it
    returns ends the cell's status line."""
    check_launcher(spec)
    out.mkdir(parents=True, exist_ok=True)
    jobs = cell_jobs(spec, out, overrides)
    rows: list[Row] = []
    for i, job in enumerate(jobs, 1):
        what = f"[{i}/{len(jobs)}] {job.method} on {job.set_name}, seed {job.seed}"
        if job_done(job):
            echo(f"{what}: done before, skipped")
        else:
            used = before_cell()
            echo(f"{what} ..." + (f" ({used})" if used else ""))
            run_job(spec, job, echo, progress)
        rows += job_rows(spec, job)
    return rows
