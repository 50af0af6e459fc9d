"""One cell of a study: a method pre-trained on one imbalance set with one seed, then probed.

A (cell, seed) pre-trains with :class:`balfeat.engine.trainer.Trainer` (a library call) into
``cells/<method>__<set>/seed<s>/pretrain`` and probes the frozen backbone on a *balanced* training
set, evaluating on the test set; each probe writes ``results.json`` (with the provenance of the
run) and ``per_class.csv`` into ``cells/<method>__<set>/seed<s>/<probe>``. An interrupted
pre-training resumes from its last checkpoint. The probe selects no epoch on the test set: it
evaluates once, after the last epoch.

**Own classifier.** A method that trains a classifier jointly (``classify(images) -> logits``:
BCL, PaCo, GPaCo) also gets a row with protocol ``own``: that classifier, loaded from the cell's
last checkpoint, on the same test images with the same metrics and groups, written to
``…/seed<s>/own/results.json`` beside the probes' folders. ``own`` is therefore not a valid
probe name.

The pre-training sets are :func:`balfeat.data.imbalance.family_counts` of the study's family.
**Groups.** Many/medium/few are fixed once per study — by the counts of the most imbalanced set
of the family (or the ``groups:`` counts file) — and used for every row, balanced sets included,
so "few" names the same classes in every row. The balancedness slope is taken against the same
counts.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from balfeat.classify.features import classifier_logits
from balfeat.classify.probe import run_probe
from balfeat.data import catalog, imbalance
from balfeat.data.datasets import ArrayDataset
from balfeat.data.imbalance import family_counts
from balfeat.data.prepare import subset_by_counts
from balfeat.data.sources import ImageData
from balfeat.data.splits import read_class_counts
from balfeat.data.transforms import build_transform
from balfeat.device import default_device
from balfeat.engine.build import train_transform
from balfeat.engine.checkpoint import find_last_checkpoint, load_method
from balfeat.engine.config import Config, config_to_dict
from balfeat.engine.trainer import Trainer
from balfeat.errors import DataError
from balfeat.evaluation.knn import knn_monitor
from balfeat.evaluation.metrics import evaluate, write_results
from balfeat.evaluation.statistics import bootstrap_interval
from balfeat.methods import get_method
from balfeat.provenance import provenance
from balfeat.study.report import row_from_results
from balfeat.study.spec import StudySpec, cell_config

Row = dict[str, Any]

#: The in-memory arrays of a study: the training pool and the test set.
StudyData = ImageData

#: Protocol name of the rows of a method's own classifier (``classify``), beside the probes.
OWN_CLASSIFIER = "own"


def load_study_data(spec: StudySpec) -> StudyData:
    """Load the study's dataset as arrays (Fashion-MNIST, synthetic or an ``.npz``) from the
    dataset catalogue (:mod:`balfeat.data.catalog`)."""
    if spec.dataset == "synthetic":
        n = max(spec.synthetic_size, 1)
        c = int(spec.base.get("data", {}).get("num_classes", 10))
        return catalog.synthetic_data(
            c,
            spec.image_size,
            channels=1,
            train_size=n,
            test_size=max(n // 4, c),
            seed=spec.seed,
        )
    data = catalog.load_arrays(
        spec.dataset,
        spec.root,
        option=f"study dataset {spec.dataset!r}",
        root_key="root: FILE.npz (train_x/train_y/test_x/test_y)",
    )
    given = spec.base.get("data", {}).get("num_classes")  # base.data.num_classes, if given
    if given is not None:
        where = f"study dataset {spec.dataset!r} {spec.root}".strip()
        catalog.check_num_classes(int(given), len(data.class_names), where)
    return data


def check_family(spec: StudySpec, data: StudyData) -> None:
    """:func:`balfeat.data.imbalance.check_family` of the study's family on its training pool."""
    imbalance.check_family(
        spec.sets,
        spec.total,
        data.train_y,
        data.class_names,
        seed=spec.seed,
        probe_per_class=spec.probe_per_class,
    )


# ----------------------------------------------------------------------------- folders


def cell_name(method: str, set_name: str) -> str:
    """Directory name of a cell: ``<method>__<set>``."""
    return f"{method}__{set_name}"


def cell_dir(out_dir: Path, method: str, set_name: str, seed: int) -> Path:
    """Directory of one (cell, seed): ``cells/<method>__<set>/seed<seed>``."""
    return out_dir / "cells" / cell_name(method, set_name) / f"seed{seed}"


def read_row(out_dir: Path, method: str, set_name: str, seed: int, protocol: str) -> Row:
    """The results-table row of a finished evaluation of a (cell, seed), from its results."""
    path = cell_dir(out_dir, method, set_name, seed) / protocol / "results.json"
    results = json.loads(path.read_text())
    results.setdefault("protocol", protocol)
    return _row(results, method, set_name, seed)


def method_has_classifier(name: str) -> bool:
    """Whether the registered method ``name`` has its own classifier (``classify(images)``), as
    its registry entry says (read without building anything: building TSC, say, optimises its
    class targets).
    """
    return get_method(name).has_classifier


# ----------------------------------------------------------------------------- the cell's data


def most_imbalanced_set(spec: StudySpec) -> str:
    """The set of the family with the largest imbalance ratio (its counts fix the groups)."""
    return max(spec.sets, key=lambda s: spec.sets[s])


def group_counts(spec: StudySpec, num_classes: int) -> tuple[list[int], str]:
    """The per-class counts that fix many/medium/few for the whole study, and their source.

    Raises:
        DataError: a ``groups`` file that is not one non-negative integer per class.
    """
    if spec.groups:
        counts = read_class_counts(spec.groups, num_classes, "groups file")
        return counts, f"groups file {spec.groups}"
    name = most_imbalanced_set(spec)
    counts = family_counts(num_classes, spec.total, spec.sets[name], seed=spec.seed)
    return counts, f"pre-training counts of the most imbalanced set, {name!r}"


def study_test_indices(spec: StudySpec, n: int) -> np.ndarray:
    """Indices of the study's test images among the ``n`` of the test split: all of them, or
    ``test_max`` drawn once with the study's seed (the same for every cell and seed)."""
    sel = np.arange(n)
    if spec.test_max and spec.test_max < n:
        sel = np.sort(np.random.default_rng(spec.seed + 3).choice(n, spec.test_max, replace=False))
    return sel


@dataclass
class CellData:
    """What every evaluation of one (cell, seed) shares: its config, sets and groups."""

    cfg: Config
    seed: int
    ratio: float
    counts: list[int]
    gcounts: list[int]
    gsource: str
    test_ds: Any
    probe_ds: Any


def cell_data(
    spec: StudySpec,
    data: StudyData,
    method: str,
    set_name: str,
    out_dir: Path,
    *,
    config: Config,
    progress: bool,
    seed: int,
    groups: tuple[list[int], str] | None,
) -> CellData:
    """The cell's pre-training config (a copy of the method's ``config``, built and checked once
    per study, with the cell's folder, seed and image shape), its counts, probe and test set."""
    gcounts, gsource = groups or group_counts(spec, data.num_classes)
    ratio = spec.sets[set_name]
    cfg = copy.deepcopy(config)
    cfg.run.output_dir = str(cell_dir(out_dir, method, set_name, seed) / "pretrain")
    cfg.run.seed = seed
    cfg.run.progress = progress
    channels = 1 if data.train_x.ndim == 3 else int(data.train_x.shape[-1])
    cfg.data.channels = channels
    cfg.data.image_size = int(data.train_x.shape[1])
    counts = family_counts(data.num_classes, spec.total, ratio, seed=spec.seed)
    eval_tf = build_transform("eval", cfg.data.image_size, channels)
    probe_idx = subset_by_counts(
        data.train_y, [spec.probe_per_class] * data.num_classes, seed=1000 * seed + 2
    )

    def eval_set(x: np.ndarray, y: np.ndarray) -> ArrayDataset:
        return ArrayDataset(
            x, y, transform=eval_tf, class_names=data.class_names, num_classes=data.num_classes
        )

    probe_ds = eval_set(data.train_x[probe_idx], data.train_y[probe_idx])
    test_sel = study_test_indices(spec, len(data.test_y))
    test_ds = eval_set(data.test_x[test_sel], data.test_y[test_sel])
    return CellData(cfg, seed, ratio, counts, list(gcounts), gsource, test_ds, probe_ds)


def pretrain_indices(data: StudyData, cd: CellData) -> np.ndarray:
    """Indices into the training pool of the (cell, seed)'s pre-training set (its counts, drawn
    with the seed: the trained cells and the control of the same set and seed share it)."""
    return subset_by_counts(data.train_y, cd.counts, seed=1000 * cd.seed + 1)


# ----------------------------------------------------------------------------- results


def _cell_results(
    cd: CellData,
    data: StudyData,
    spec: StudySpec,
    method: str,
    set_name: str,
    protocol: str,
    logits: np.ndarray,
    labels: np.ndarray,
    **extra: Any,
) -> dict[str, Any]:
    """The ``results.json`` dict of one evaluation of a cell (a probe or the own classifier):
    top-1, many/medium/few with the study's fixed groups, per class, provenance."""
    results = evaluate(
        logits,
        labels,
        np.asarray(cd.gcounts),
        class_names=data.class_names,
        grouping=spec.grouping,
    )
    for pc, n in zip(results["per_class"], cd.counts, strict=True):
        pc["group_count"] = pc["train_count"]
        pc["train_count"] = int(n)
    boot = bootstrap_interval(logits.argmax(1) == labels, seed=cd.seed)
    results.update(
        {
            "protocol": protocol,
            "checkpoint": str(Path(cd.cfg.run.output_dir) / "last.pth"),
            "method": method,
            "set": set_name,
            "seed": cd.seed,
            "imbalance_ratio": cd.ratio,
            "pretrain_counts": cd.counts,
            "group_counts": cd.gcounts,
            "group_source": cd.gsource,
            "probe_train_per_class": spec.probe_per_class,
            "top1_bootstrap": {"low": boot.low, "high": boot.high, "method": boot.method},
            **extra,
            "config": config_to_dict(cd.cfg),
            "provenance": provenance(
                device=extra.get("device"), seed=cd.seed, threads=torch.get_num_threads()
            ),
        }
    )
    results.pop("device", None)
    return results


def _row(results: dict[str, Any], method: str, set_name: str, seed: int) -> Row:
    return row_from_results(
        results,
        method,
        set_name,
        float(results.get("imbalance_ratio", 1.0)),
        str(results["protocol"]),
        cell=cell_name(method, set_name),
        seed=seed,
        seconds=results.get("cell_seconds"),
        top1_bootstrap=results.get("top1_bootstrap"),
    )


def _own_results(
    cd: CellData,
    data: StudyData,
    spec: StudySpec,
    method: str,
    set_name: str,
    device: Any,
) -> dict[str, Any]:
    """Evaluate the method's own classifier, loaded from the cell's checkpoint, on the test set;
    the ``own`` results dict (``cell_seconds``/``knn_seconds`` None: no cell time of its own)."""
    start = time.perf_counter()
    trained, path = load_method(
        cd.cfg, data.num_classes, device, hint="delete the cell's folder to train it again"
    )
    logits, labels = classifier_logits(trained, cd.test_ds, device)
    results = _cell_results(
        cd,
        data,
        spec,
        method,
        set_name,
        OWN_CLASSIFIER,
        logits,
        labels,
        classifier="the method's own classifier (method.classify), trained jointly",
        probe=None,
        epochs=None,
        knn_seconds=None,
        cell_seconds=None,
        own_seconds=time.perf_counter() - start,
        device=device,
    )
    results["checkpoint"] = str(path)
    return results


def probe_rows(
    cd: CellData,
    data: StudyData,
    spec: StudySpec,
    method: str,
    set_name: str,
    backbone: nn.Module,
    start: float,
    **extra: Any,
) -> list[Row]:
    """Run every probe of the study on the frozen ``backbone`` of a (cell, seed), write each
    probe's ``results.json`` (with ``extra``) and return their rows. A probe evaluates once,
    after its last epoch: no epoch is selected on the test set."""
    device = next(backbone.parameters()).device
    cdir = Path(cd.cfg.run.output_dir).parent  # the (cell, seed) folder, beside pretrain/
    rows: list[Row] = []
    for protocol, probe in spec.probes.items():  # the name labels the results; fields decide
        pcfg = replace(probe.linear_config(), seed=cd.seed)
        pcfg.eval_every = pcfg.epochs  # evaluate once, after the last epoch: no test-set selection
        res = run_probe(
            backbone, cd.probe_ds, cd.test_ds, data.num_classes, pcfg,
            protocol=probe.protocol, device=device,
        )  # fmt: skip
        results = _cell_results(
            cd,
            data,
            spec,
            method,
            set_name,
            protocol,
            res.val_logits.numpy(),
            res.val_labels.numpy(),
            probe={**pcfg.as_dict(), "protocol": probe.protocol},
            epochs=pcfg.epochs,
            **extra,
            probe_seconds=res.seconds,
            cell_seconds=time.perf_counter() - start,
            device=device,
        )
        write_results(cdir / protocol, results)
        rows.append(_row(results, method, set_name, cd.seed))
    return rows


# ----------------------------------------------------------------------------- running a cell


def run_own(
    spec: StudySpec,
    data: StudyData,
    method: str,
    set_name: str,
    out_dir: Path,
    overrides: list[str] | None = None,
    seed: int | None = None,
    groups: tuple[list[int], str] | None = None,
    device: Any = None,
    *,
    config: Config | None = None,
) -> Row:
    """Evaluate the own classifier of a finished (cell, seed) from its checkpoint (no training,
    no probe) and write ``cells/<method>__<set>/seed<s>/own``.

    Used when a finished cell lacks its ``own`` results (e.g. run by an older balfeat).

    Args:
        config: the method's pre-training config (default: :func:`cell_config` with
            ``overrides``).

    Returns:
        The ``own`` row of the results table.
    """
    s = spec.run_seeds[0] if seed is None else seed
    base = config if config is not None else cell_config(spec, method, overrides or [])
    cd = cell_data(
        spec, data, method, set_name, out_dir, config=base, progress=False, seed=s, groups=groups
    )
    dev = default_device(cd.cfg.run.device) if device is None else device
    results = _own_results(cd, data, spec, method, set_name, dev)
    write_results(cell_dir(out_dir, method, set_name, s) / OWN_CLASSIFIER, results)
    return _row(results, method, set_name, s)


def run_cell(
    spec: StudySpec,
    data: StudyData,
    method: str,
    set_name: str,
    out_dir: Path,
    overrides: list[str] | None = None,
    progress: bool = True,
    seed: int | None = None,
    groups: tuple[list[int], str] | None = None,
    *,
    config: Config | None = None,
) -> list[Row]:
    """Pre-train one method on one imbalance set with one seed, then run every probe, and for
    a method with its own classifier (``classify``: BCL, PaCo, GPaCo) evaluate that too.

    Args:
        spec: the study.
        data: its arrays.
        method: a key of ``spec.methods``.
        set_name: a key of ``spec.sets``.
        out_dir: the study's output directory.
        overrides: ``section.key=value`` pre-training overrides for this cell (used when
            ``config`` is not given).
        progress: show the trainer's progress bar.
        seed: run seed (default: the study's first seed).
        groups: ``(counts, source)`` fixing many/medium/few (default :func:`group_counts`).
        config: the method's pre-training config, built once per study (default:
            :func:`~balfeat.study.spec.cell_config` with ``overrides``).

    Returns:
        One results-table row per probe, then an ``own`` row (protocol ``"own"``: the method's
        classifier, loaded from the cell's last checkpoint, on the same test images and groups)
        when the method has one.
    """
    s = spec.run_seeds[0] if seed is None else seed
    start = time.perf_counter()
    cdir = cell_dir(out_dir, method, set_name, s)
    base = config if config is not None else cell_config(spec, method, overrides or [])
    cd = cell_data(
        spec, data, method, set_name, out_dir, config=base, progress=progress, seed=s, groups=groups
    )
    cfg = cd.cfg

    idx = pretrain_indices(data, cd)
    if len(idx) == 0:  # check_family refuses this before any cell; never train on "all data"
        raise DataError(f"set {set_name!r} holds no images; raise family.total")
    train_ds = ArrayDataset(
        data.train_x[idx],
        data.train_y[idx],
        transform=train_transform(cfg),
        class_names=data.class_names,
        num_classes=data.num_classes,
    )
    # the checkpoint's train_counts (and every message from them) name the set
    train_ds.counts_source = f"set {set_name!r} of the study"  # type: ignore[attr-defined]
    probe_ds, test_ds = cd.probe_ds, cd.test_ds
    callbacks: list[Any] = []
    if spec.knn_every > 0:  # online kNN monitor: 200 probe (memory) and 200 test images
        callbacks.append(
            knn_monitor(probe_ds, test_ds, data.num_classes, spec.knn_every, seed=1000 * s + 4)
        )
    # The cell's own folder: resume its checkpoint when there is one, else start fresh there
    # (replacing what a run that died before its first checkpoint left).
    resume = find_last_checkpoint(Path(cfg.run.output_dir)) is not None
    cfg.run.overwrite = not resume
    trainer = Trainer(cfg, train_dataset=train_ds, resume=resume, epoch_callbacks=callbacks)
    summary = trainer.fit()
    backbone = trainer.method.backbone
    if not isinstance(backbone, nn.Module):  # pragma: no cover - every method has one
        raise TypeError(f"method {method!r} has no backbone module")

    device = next(backbone.parameters()).device
    knn_seconds = sum(getattr(cb, "seconds", 0.0) for cb in callbacks)
    rows = probe_rows(
        cd, data, spec, method, set_name, backbone, start,
        pretrain_summary=summary, knn_seconds=knn_seconds,
    )  # fmt: skip
    if method_has_classifier(cfg.method.name):
        results = _own_results(cd, data, spec, method, set_name, device)
        results["pretrain_summary"] = summary
        write_results(cdir / OWN_CLASSIFIER, results)
        rows.append(_row(results, method, set_name, s))
    return rows
