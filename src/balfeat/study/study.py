"""Running a study: every (method x imbalance set x seed) cell pre-trained, probed and reported.

The study file is described in :mod:`balfeat.study.spec`. Cell ``(method, set)`` with seed ``s``
pre-trains with :class:`balfeat.engine.trainer.Trainer` (a library call) into
``cells/<method>__<set>/seed<s>/pretrain`` and probes the frozen backbone on a *balanced* training
set, evaluating on the test set; each probe writes ``results.json`` (with the provenance of the
run) and ``per_class.csv`` into ``cells/<method>__<set>/seed<s>/<probe>``. A (cell, seed) whose
results exist is skipped, and an interrupted pre-training resumes from its last checkpoint, so a
study can be re-run after a crash, or extended with more methods, sets, probes or seeds (only the
new cells run; a cell whose configuration changed is refused, naming it). The probe selects no
epoch on the test set: it evaluates once, after the last epoch.

**Own classifier.** A method that trains a classifier jointly (``classify(images) -> logits``:
BCL, PaCo, GPaCo) also gets a row with protocol ``own``: that classifier, loaded from the cell's
last checkpoint, on the same test images with the same metrics and groups, written to
``…/seed<s>/own/results.json`` beside the probes' folders, so the two sit side by side in the
results table and the report. A finished cell without it (run by an older balfeat) gets it on
the next run from its checkpoint, without training or probing again. ``own`` is therefore not
a valid probe name.

Pre-training sets of one family have the same number of images (``family.total``): the
exponential profile ``n_c = n_max * ratio^(-c/(C-1))`` is scaled so the counts sum to ``total``
(the largest ``n_max`` whose counts fit), the balanced set has ``total / C`` per class. Which
class gets which count is a permutation seeded by the study's ``seed``, the same for every ratio
and every run seed.

**Groups.** Many/medium/few are fixed once per study — by the counts of the most imbalanced set
of the family (or the ``groups:`` counts file) — and used for every row, balanced sets included,
so "few" names the same classes in every row. The balancedness slope is taken against the same
counts.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from balfeat.data.prepare import subset_by_counts
from balfeat.data.splits import read_class_counts
from balfeat.errors import ConfigError, DataError
from balfeat.study.spec import StudySpec, load_study, study_from_mapping
from balfeat.typed_config import to_dict

__all__ = ["StudySpec", "load_study", "run_study", "study_from_mapping", "subset_by_counts"]

log = logging.getLogger("balfeat.study")

Row = dict[str, Any]


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
        from balfeat.data.prepare import synthetic_arrays

        c = int(spec.base.get("data", {}).get("num_classes", 10))
        n = max(spec.synthetic_size, 1)
        tx, ty = synthetic_arrays(n, c, spec.image_size, 1, spec.seed)
        vx, vy = synthetic_arrays(max(n // 4, c), c, spec.image_size, 1, spec.seed + 1)
        return StudyData(tx, ty, vx, vy, [f"class{i}" for i in range(c)])
    if not spec.root:
        raise ConfigError(
            "study dataset 'array' needs root: FILE.npz (train_x/train_y/test_x/test_y)"
        )
    from balfeat.data.sources import load_npz_arrays

    a = load_npz_arrays(spec.root, (("train_x", "train_y"), ("test_x", "test_y")))
    tx, ty, vx, vy = a["train_x"], a["train_y"], a["test_x"], a["test_y"]
    if not len(ty) or not len(vy):
        raise DataError(f"{spec.root}: train_y and test_y must not be empty")
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


# ----------------------------------------------------------------------------- cells


def cell_name(method: str, set_name: str) -> str:
    """Directory name of a cell: ``<method>__<set>``."""
    return f"{method}__{set_name}"


def cell_dir(out_dir: Path, method: str, set_name: str, seed: int) -> Path:
    """Directory of one (cell, seed): ``cells/<method>__<set>/seed<seed>``."""
    return out_dir / "cells" / cell_name(method, set_name) / f"seed{seed}"


def cell_done(
    out_dir: Path, method: str, set_name: str, probes: Mapping[str, Any], seed: int = 0
) -> bool:
    """Whether every probe of the (cell, seed) has written its ``results.json``."""
    cdir = cell_dir(out_dir, method, set_name, seed)
    return all((cdir / p / "results.json").is_file() for p in probes)


def _read_row(out_dir: Path, method: str, set_name: str, seed: int, protocol: str) -> Row:
    path = cell_dir(out_dir, method, set_name, seed) / protocol / "results.json"
    results = json.loads(path.read_text())
    results.setdefault("protocol", protocol)
    return _row(results, method, set_name, seed)


def own_missing(out_dir: Path, method: str, set_name: str, seed: int, method_name: str) -> bool:
    """Whether a (cell, seed) of a method with its own classifier lacks its ``own`` results
    while its checkpoint is there to evaluate it from (a cell finished by an older balfeat)."""
    from balfeat.engine.checkpoint import find_last_checkpoint

    cdir = cell_dir(out_dir, method, set_name, seed)
    return (
        method_has_classifier(method_name)
        and not (cdir / OWN_CLASSIFIER / "results.json").is_file()
        and find_last_checkpoint(cdir / "pretrain") is not None
    )


def _eval_transform(image_size: int, channels: int) -> Any:
    """The transform of probe/test images: resize if needed, to tensor, normalise."""
    from balfeat.data import transforms

    return transforms.build_transform("eval", image_size, channels)


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


def check_family(spec: StudySpec, data: StudyData) -> None:
    """Refuse, before any training, a family that leaves a class or a whole set without images,
    whose whole-image counts cannot reach the imbalance ratio asked for (more than 2x off), or
    that asks for more images of a class than the training pool holds.

    Raises:
        DataError: naming the set, the class and what to change.
    """
    pool = np.bincount(data.train_y, minlength=data.num_classes)
    for name, ratio in spec.sets.items():
        counts = family_counts(data.num_classes, spec.total, ratio, seed=spec.seed)
        empty = [c for c, n in enumerate(counts) if n < 1]
        if empty:
            raise DataError(
                f"family.total={spec.total} leaves {len(empty)} class(es) of set {name!r} "
                f"without images (e.g. class {empty[0]} {data.class_names[empty[0]]!r}); a set "
                f"needs at least {data.num_classes} images (one per class) — raise family.total"
            )
        real = max(counts) / max(min(counts), 1)
        if ratio > 1 and not 0.5 <= real / ratio <= 2.0:  # rounding to whole images aside
            raise DataError(
                f"family.sets.{name} asks for imbalance ratio {ratio:g}, but "
                f"family.total={spec.total} images over {data.num_classes} classes give "
                f"{real:.4g} (the tail classes cannot go below 1 image); lower the ratio or "
                "raise family.total"
            )
        short = [c for c, n in enumerate(counts) if n > pool[c]]
        if short:
            c = short[0]
            raise DataError(
                f"set {name!r} needs {counts[c]} images of class {c} "
                f"({data.class_names[c]!r}) but the training pool holds {pool[c]}; lower "
                "family.total"
            )
    short = [c for c in range(data.num_classes) if pool[c] < spec.probe_per_class]
    if short:
        raise DataError(
            f"probe_per_class={spec.probe_per_class} but class {short[0]} has only "
            f"{pool[short[0]]} training images; lower probe_per_class"
        )


#: Protocol name of the rows of a method's own classifier (``classify``), beside the probes.
OWN_CLASSIFIER = "own"


def method_has_classifier(name: str) -> bool:
    """Whether the registered method ``name`` has its own classifier (``classify(images)``), as
    its registry entry says (read without building anything: building TSC, say, optimises its
    class targets).
    """
    from balfeat.methods import get_method

    return get_method(name).has_classifier


def classifier_logits(
    method: Any, dataset: Any, device: Any, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """A method's own classifier on every image of ``dataset``, in eval mode.

    Args:
        method: a module with ``classify(images (B, C, H, W)) -> logits (B, num_classes)``.
        dataset: yields ``(image (C, H, W), label)``.
        device: where the method lives.
        batch_size: images per forward.

    Returns:
        ``(logits (N, num_classes) float32, labels (N,) int64)`` in dataset order.
    """
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    was_training = bool(method.training)
    method.eval()
    out: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for x, y in loader:
                out.append(method.classify(x.to(device)).float().cpu())
                labels.append(torch.as_tensor(y))
    finally:
        method.train(was_training)
    return torch.cat(out).numpy(), torch.cat(labels).numpy().astype(np.int64)


def load_trained_method(cfg: Any, num_classes: int, device: Any) -> tuple[Any, Path]:
    """The method of ``cfg`` with the weights of the last checkpoint in ``cfg.run.output_dir``.

    Returns:
        ``(method in eval mode on device, checkpoint path)``.

    Raises:
        CheckpointError: no checkpoint there, or one of another method or backbone.
    """
    from balfeat.engine import build
    from balfeat.engine.checkpoint import find_last_checkpoint, load_checkpoint
    from balfeat.errors import CheckpointError

    path = find_last_checkpoint(Path(cfg.run.output_dir))
    if path is None:
        raise CheckpointError(
            f"no checkpoint in {cfg.run.output_dir!r} to evaluate the method's own classifier "
            "from; delete the cell's folder to train it again"
        )
    state = load_checkpoint(
        path,
        map_location="cpu",
        expect_method=cfg.method.name,
        expect_backbone=cfg.model.backbone,
    )
    method = build.build_method(cfg, num_classes)
    method.load_state_dict(state["model"])
    return method.to(device).eval(), path


@dataclass
class _CellData:
    """What every evaluation of one (cell, seed) shares: its config, sets and groups."""

    cfg: Any
    seed: int
    ratio: float
    counts: list[int]
    gcounts: list[int]
    gsource: str
    test_ds: Any
    probe_ds: Any
    eval_tf: Any


def _cell_data(
    spec: StudySpec,
    data: StudyData,
    method: str,
    set_name: str,
    out_dir: Path,
    overrides: list[str] | None,
    progress: bool,
    seed: int,
    groups: tuple[list[int], str] | None,
) -> _CellData:
    """The resolved pre-training config, the counts, the probe and the test set of a cell."""
    from balfeat.data.datasets import ArrayDataset
    from balfeat.engine.config import validate
    from balfeat.study.spec import cell_config

    gcounts, gsource = groups or group_counts(spec, data.num_classes)
    ratio = spec.sets[set_name]
    cdir = cell_dir(out_dir, method, set_name, seed)
    cfg = cell_config(spec, method, overrides or [])
    cfg.run.output_dir = str(cdir / "pretrain")
    cfg.run.seed = seed
    cfg.run.progress = progress
    channels = 1 if data.train_x.ndim == 3 else int(data.train_x.shape[-1])
    cfg.data.channels = channels
    cfg.data.image_size = int(data.train_x.shape[1])
    validate(cfg)
    counts = family_counts(data.num_classes, spec.total, ratio, seed=spec.seed)
    eval_tf = _eval_transform(cfg.data.image_size, channels)
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
    return _CellData(cfg, seed, ratio, counts, list(gcounts), gsource, test_ds, probe_ds, eval_tf)


def study_test_indices(spec: StudySpec, n: int) -> np.ndarray:
    """Indices of the study's test images among the ``n`` of the test split: all of them, or
    ``test_max`` drawn once with the study's seed (the same for every cell and seed)."""
    sel = np.arange(n)
    if spec.test_max and spec.test_max < n:
        sel = np.sort(np.random.default_rng(spec.seed + 3).choice(n, spec.test_max, replace=False))
    return sel


def _cell_results(
    cd: _CellData,
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
    import torch

    from balfeat.engine.config import config_to_dict
    from balfeat.evaluation.metrics import evaluate
    from balfeat.evaluation.statistics import bootstrap_interval
    from balfeat.provenance import provenance

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
    from balfeat.study.report import row_from_results

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
    cd: _CellData,
    data: StudyData,
    spec: StudySpec,
    method: str,
    set_name: str,
    device: Any,
) -> dict[str, Any]:
    """Evaluate the method's own classifier, loaded from the cell's checkpoint, on the test set;
    the ``own`` results dict (``cell_seconds``/``knn_seconds`` None: no cell time of its own)."""
    start = time.perf_counter()
    trained, path = load_trained_method(cd.cfg, data.num_classes, device)
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
) -> Row:
    """Evaluate the own classifier of a finished (cell, seed) from its checkpoint (no training,
    no probe) and write ``cells/<method>__<set>/seed<s>/own``.

    Used when a finished cell lacks its ``own`` results (e.g. run by an older balfeat).

    Returns:
        The ``own`` row of the results table.
    """
    from balfeat.device import default_device
    from balfeat.evaluation.metrics import write_results

    s = spec.run_seeds[0] if seed is None else seed
    cd = _cell_data(spec, data, method, set_name, out_dir, overrides, False, s, groups)
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
) -> list[Row]:
    """Pre-train one method on one imbalance set with one seed, then run every probe, and for
    a method with its own classifier (``classify``: BCL, PaCo, GPaCo) evaluate that too.

    Args:
        spec: the study.
        data: its arrays.
        method: a key of ``spec.methods``.
        set_name: a key of ``spec.sets``.
        out_dir: the study's output directory.
        overrides: ``section.key=value`` pre-training overrides for this cell.
        progress: show the trainer's progress bar.
        seed: run seed (default: the study's first seed).
        groups: ``(counts, source)`` fixing many/medium/few (default :func:`group_counts`).

    Returns:
        One results-table row per probe, then an ``own`` row (protocol ``"own"``: the method's
        classifier, loaded from the cell's last checkpoint, on the same test images and groups)
        when the method has one.
    """
    from torch import nn

    from balfeat.classify.probe import run_probe
    from balfeat.data.datasets import ArrayDataset
    from balfeat.engine import build
    from balfeat.engine.checkpoint import find_last_checkpoint
    from balfeat.engine.trainer import Trainer
    from balfeat.evaluation.metrics import write_results

    s = spec.run_seeds[0] if seed is None else seed
    start = time.perf_counter()
    cdir = cell_dir(out_dir, method, set_name, s)
    cd = _cell_data(spec, data, method, set_name, out_dir, overrides, progress, s, groups)
    cfg = cd.cfg

    idx = subset_by_counts(data.train_y, cd.counts, seed=1000 * s + 1)
    if len(idx) == 0:  # check_family refuses this before any cell; never train on "all data"
        raise DataError(f"set {set_name!r} holds no images; raise family.total")
    train_ds = ArrayDataset(
        data.train_x[idx],
        data.train_y[idx],
        transform=build.build_transform(cfg),
        class_names=data.class_names,
        num_classes=data.num_classes,
    )
    probe_ds, test_ds = cd.probe_ds, cd.test_ds
    callbacks: list[Any] = []
    if spec.knn_every > 0:  # online kNN monitor: 200 probe (memory) and 200 test images
        from torch.utils.data import Subset

        from balfeat.evaluation.knn import KNNMonitor

        kx = np.random.default_rng(1000 * s + 4)
        mem = Subset(probe_ds, sorted(kx.permutation(len(probe_ds))[:200].tolist()))
        qry = Subset(test_ds, sorted(kx.permutation(len(test_ds))[:200].tolist()))
        callbacks.append(KNNMonitor(mem, qry, data.num_classes, every=spec.knn_every))
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
    rows: list[Row] = []
    for protocol, probe in spec.probes.items():  # the name labels the results; fields decide
        pcfg = replace(probe.linear_config(), seed=s)
        pcfg.eval_every = pcfg.epochs  # evaluate once, after the last epoch: no test-set selection
        res = run_probe(
            backbone, probe_ds, test_ds, data.num_classes, pcfg,
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
            pretrain_summary=summary,
            knn_seconds=knn_seconds,
            probe_seconds=res.seconds,
            cell_seconds=time.perf_counter() - start,
            device=device,
        )
        write_results(cdir / protocol, results)
        rows.append(_row(results, method, set_name, s))
    if method_has_classifier(method):
        results = _own_results(cd, data, spec, method, set_name, device)
        results["pretrain_summary"] = summary
        write_results(cdir / OWN_CLASSIFIER, results)
        rows.append(_row(results, method, set_name, s))
    return rows


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
    from balfeat.engine.config import config_from_dict, config_to_dict
    from balfeat.errors import BalfeatError

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


def run_study(
    spec: StudySpec,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    data: StudyData | None = None,
) -> tuple[list[Row], dict[str, Path]]:
    """Run every (cell, seed) of a study that is not finished yet, then write the report.

    Args:
        spec: the study.
        out_dir: output directory (default ``spec.output_dir``).
        overrides: ``section.key=value`` pre-training overrides applied to every cell.
        progress: show progress bars.
        echo: where status lines go.
        data: the arrays (default: :func:`load_study_data`).

    Returns:
        The results table (one row per cell, seed and probe, plus an ``own`` row per (cell,
        seed) of a method with its own classifier) and the report's paths (see
        :func:`balfeat.study.report.write_report`).
    """
    from balfeat.atomic import atomic_write_text
    from balfeat.engine.config import config_to_dict
    from balfeat.study.report import write_report
    from balfeat.study.spec import cell_config

    out = Path(out_dir or spec.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {str(out)!r} is a file; choose a directory")
    _check_reuse(out, spec)
    if OWN_CLASSIFIER in spec.probes:
        raise ConfigError(
            f"probe name {OWN_CLASSIFIER!r} is reserved for the rows of a method's own "
            "classifier (BCL, PaCo, GPaCo); rename probes.own"
        )
    seeds = spec.run_seeds
    cells = [(m, s, seed) for s in spec.sets for m in spec.methods for seed in seeds]
    todo = [c for c in cells if not cell_done(out, c[0], c[1], spec.probes, c[2])]
    method_names = {m: cell_config(spec, m, overrides or []).method.name for m in spec.methods}
    own_todo = [
        c for c in cells if c not in todo and own_missing(out, c[0], c[1], c[2], method_names[c[0]])
    ]
    if (todo or own_todo) and data is None:
        data = load_study_data(spec)
    if data is not None:
        check_family(spec, data)
        groups = group_counts(spec, data.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"global": _global_dict(spec), "overrides": list(overrides or [])}
    atomic_write_text(out / "study.yaml", yaml.safe_dump(saved, sort_keys=False))
    rows: list[Row] = []
    t0 = time.perf_counter()
    for i, (m, s, seed) in enumerate(cells, 1):
        cdir = cell_dir(out, m, s, seed)
        record = {
            "config": config_to_dict(cell_config(spec, m, overrides or [])),
            "probes": {p: to_dict(probe) for p, probe in spec.probes.items()},
        }
        added = _check_cell(cdir, record, m, s)
        if (m, s, seed) not in todo:
            echo(f"[{i}/{len(cells)}] {m} on {s}, seed {seed}: done before, skipped")
            if added:
                echo(
                    f"  note: {str(cdir)!r} was written by an earlier balfeat that did not have "
                    f"{', '.join(added)} (read with these defaults now); its results are kept: "
                    "delete that folder to re-run it with this version"
                )
            rows += [_read_row(out, m, s, seed, p) for p in spec.probes]
            if (m, s, seed) in own_todo:  # finished before the own classifier was evaluated
                assert data is not None
                echo("    evaluating its own classifier from the cell's checkpoint")
                own = run_own(spec, data, m, s, out, overrides, seed=seed, groups=groups)
                echo(_result_line(own))
                rows.append(own)
            elif (cdir / OWN_CLASSIFIER / "results.json").is_file():
                rows.append(_read_row(out, m, s, seed, OWN_CLASSIFIER))
            continue
        elapsed = time.perf_counter() - t0
        echo(
            f"[{i}/{len(cells)}] {m} on {s} (ratio {spec.sets[s]:g}), seed {seed} ... "
            f"({elapsed:.0f} s so far)"
        )
        assert data is not None
        cdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cdir / "cell.yaml", yaml.safe_dump(record, sort_keys=False))
        cell_rows = run_cell(spec, data, m, s, out, overrides, progress, seed=seed, groups=groups)
        for r in cell_rows:
            echo(_result_line(r))
        rows += cell_rows
    names = data.class_names if data is not None else None
    paths = write_report(
        rows,
        out,
        title=spec.name,
        description=spec.description,
        class_names=names,
        published=spec.published,
    )
    return rows, paths


def _result_line(r: Row) -> str:
    what = "own classifier" if r["protocol"] == OWN_CLASSIFIER else f"{r['protocol']} probe"
    return (
        f"    {what}: top1 {_f(r['top1'])}  many {_f(r['many'])}  medium {_f(r['medium'])}  "
        f"few {_f(r['few'])}"
    )


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op CPU threads for a study run and return the number used.

    Args:
        threads: ``N > 0`` uses N threads; ``0`` (auto) uses every core, or 1 thread when the
            machine is already busy (1-minute load average >= cores): on a contended CPU,
            several OpenMP threads per process spin against each other and run 2-3x slower
            than one. The number used is recorded in every results file (results on CPU depend
            on it).
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
