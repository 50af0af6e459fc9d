"""Running a study: every (method x imbalance set x seed) cell, then the report.

The study file is described in :mod:`balfeat.study.spec`; one cell is :mod:`balfeat.study.cells`.
A (cell, seed) whose results exist is skipped, and an interrupted pre-training resumes from its
last checkpoint, so a study can be re-run after a crash, or extended with more methods, sets,
probes or seeds (only the new cells run; a cell whose configuration changed is refused, naming
it). A finished cell without its ``own`` row (run by an older balfeat) gets it on the next run
from its checkpoint, without training or probing again.

Each method's pre-training config is built and checked once per run
(:func:`~balfeat.study.spec.cell_config`); a cell copies it and sets its folder and seed.

Pre-training sets of one family have the same number of images (``family.total``): the
exponential profile ``n_c = n_max * ratio^(-c/(C-1))`` is scaled so the counts sum to ``total``
(:func:`balfeat.data.imbalance.family_counts`). Which class gets which count is a permutation
seeded by the study's ``seed``, the same for every ratio and every run seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from balfeat.atomic import atomic_write_text
from balfeat.device import configure_threads
from balfeat.engine.checkpoint import find_last_checkpoint
from balfeat.engine.config import Config, config_from_dict, config_to_dict
from balfeat.engine.run_dir import folder_lock
from balfeat.errors import BalfeatError, ConfigError
from balfeat.study.cells import (
    OWN_CLASSIFIER,
    Row,
    StudyData,
    cell_dir,
    check_family,
    group_counts,
    load_study_data,
    method_has_classifier,
    read_row,
    run_cell,
    run_own,
)
from balfeat.study.control import CONTROL, run_control
from balfeat.study.published import study_trains
from balfeat.study.report import write_report
from balfeat.study.spec import StudySpec, cell_config
from balfeat.typed_config import to_dict

# ----------------------------------------------------------------------------- reuse


def cell_done(
    out_dir: Path, method: str, set_name: str, probes: Mapping[str, Any], seed: int = 0
) -> bool:
    """Whether every probe of the (cell, seed) has written its ``results.json``."""
    cdir = cell_dir(out_dir, method, set_name, seed)
    return all((cdir / p / "results.json").is_file() for p in probes)


def own_missing(out_dir: Path, method: str, set_name: str, seed: int, method_name: str) -> bool:
    """Whether a (cell, seed) of a method with its own classifier lacks its ``own`` results
    while its checkpoint is there to evaluate it from (a cell finished by an older balfeat)."""
    cdir = cell_dir(out_dir, method, set_name, seed)
    return (
        method_has_classifier(method_name)
        and not (cdir / OWN_CLASSIFIER / "results.json").is_file()
        and find_last_checkpoint(cdir / "pretrain") is not None
    )


def result_line(r: Row) -> str:
    """The status line of one row: its protocol, top-1 and many/medium/few."""
    what = "own classifier" if r["protocol"] == OWN_CLASSIFIER else f"{r['protocol']} probe"
    return (
        f"    {what}: top1 {_f(r['top1'])}  many {_f(r['many'])}  medium {_f(r['medium'])}  "
        f"few {_f(r['few'])}"
    )


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


#: Study keys that define every cell's data: a directory of results is only reused when they match.
_GLOBAL_KEYS = (
    "dataset",
    "root",
    "seed",
    "family.total",
    "probe_per_class",
    "test_max",
    "grouping",
    "groups",
    "synthetic_size",
    "image_size",
)


def _global_dict(spec: StudySpec) -> dict[str, Any]:
    return {
        "dataset": spec.dataset,
        "root": spec.root,
        "seed": spec.seed,
        "family.total": spec.total,
        "probe_per_class": spec.probe_per_class,
        "test_max": spec.test_max,
        "grouping": spec.grouping,
        "groups": spec.groups,
        "synthetic_size": spec.synthetic_size,
        "image_size": spec.image_size,
    }


def _check_reuse(out: Path, spec: StudySpec) -> None:
    """Refuse an output folder holding a study whose cells would not be comparable."""
    marker = out / "study.yaml"
    if not marker.is_file():
        return
    try:
        before = (yaml.safe_load(marker.read_text()) or {}).get("global", {})
    except (yaml.YAMLError, AttributeError):
        before = {}
    now = _global_dict(spec)
    changed = sorted(k for k in now if k in before and before[k] != now[k])
    if changed:
        raise ConfigError(
            f"{str(out)!r} holds results of a study with other {', '.join(changed)}; its cells "
            "would not be comparable with new ones. Use another output directory, or delete "
            "this one to start over"
        )


def _normalised(config: Any) -> Any:
    """A saved pre-training config as this version reads it (keys added since take their
    defaults, keys a flat method section held for other methods are dropped), so a cell finished
    by an earlier version is not mistaken for a changed one."""
    if not isinstance(config, dict):
        return config
    try:
        return config_to_dict(config_from_dict(config))
    except BalfeatError:
        return config


def _keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"section.key": value}`` of a nested config dict (leaves only)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_keys(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _check_cell(cdir: Path, record: dict[str, Any], method: str, set_name: str) -> list[str]:
    """Refuse a finished (cell, seed) whose configuration differs from the study's now.

    Returns:
        ``"key=value"`` of the keys an earlier version did not write and that this version reads
        with their defaults (empty for a cell written by this version): its results were made
        by code that may not have had them, which the caller says.
    """
    path = cdir / "cell.yaml"
    if not path.is_file():
        return []
    before = (yaml.safe_load(path.read_text()) or {}).get("config")
    now = _normalised(before)
    if now != _normalised(record["config"]):
        raise ConfigError(
            f"cell {method} on {set_name} in {str(cdir)!r} was run with another "
            "pre-training configuration (base or methods changed); delete that folder to "
            "re-run it, or give the changed method a new name"
        )
    written = _keys(before)
    return [f"{k}={v}" for k, v in _keys(now).items() if k not in written]


def _control_rows(
    spec: StudySpec,
    out: Path,
    set_name: str,
    seed: int,
    todo: bool,
    record: dict[str, Any],
    echo: Callable[[str], None],
    *,
    data: StudyData | None,
    groups: tuple[list[int], str] | None,
    config: Config,
    source: str,
) -> list[Row]:
    """The control rows of one (set, seed): read when done before, else run
    (:func:`balfeat.study.control.run_control`) with the architecture of method ``source``."""
    cdir = cell_dir(out, CONTROL, set_name, seed)
    _check_cell(cdir, record, CONTROL, set_name)
    if not todo:
        return [read_row(out, CONTROL, set_name, seed, p) for p in spec.probes]
    echo(f"control on {set_name}, seed {seed}: untrained {source} network, BatchNorm adapted")
    assert data is not None
    cdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cdir / "cell.yaml", yaml.safe_dump(record, sort_keys=False))
    rows = run_control(spec, data, set_name, out, seed, groups, config=config, source=source)
    for r in rows:
        echo(result_line(r))
    return rows


def run_study(
    spec: StudySpec,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    data: StudyData | None = None,
    threads: int | None = None,
    dpi: int | None = None,
) -> tuple[list[Row], dict[str, Path]]:
    """Run every (cell, seed) of a study that is not finished yet, then write the report.

    Args:
        spec: the study.
        out_dir: output directory (default ``spec.output_dir``).
        overrides: ``section.key=value`` pre-training overrides applied to every cell.
        progress: show progress bars.
        echo: where status lines go.
        data: the arrays (default: :func:`~balfeat.study.cells.load_study_data`).
        threads: torch CPU threads, set again before every cell that runs
            (:func:`balfeat.device.configure_threads`: ``0`` = what other processes leave free
            at that moment, ``N`` = N); each cell's results record the number it used. Default
            ``None``: torch's setting is left as it is.
        dpi: resolution of the report's PNG figures (default :data:`balfeat.study.plots.DPI`;
            PDF copies are written beside them).

    Returns:
        The results table (one row per cell, seed and probe, plus an ``own`` row per (cell,
        seed) of a method with its own classifier) and the report's paths (see
        :func:`balfeat.study.report.write_report`).
    """
    out = Path(out_dir or spec.output_dir)

    def set_threads() -> str:
        """Re-choose the thread count before a cell (the load may have changed); says it."""
        return "" if threads is None else f"{configure_threads(threads)} torch thread(s)"

    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {str(out)!r} is a file; choose a directory")
    _check_reuse(out, spec)
    if OWN_CLASSIFIER in spec.probes:
        raise ConfigError(
            f"probe name {OWN_CLASSIFIER!r} is reserved for the rows of a method's own "
            "classifier (BCL, PaCo, GPaCo); rename probes.own"
        )
    if spec.is_job_study:  # cells as balfeat pretrain / probe jobs (study/jobs.py)
        from balfeat.study.jobs import run_job_study

        job_rows = run_job_study(spec, out, overrides or [], echo, progress, set_threads)
        trains, datasets = study_trains(spec, overrides or [])
        paths = write_report(job_rows, out, title=spec.name, description=spec.description,
                             published=spec.published, method_names=trains,
                             published_datasets=datasets, dpi=dpi)  # fmt: skip
        return job_rows, paths
    seeds = spec.run_seeds
    cells = [(m, s, seed) for s in spec.sets for m in spec.methods for seed in seeds]
    todo = [c for c in cells if not cell_done(out, c[0], c[1], spec.probes, c[2])]
    # each method's config, built and checked once (a cell copies it)
    configs: dict[str, Config] = {m: cell_config(spec, m, overrides or []) for m in spec.methods}
    own_todo = [
        c
        for c in cells
        if c not in todo and own_missing(out, c[0], c[1], c[2], configs[c[0]].method.name)
    ]
    controls = [(s, seed) for s in spec.sets for seed in seeds] if spec.control else []
    control_todo = [c for c in controls if not cell_done(out, CONTROL, c[0], spec.probes, c[1])]
    if (todo or own_todo or control_todo) and data is None:
        data = load_study_data(spec)
    if data is not None:
        check_family(spec, data)
        groups = group_counts(spec, data.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"global": _global_dict(spec), "overrides": list(overrides or [])}
    atomic_write_text(out / "study.yaml", yaml.safe_dump(saved, sort_keys=False))
    probes = {p: to_dict(probe) for p, probe in spec.probes.items()}
    records = {m: {"config": config_to_dict(cfg), "probes": probes} for m, cfg in configs.items()}
    rows: list[Row] = []
    if controls:  # the untrained network: cheap (no training), the baseline of every gain
        first = next(iter(spec.methods))
        control = {"config": records[first]["config"], "probes": probes}
        for s, seed in controls:
            if (s, seed) in control_todo:
                set_threads()
            rows += _control_rows(
                spec, out, s, seed, (s, seed) in control_todo, control, echo,
                data=data, groups=groups if data is not None else None,
                config=configs[first], source=first,
            )  # fmt: skip
    t0 = time.perf_counter()
    for i, (m, s, seed) in enumerate(cells, 1):
        cdir = cell_dir(out, m, s, seed)
        added = _check_cell(cdir, records[m], m, s)
        if (m, s, seed) not in todo:
            echo(f"[{i}/{len(cells)}] {m} on {s}, seed {seed}: done before, skipped")
            if added:
                echo(
                    f"  note: {str(cdir)!r} was written by an earlier balfeat that did not have "
                    f"{', '.join(added)} (read with these defaults now); its results are kept: "
                    "delete that folder to re-run it with this version"
                )
            rows += [read_row(out, m, s, seed, p) for p in spec.probes]
            if (m, s, seed) in own_todo:  # finished before the own classifier was evaluated
                assert data is not None
                echo("    evaluating its own classifier from the cell's checkpoint")
                with folder_lock(cdir, "study output folder"):
                    own = run_own(
                        spec, data, m, s, out, seed=seed, groups=groups, config=configs[m]
                    )
                echo(result_line(own))
                rows.append(own)
            elif (cdir / OWN_CLASSIFIER / "results.json").is_file():
                rows.append(read_row(out, m, s, seed, OWN_CLASSIFIER))
            continue
        elapsed, used = time.perf_counter() - t0, set_threads()
        echo(
            f"[{i}/{len(cells)}] {m} on {s} (ratio {spec.sets[s]:g}), seed {seed} ... "
            f"({elapsed:.0f} s so far{'; ' + used if used else ''})"
        )
        assert data is not None
        # the cell's locks (its folder and its pre-training run's), held until its results are
        # written: a second study into this folder, or a `balfeat pretrain` into the cell, is
        # refused before anything of the cell is touched (the trainer takes its lock again)
        with folder_lock(cdir, "study output folder"), folder_lock(cdir / "pretrain", "cell"):
            atomic_write_text(cdir / "cell.yaml", yaml.safe_dump(records[m], sort_keys=False))
            cell_rows = run_cell(
                spec, data, m, s, out, overrides, progress,
                seed=seed, groups=groups, config=configs[m],
            )  # fmt: skip
        for r in cell_rows:
            echo(result_line(r))
        rows += cell_rows
    names = data.class_names if data is not None else None
    paths = write_report(
        rows,
        out,
        title=spec.name,
        description=spec.description,
        class_names=names,
        published=spec.published,
        method_names=[cfg.method.name for cfg in configs.values()],
        published_datasets=study_trains(spec, overrides or [])[1],
        dpi=dpi,
    )
    return rows, paths
