"""``ProbeJob``: everything a linear probe (and its decoupled variants) needs, as one typed config.

Read by :func:`balfeat.typed_config.load_typed`, like pre-training configs and studies: a YAML
file with a ``probe:`` mapping (layered with ``defaults: [base.yaml]``), ``probe.key=value``
overrides, declared ranges and path kinds. ``balfeat probe --config FILE [probe.key=value ...]``
runs one; every ``balfeat probe --flag`` is a shortcut that sets the field of the same name
(``--weight-decay`` sets ``probe.weight_decay``) after the files and overrides. Example
(``configs/base/lincls.yaml`` plus a recipe)::

    defaults: [base/lincls.yaml]       # backbone resnet50, lr 30, 100 epochs, 60/80, wd 0, ...
    probe:
      checkpoint: runs/kcl_resnet50_b256-cos-200e_imagenet-lt/last.pth
      data_root: /datasets/imagenet/train      # the folder the train list is relative to
      train_split: splits/ImageNet_LT_train.txt
      val_split: splits/imagenet_longtail_val.txt
      out: runs/probe_kcl

An empty split on ``imagenet`` means every image of the root folder in the ImageFolder layout
(the reference's ``main_lincls.py`` without ``--trainset``/``--valset``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from balfeat.typed_config import bounds, load_typed, path_kind


@dataclass
class ProbeOptions:
    """The ``probe:`` section (one field per ``balfeat probe`` flag, same names).

    Attributes:
        checkpoint: weights to probe (any format ``balfeat export`` reads, or a run folder);
            ``""`` = random init (a baseline).
        backbone: architecture (``resnet50``, ``resnet20``, ...); ``""`` = from the checkpoint.
        small_images: 3x3 stem without max-pool; ``null`` = from the checkpoint / dataset.
        dataset: ``fashion-mnist`` (embedded arrays), ``cifar10`` / ``cifar100`` (the balanced
            training and test sets in torchvision's folder layout under ``data_root``; groups
            from a CIFAR-LT checkpoint's own counts) or ``imagenet`` (split files + images).
        data_root: folder the training split's paths are relative to (imagenet), or the
            Fashion-MNIST folder; ``""`` = the default location (fashion-mnist).
        train_split: the probe's training split file; ``""`` = every image under ``data_root``.
        val_split: the evaluation split file; ``""`` = every image under ``val_root``.
        val_root: the folder ``val_split`` is relative to; ``""`` = ``data_root``.
        group_counts: per-class counts fixing many/medium/few (pre-training split or counts
            file); ``""`` = the checkpoint's training split, else the probe's own counts.
        image_size: crop size; 0 = 28 (fashion-mnist) / 224 (imagenet).
        protocol: ``fast`` (cached features) or ``reference`` (MoCo's main_lincls protocol).
        passes: fast protocol: augmented feature passes, epoch e on pass e mod N (default 5,
            the fewest measured within 1 point of the reference protocol on a trained backbone;
            0 = one plain pass).
        epochs: classifier epochs (reference: 100).
        lr: learning rate (reference: 30).
        milestones: epochs where the lr drops 10x (``[]`` = 60% and 80% of epochs).
        weight_decay: weight decay (reference: 0).
        batch_size: batch size (reference: 256).
        no_bias: classifier without bias.
        balanced: class-balanced sampling of the classifier's training set.
        repeat: balanced sampling: images per picked class.
        decoupled: decoupled classifiers on the cached features: a subset of crt, tau, lws.
        grouping: many/medium/few rule (``default``, ``reference``, ``thirds``, ``MANY,FEW``).
        class_set: unseen-class protocol: class-set file of set A.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: data-loading workers.
        seed: seed of initialisation and sampling.
        out: output folder (results.json, per_class.csv, probe.pth).
        quiet: no progress bars or per-epoch lines.
    """

    checkpoint: str = field(default="", metadata=path_kind("file_or_dir"))
    backbone: str = ""
    small_images: bool | None = None
    dataset: Literal["fashion-mnist", "cifar10", "cifar100", "imagenet"] = "fashion-mnist"
    data_root: str = field(default="", metadata=path_kind("dir"))
    train_split: str = field(default="", metadata=path_kind("file"))
    val_split: str = field(default="", metadata=path_kind("file"))
    val_root: str = field(default="", metadata=path_kind("dir"))
    group_counts: str = field(default="", metadata=path_kind("file"))
    image_size: int = field(default=0, metadata=bounds(ge=0))
    protocol: Literal["fast", "reference"] = "fast"
    passes: int = field(default=5, metadata=bounds(ge=0))
    epochs: int = field(default=100, metadata=bounds(ge=1))
    lr: float = field(default=30.0, metadata=bounds(gt=0))
    milestones: list[int] = field(default_factory=list, metadata=bounds(ge=1))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
    batch_size: int = field(default=256, metadata=bounds(ge=1))
    no_bias: bool = False
    balanced: bool = False
    repeat: int = field(default=1, metadata=bounds(ge=1))
    decoupled: list[str] = field(default_factory=list)
    grouping: str = "default"
    class_set: str = field(default="", metadata=path_kind("file"))
    device: str = "auto"
    workers: int = field(default=0, metadata=bounds(ge=0))
    seed: int = field(default=0, metadata=bounds(ge=0))
    out: str = field(default="", metadata=path_kind("out_dir"))
    quiet: bool = False


@dataclass
class ProbeJob:
    """A probe job file: one ``probe:`` section (see :class:`ProbeOptions`)."""

    probe: ProbeOptions = field(default_factory=ProbeOptions)


def validate_probe_job(job: ProbeJob) -> None:
    """Relations between values (checked once, before any work).

    Raises:
        ConfigError: naming the key.
    """
    from balfeat.errors import ConfigError
    from balfeat.evaluation.metrics import parse_grouping

    p = job.probe
    if any(b <= a for a, b in zip(p.milestones, p.milestones[1:], strict=False)):
        raise ConfigError(f"probe.milestones must increase, got {p.milestones}")
    if p.milestones and p.milestones[-1] >= p.epochs:
        raise ConfigError(
            f"probe.milestones {p.milestones}: every milestone must be below probe.epochs "
            f"{p.epochs}"
        )
    bad = sorted(set(p.decoupled) - {"crt", "tau", "lws"})
    if bad:
        raise ConfigError(f"probe.decoupled: unknown {bad}; choose from crt, tau, lws")
    try:
        parse_grouping(p.grouping)
    except ValueError as err:
        raise ConfigError(f"probe.grouping: {err}") from None


def load_probe_job(paths: list[str] | None = None, overrides: list[str] | None = None) -> ProbeJob:
    """Read probe job files (each with its ``defaults:``) and ``probe.key=value`` overrides."""
    return load_typed(ProbeJob, paths or [], overrides or [], validate=validate_probe_job)
