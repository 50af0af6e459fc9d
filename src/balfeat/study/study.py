"""Studies: a grid of (method x imbalance set x probe protocol) cells, run and reported.

A study file (YAML) describes the grid::

    name: fmnist-imbalance            # report title
    output_dir: runs/fmnist-study     # cells/, results.csv, report.md go here
    dataset: fashion-mnist            # fashion-mnist | synthetic | array (in-memory data)
    root: ""                          # data folder / .npz file ("" = default location)
    seed: 0
    family:                           # the imbalance family of pre-training sets
      total: 5000                     # images per set (the same for every set)
      sets: {balanced: 1, exp10: 10, exp100: 100}   # name: n_max / n_min (exponential profile)
    probe_per_class: 300              # balanced probe training set: images per class
    test_max: 0                       # test images (0 = the whole test set)
    grouping: thirds                  # many/medium/few grouping (metrics.parse_grouping)
    base:                             # pretrain config (balfeat.engine.config) for every cell
      model: {backbone: resnet20}
      optim: {epochs: 2, batch_size: 128}
    methods:                          # method id: config mapping merged over base
      sl: {method: {name: sl}, data: {augmentation: supervised}, optim: {base_lr: 0.1}}
      moco_v2: {method: {name: moco_v2, K: 4096}}
    probes:                           # protocol name: balfeat.classify.probe.ProbeConfig fields
      fast: {epochs: 30, lr: 1.0, schedule: cosine}

Every cell pre-trains with :class:`balfeat.engine.trainer.Trainer` (library call, not a
subprocess) into ``cells/<method>__<set>/pretrain`` and probes the frozen backbone with the fast
(cached-feature) protocol on a *balanced* training set, evaluating on the test set with
many/medium/few groups by the pre-training set's counts; each probe writes ``results.json`` and
``per_class.csv`` into ``cells/<method>__<set>/<protocol>``. A cell whose ``results.json`` files
all exist is skipped, and an interrupted pre-training resumes from its last checkpoint, so a
study can be re-run after a crash or with more cells. The probe selects no epoch on the test set:
it evaluates once, after the last epoch (``eval_every = epochs``).

Pre-training sets of one family have the same number of images (``family.total``): the
exponential profile ``n_c = n_max * ratio^(-c/(C-1))`` is scaled so the counts sum to ``total``
(the largest ``n_max`` whose counts fit), the balanced set has ``total / C`` per class. Which
class gets which count is a seeded permutation, the same for every ratio.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from balfeat.errors import ConfigError, DataError

log = logging.getLogger("balfeat.study")

Row = dict[str, Any]


@dataclass
class StudySpec:
    """A parsed study file (see the module docstring for the YAML form)."""

    name: str = "balfeat study"
    output_dir: str = "runs/study"
    dataset: str = "fashion-mnist"
    root: str = ""
    seed: int = 0
    total: int = 5000
    sets: dict[str, float] = field(
        default_factory=lambda: {"balanced": 1.0, "exp10": 10.0, "exp100": 100.0}
    )
    probe_per_class: int = 300
    test_max: int = 0
    grouping: str = "thirds"
    base: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"fast": {}})
    description: str = ""
    synthetic_size: int = 2000
    image_size: int = 28


_TOP_KEYS = (
    "name",
    "output_dir",
    "dataset",
    "root",
    "seed",
    "family",
    "probe_per_class",
    "test_max",
    "grouping",
    "base",
    "methods",
    "probes",
    "description",
    "synthetic_size",
    "image_size",
)


def study_from_mapping(data: Mapping[str, Any], source: str = "study") -> StudySpec:
    """Validate a study mapping (as read from YAML) and build a :class:`StudySpec`.

    Raises:
        ConfigError: an unknown key, a wrong type, or an empty grid; names the key and source.
    """
    import difflib

    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must be a mapping of study keys ({', '.join(_TOP_KEYS)})")
    for k in data:
        if k not in _TOP_KEYS:
            close = difflib.get_close_matches(str(k), _TOP_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown study key {k!r} in {source}{hint}")
    spec = StudySpec()
    for k in ("name", "output_dir", "dataset", "root", "grouping", "description"):
        if k in data:
            if not isinstance(data[k], str):
                raise ConfigError(f"study key {k!r} in {source} must be a string, got {data[k]!r}")
            setattr(spec, k, data[k])
    for k in ("seed", "probe_per_class", "test_max", "synthetic_size", "image_size"):
        if k in data:
            if not isinstance(data[k], int) or isinstance(data[k], bool) or data[k] < 0:
                raise ConfigError(
                    f"study key {k!r} in {source} must be a non-negative integer, got {data[k]!r}"
                )
            setattr(spec, k, data[k])
    if spec.dataset not in ("fashion-mnist", "synthetic", "array"):
        raise ConfigError(
            f"study dataset {spec.dataset!r} in {source} is not supported; studies run on "
            "in-memory data: fashion-mnist, synthetic or array (an .npz in root)"
        )
    fam = data.get("family", {}) or {}
    if not isinstance(fam, Mapping):
        raise ConfigError(f"study key 'family' in {source} must be a mapping (total:, sets:)")
    for k in fam:
        if k not in ("total", "sets"):
            raise ConfigError(f"unknown key 'family.{k}' in {source}; use 'total' and 'sets'")
    if "total" in fam:
        if not isinstance(fam["total"], int) or fam["total"] < 1:
            raise ConfigError(f"'family.total' in {source} must be a positive integer")
        spec.total = fam["total"]
    if "sets" in fam:
        sets = fam["sets"]
        if not isinstance(sets, Mapping) or not sets:
            raise ConfigError(
                f"'family.sets' in {source} must map set names to imbalance ratios, e.g. "
                "{balanced: 1, exp100: 100}"
            )
        spec.sets = {}
        for name, ratio in sets.items():
            if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio < 1:
                raise ConfigError(
                    f"'family.sets.{name}' in {source} must be a ratio n_max/n_min >= 1, "
                    f"got {ratio!r}"
                )
            spec.sets[str(name)] = float(ratio)
    for k in ("base", "methods", "probes"):
        if k in data:
            if not isinstance(data[k], Mapping):
                raise ConfigError(f"study key {k!r} in {source} must be a mapping")
            setattr(spec, k, dict(data[k]))
    if not spec.methods:
        raise ConfigError(
            f"{source} lists no methods; add e.g. methods: {{sl: {{method: {{name: sl}}}}}}"
        )
    if not spec.probes:
        raise ConfigError(f"{source} lists no probes; add e.g. probes: {{fast: {{}}}}")
    from balfeat.classify.probe import ProbeConfig
    from balfeat.engine.config import Config, merge_mapping

    probe_fields = set(ProbeConfig.__dataclass_fields__)
    for pname, pkw in spec.probes.items():
        if not isinstance(pkw, Mapping):
            raise ConfigError(f"'probes.{pname}' in {source} must be a mapping of probe options")
        for k in pkw:
            if k not in probe_fields:
                close = difflib.get_close_matches(str(k), sorted(probe_fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown probe option 'probes.{pname}.{k}' in {source}{hint}")
    # Check every method's config now, before hours of training.
    for mname, mcfg in spec.methods.items():
        cfg = merge_mapping(Config(), spec.base, f"{source} (base)")
        merge_mapping(cfg, mcfg or {}, f"{source} (methods.{mname})")
    return spec


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study file.

    Raises:
        ConfigError: missing/unparsable file or invalid content.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study file {str(p)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"study file {str(p)!r} is not valid YAML: {err}") from None
    return study_from_mapping(data or {}, f"study file {str(p)!r}")


# ----------------------------------------------------------------------------- data


@dataclass
class StudyData:
    """The in-memory arrays of a study: the training pool and the test set."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """C."""
        return len(self.class_names)


def load_study_data(spec: StudySpec) -> StudyData:
    """Load the study's dataset as arrays (Fashion-MNIST, synthetic or an ``.npz``)."""
    if spec.dataset == "fashion-mnist":
        from balfeat.data.sources import load_fashion_mnist

        d = load_fashion_mnist(spec.root or None)
        return StudyData(d.train_x, d.train_y, d.test_x, d.test_y, list(d.class_names))
    if spec.dataset == "synthetic":
        from balfeat.engine.build import synthetic_arrays

        c = int(spec.base.get("data", {}).get("num_classes", 10))
        n = max(spec.synthetic_size, 1)
        tx, ty = synthetic_arrays(n, c, spec.image_size, 1, spec.seed)
        vx, vy = synthetic_arrays(max(n // 4, c), c, spec.image_size, 1, spec.seed + 1)
        return StudyData(tx, ty, vx, vy, [f"class{i}" for i in range(c)])
    if not spec.root:
        raise ConfigError(
            "study dataset 'array' needs root: FILE.npz (train_x/train_y/test_x/test_y)"
        )
    with np.load(spec.root) as f:
        try:
            tx, ty, vx, vy = f["train_x"], f["train_y"], f["test_x"], f["test_y"]
        except KeyError as err:
            raise DataError(
                f"{spec.root}: needs arrays train_x, train_y, test_x, test_y ({err} is missing)"
            ) from None
    c = int(max(ty.max(), vy.max())) + 1
    return StudyData(tx, ty.astype(np.int64), vx, vy.astype(np.int64), [str(i) for i in range(c)])


def family_counts(num_classes: int, total: int, ratio: float, seed: int = 0) -> list[int]:
    """Per-class counts of one set of an imbalance family of ``total`` images.

    ``ratio == 1`` gives ``total // C`` per class; otherwise the exponential profile
    (:func:`balfeat.data.imbalance.exponential_counts`) with the largest ``n_max`` whose counts
    sum to at most ``total``, the remainder added to the head classes one image each. Counts
    are assigned to classes by a seeded permutation (the same for every ratio).

    Returns:
        ``counts[c]`` for class ``c``; sums to ``total`` (up to ``C - 1`` fewer when balanced).
    """
    from balfeat.data.imbalance import exponential_counts

    if ratio <= 1.0:
        profile = [total // num_classes] * num_classes
    else:
        lo, hi = 1, total
        while lo < hi:  # largest n_max with sum(counts) <= total
            mid = (lo + hi + 1) // 2
            if sum(exponential_counts(num_classes, mid, ratio)) <= total:
                lo = mid
            else:
                hi = mid - 1
        profile = exponential_counts(num_classes, lo, ratio)
        rest = total - sum(profile)
        for i in range(min(rest, num_classes)):
            profile[i] += 1
        profile = [max(1, c) for c in profile]
    order = np.random.default_rng(seed).permutation(num_classes)
    counts = [0] * num_classes
    for rank, cls in enumerate(order.tolist()):
        counts[cls] = profile[rank]
    return counts


def subset_by_counts(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """Sorted indices keeping ``counts[c]`` random images of each class ``c``.

    Raises:
        DataError: a class has fewer images than asked for.
    """
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c, k in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise DataError(
                f"class {c} has {len(idx)} training images but the imbalance set needs {k}; "
                "lower family.total (or probe_per_class)"
            )
        keep.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- cells


def cell_name(method: str, set_name: str) -> str:
    """Directory name of a cell: ``<method>__<set>``."""
    return f"{method}__{set_name}"


def cell_done(out_dir: Path, method: str, set_name: str, probes: Mapping[str, Any]) -> bool:
    """Whether every probe of the cell has written its ``results.json``."""
    cdir = out_dir / "cells" / cell_name(method, set_name)
    return all((cdir / p / "results.json").is_file() for p in probes)


def _read_row(out_dir: Path, method: str, set_name: str, ratio: float, protocol: str) -> Row:
    from balfeat.study.report import row_from_results

    path = out_dir / "cells" / cell_name(method, set_name) / protocol / "results.json"
    results = json.loads(path.read_text())
    return row_from_results(
        results,
        method,
        set_name,
        ratio,
        protocol,
        cell=cell_name(method, set_name),
        seconds=results.get("cell_seconds"),
    )


def _eval_transform(image_size: int, channels: int) -> Any:
    """The transform of probe/test images: resize if needed, to tensor, normalise."""
    from balfeat.data import transforms

    return transforms.build_transform("eval", image_size, channels)


def run_cell(
    spec: StudySpec,
    data: StudyData,
    method: str,
    set_name: str,
    out_dir: Path,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> list[Row]:
    """Pre-train one method on one imbalance set, then run every probe of the study.

    Args:
        spec: the study.
        data: its arrays.
        method: a key of ``spec.methods``.
        set_name: a key of ``spec.sets``.
        out_dir: the study's output directory.
        overrides: extra ``section.key=value`` config overrides for this cell.
        progress: show the trainer's progress bar.

    Returns:
        One results-table row per probe.
    """
    from torch import nn

    from balfeat.classify.probe import ProbeConfig, probe_fast
    from balfeat.data.datasets import ArrayDataset
    from balfeat.engine import build
    from balfeat.engine.config import Config, apply_overrides, merge_mapping, validate
    from balfeat.engine.trainer import Trainer
    from balfeat.evaluation.metrics import evaluate, write_results
    from balfeat.study.report import row_from_results

    start = time.perf_counter()
    ratio = spec.sets[set_name]
    cdir = out_dir / "cells" / cell_name(method, set_name)
    cfg = merge_mapping(Config(), spec.base, "study base")
    merge_mapping(cfg, spec.methods[method] or {}, f"study methods.{method}")
    apply_overrides(cfg, overrides or [])
    cfg.run.output_dir = str(cdir / "pretrain")
    cfg.run.seed = spec.seed
    cfg.run.progress = progress
    channels = 1 if data.train_x.ndim == 3 else int(data.train_x.shape[-1])
    cfg.data.channels = channels
    cfg.data.image_size = int(data.train_x.shape[1])
    validate(cfg)

    counts = family_counts(data.num_classes, spec.total, ratio, seed=spec.seed)
    idx = subset_by_counts(data.train_y, counts, seed=spec.seed + 1)
    train_ds = ArrayDataset(
        data.train_x[idx],
        data.train_y[idx],
        transform=build.build_transform(cfg),
        class_names=data.class_names,
        num_classes=data.num_classes,
    )
    from balfeat.engine.checkpoint import find_last_checkpoint

    resume = find_last_checkpoint(Path(cfg.run.output_dir)) is not None
    trainer = Trainer(cfg, train_dataset=train_ds, resume=resume)
    summary = trainer.fit()
    backbone = trainer.method.backbone
    if not isinstance(backbone, nn.Module):  # pragma: no cover - every method has one
        raise TypeError(f"method {method!r} has no backbone module")

    eval_tf = _eval_transform(cfg.data.image_size, channels)
    probe_idx = subset_by_counts(
        data.train_y, [spec.probe_per_class] * data.num_classes, seed=spec.seed + 2
    )
    probe_ds = ArrayDataset(
        data.train_x[probe_idx],
        data.train_y[probe_idx],
        transform=eval_tf,
        class_names=data.class_names,
        num_classes=data.num_classes,
    )
    test_sel = np.arange(len(data.test_y))
    if spec.test_max and spec.test_max < len(test_sel):
        test_sel = np.sort(
            np.random.default_rng(spec.seed + 3).choice(len(test_sel), spec.test_max, replace=False)
        )
    test_ds = ArrayDataset(
        data.test_x[test_sel],
        data.test_y[test_sel],
        transform=eval_tf,
        class_names=data.class_names,
        num_classes=data.num_classes,
    )
    device = next(backbone.parameters()).device
    rows: list[Row] = []
    for protocol, pkw in spec.probes.items():
        kw = dict(pkw)
        kw.setdefault("seed", spec.seed)
        pcfg = ProbeConfig(**kw)
        pcfg.eval_every = pcfg.epochs  # evaluate once, after the last epoch: no test-set selection
        res = probe_fast(backbone, probe_ds, test_ds, data.num_classes, pcfg, device=device)
        results = evaluate(
            res.val_logits.numpy(),
            res.val_labels.numpy(),
            np.asarray(counts),
            class_names=data.class_names,
            grouping=spec.grouping,
        )
        results.update(
            {
                "protocol": protocol,
                "probe": pcfg.as_dict(),
                "checkpoint": str(Path(cfg.run.output_dir) / "last.pth"),
                "epochs": pcfg.epochs,
                "method": method,
                "set": set_name,
                "imbalance_ratio": ratio,
                "pretrain_counts": counts,
                "probe_train_per_class": spec.probe_per_class,
                "pretrain_summary": summary,
                "probe_seconds": res.seconds,
                "cell_seconds": time.perf_counter() - start,
            }
        )
        write_results(cdir / protocol, results)
        rows.append(
            row_from_results(
                results,
                method,
                set_name,
                ratio,
                protocol,
                cell=cell_name(method, set_name),
                seconds=results["cell_seconds"],
            )
        )
    return rows


def run_study(
    spec: StudySpec,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    data: StudyData | None = None,
) -> tuple[list[Row], dict[str, Path]]:
    """Run every cell of a study that is not finished yet, then write the report.

    Args:
        spec: the study.
        out_dir: output directory (default ``spec.output_dir``).
        overrides: ``section.key=value`` config overrides applied to every cell.
        progress: show progress bars.
        echo: where status lines go.
        data: the arrays (default: :func:`load_study_data`).

    Returns:
        The results table and the report's paths (see :func:`balfeat.study.report.write_report`).
    """
    from balfeat.study.report import write_report

    out = Path(out_dir or spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = _spec_dict(spec)
    saved["overrides"] = list(overrides or [])
    saved.pop("output_dir")
    marker = out / "study.yaml"
    if marker.is_file():
        try:
            before = yaml.safe_load(marker.read_text()) or {}
        except yaml.YAMLError:
            before = {}
        before.pop("output_dir", None)
        if before and before != saved:
            changed = sorted(k for k in set(before) | set(saved) if before.get(k) != saved.get(k))
            raise ConfigError(
                f"{str(out)!r} holds results of a different study (differs in: "
                f"{', '.join(changed)}); finished cells would be mixed with new ones. Use another "
                "output directory, or delete this one to start over"
            )
    marker.write_text(yaml.safe_dump(saved, sort_keys=False))
    cells = [(m, s) for s in spec.sets for m in spec.methods]
    rows: list[Row] = []
    todo = [c for c in cells if not cell_done(out, c[0], c[1], spec.probes)]
    if todo and data is None:
        data = load_study_data(spec)
    t0 = time.perf_counter()
    for i, (m, s) in enumerate(cells, 1):
        if (m, s) not in todo:
            echo(f"[{i}/{len(cells)}] {m} on {s}: done before, skipped")
            rows += [_read_row(out, m, s, spec.sets[s], p) for p in spec.probes]
            continue
        elapsed = time.perf_counter() - t0
        echo(f"[{i}/{len(cells)}] {m} on {s} (ratio {spec.sets[s]:g}) ... ({elapsed:.0f} s so far)")
        assert data is not None
        cell_rows = run_cell(spec, data, m, s, out, overrides, progress)
        for r in cell_rows:
            echo(
                f"    {r['protocol']} probe: top1 {_f(r['top1'])}  many {_f(r['many'])}  "
                f"medium {_f(r['medium'])}  few {_f(r['few'])}"
            )
        rows += cell_rows
    paths = write_report(rows, out, title=spec.name, description=spec.description)
    return rows, paths


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


def _spec_dict(spec: StudySpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "output_dir": spec.output_dir,
        "dataset": spec.dataset,
        "root": spec.root,
        "seed": spec.seed,
        "family": {"total": spec.total, "sets": dict(spec.sets)},
        "probe_per_class": spec.probe_per_class,
        "test_max": spec.test_max,
        "grouping": spec.grouping,
        "base": spec.base,
        "methods": spec.methods,
        "probes": spec.probes,
        "synthetic_size": spec.synthetic_size,
        "image_size": spec.image_size,
    }


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op CPU threads for a study run and return the number used.

    Args:
        threads: ``N > 0`` uses N threads; ``0`` (auto) uses every core, or 1 thread when the
            machine is already busy (1-minute load average >= cores): on a contended CPU,
            several OpenMP threads per process spin against each other and run 2-3x slower
            than one.
    """
    import os

    import torch

    if threads <= 0:
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0] >= cores
        except OSError:  # pragma: no cover - platforms without getloadavg
            busy = False
        threads = 1 if busy else cores
    torch.set_num_threads(threads)
    return threads


def probe_recipe_args(path: str | Path) -> list[str]:
    """The ``balfeat probe`` arguments of a probe recipe file (``configs/probe_*.yaml``).

    A probe recipe is a YAML file with one ``probe:`` mapping whose keys are ``balfeat probe``
    options without the dashes (``train_split`` is ``--train-split``); lists become
    comma-separated values and ``true`` a bare flag (``false`` leaves the flag out).

    Raises:
        ConfigError: missing/unparsable file, no ``probe:`` mapping, or an option that
            ``balfeat probe`` does not have (the message names the closest one).
    """
    import difflib

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"probe recipe {str(p)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"probe recipe {str(p)!r} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("probe"), Mapping):
        raise ConfigError(f"probe recipe {str(p)!r} needs a 'probe:' mapping of probe options")
    valid = _probe_options()
    args: list[str] = []
    for key, value in data["probe"].items():
        opt = "--" + str(key).replace("_", "-")
        if valid and opt not in valid:
            close = difflib.get_close_matches(opt, sorted(valid), n=1)
            hint = f"; did you mean {close[0][2:].replace('-', '_')!r}?" if close else ""
            raise ConfigError(
                f"probe recipe {str(p)!r}: 'probe.{key}' is not a `balfeat probe` option{hint}"
            )
        if isinstance(value, bool):
            if value:
                args.append(opt)
            continue
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        args += [opt, str(value)]
    return args


def _probe_options() -> set[str]:
    """The long options of ``balfeat probe`` (empty when that command is not available)."""
    import argparse

    try:
        from balfeat.cli import probe as probe_cli
    except ImportError:  # pragma: no cover - the probe command is part of the package
        return set()
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    probe_cli.add_parser(sub)
    probe_parser = sub.choices["probe"]
    return {s for a in probe_parser._actions for s in a.option_strings if s.startswith("--")}
