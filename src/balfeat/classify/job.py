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

from balfeat.classify.linear import ProbeConfig
from balfeat.errors import ConfigError
from balfeat.typed_config import bounds, load_typed, path_kind

#: Decoupled classifiers ``decoupled`` may name.
DECOUPLED = ("crt", "tau", "lws")


@dataclass
class ProbeSettings(ProbeConfig):
    """How a probe trains: the classifier's hyper-parameters (:class:`ProbeConfig`) plus its
    protocol. One type for a ``balfeat probe`` job, its flags and a study's ``probes:`` entries;
    a probe's name is only its label, its protocol is the ``protocol`` field.

    Attributes:
        protocol: ``fast``: features extracted once, the classifier trained on the device (20x+
            faster); ``reference``: MoCo's protocol with fresh augmentations every step (numbers
            comparable to the paper).
        passes: fast protocol: augmented feature passes over the training set, epoch e trains on
            pass e mod N (5: the fewest within 1 point of the reference protocol on a trained
            backbone in benchmarks/bench_probe.py); 0 = one un-augmented pass.
        decoupled: fast protocol: also run these decoupled classifiers on the cached features,
            a subset of crt, tau, lws.
    """

    protocol: Literal["fast", "reference"] = "fast"
    passes: int = field(default=5, metadata=bounds(ge=0))
    decoupled: list[str] = field(default_factory=list, metadata={"choices": DECOUPLED})

    def check(self, where: str) -> None:
        """Relations between values (checked once, before any work), errors prefixed ``where``.

        Raises:
            ConfigError: naming the key.
        """
        ms = self.milestones
        if ms and ms != sorted(set(ms)):
            raise ConfigError(f"{where}milestones must increase, got {ms}")
        if ms and ms[-1] >= self.epochs:
            raise ConfigError(
                f"{where}milestones {ms} must lie below {where}epochs={self.epochs}; a later "
                "one would never be reached"
            )
        bad = sorted(set(self.decoupled) - set(DECOUPLED))
        if bad:
            raise ConfigError(f"{where}decoupled: unknown {bad}; choose from crt, tau, lws")
        if self.decoupled and self.protocol != "fast":
            raise ConfigError(
                f"{where}decoupled runs on cached features: use it with {where}protocol fast"
            )
        if self.protocol != "fast" and (self.loss != "ce" or self.reweight != "none"):
            raise ConfigError(
                f"{where}loss {self.loss} / {where}reweight {self.reweight} train on cached "
                f"features: use them with {where}protocol fast"
            )


@dataclass
class ProbeOptions(ProbeSettings):
    """The ``probe:`` section of a probe job: what to probe, on which data, where to write, and
    how (:class:`ProbeSettings`). Every field is also a ``balfeat probe`` flag of the same name.

    Attributes:
        checkpoint: weights to probe: a checkpoint in any format `balfeat export` reads, or a
            `balfeat pretrain` run folder (its last.pth); "" = random init (a baseline).
        backbone: architecture, e.g. resnet18, resnet50, resnet20; "" = inferred from the
            checkpoint (required without one).
        small_images: 3x3 stem without max-pool, for 28-64 px images; null = from the
            checkpoint, else on for fashion-mnist.
        dataset: fashion-mnist (embedded arrays), cifar10 / cifar100 (torchvision's folder
            layout under data_root; the balanced train and test sets) or imagenet (split files +
            image folder).
        train_imbalance_ratio: cifar10 / cifar100: train on the long-tailed subset of this
            imbalance ratio (balfeat.data.cifar_lt, the LDAM-DRW protocol, as pre-training's
            cifar10-lt / cifar100-lt) instead of the whole balanced set (TSC's CIFAR-LT second
            stage); null = the balanced set.
        data_root: fashion-mnist: folder with the IDX files ("" = search the usual places);
            cifar10/cifar100: torchvision's root (required); imagenet: root the split paths are
            relative to (required).
        train_split: imagenet: split file of the probe's training images, e.g.
            ImageNet_LT_train.txt; "" = every image under data_root.
        val_split: imagenet: split file the probe is evaluated on, e.g. ImageNet_LT_test.txt;
            "" = every image under val_root.
        val_root: imagenet: the folder val_split is relative to; "" = data_root. The
            reference's train lists are relative to ImageNet train/ and the test list to the
            ImageNet root: give data_root IMAGENET/train and val_root IMAGENET.
        group_counts: many/medium/few by these per-class counts, as the paper groups by
            PRE-TRAINING frequency: the pre-training split file ('path label' lines) or a counts
            file (one integer per line, class order); "" = the training counts the checkpoint
            carries (its pre-training set; matched by class name, else in class order), else
            the training split named in the
            checkpoint's config when it exists, else the probe's own training counts.
        train_augmentation: the probe's training augmentation: supervised (RandomResizedCrop +
            flip, MoCo's main_lincls.py) or longtail (the same + ColorJitter(0.4, 0.4, 0.4, 0):
            the TSC authors' ImageNet-LT second stage, imagenet_inat/data/dataloader.py:28-34).
        image_size: crop size; null = the dataset's own (28 for fashion-mnist, 32 for cifar)
            or 224 (imagenet).
        grouping: many/medium/few grouping: default (>100/20-100/<20), reference (20 is few),
            thirds (by count rank, for small datasets) or MANY,FEW thresholds.
        class_set: unseen-class protocol: a class-set file (set A, one class per line: a label,
            a class name or /wnid); probes A and its complement B separately; "" = off.
        device: auto, cpu, cuda or cuda:N (auto = GPU if any).
        workers: data loading workers (~8 on imagenet).
        out: output directory (created; checked writable before any work). It is locked while
            the probe runs; one that holds an earlier probe's results is refused unless force.
        force: replace the results of an earlier probe in out (results.json, per_class.csv,
            probe.pth, unseen.json, A/, B/, tensorboard/ and the evaluate/ folder made from
            them; never wandb/); off: such an out is refused.
        quiet: no progress bars and no per-epoch lines (one line per stage is still printed).
        select_on: where the best epoch, tau and the LWS/cRT epochs are chosen: val (a
            selection split carved from the training data, select_fraction per class, seeded
            by seed, never trained on; or select_split), test (on val_split, the evaluation
            list, as the reference does; labelled "selected on test (as the reference)") or
            last (nothing chosen: the last epoch, the tau sweep without a pick).
        select_split: select_on val: a split file of selection images (relative to data_root,
            e.g. ImageNet_LT_val.txt) instead of a carved one; "" = carve.
        select_fraction: select_on val: the fraction of each class's training images carved
            off to choose on (at least one per class of two or more images).
        tensorboard: the results (top1, many/medium/few, balancedness, each decoupled
            classifier's) and this job as text and hyper-parameters in out/tensorboard: auto
            (when tensorboard is installed; said once when it is not), on (an error without it)
            or off.
        wandb: a Weights & Biases project to log the same to ("" = off; pip install
            'balfeat[wandb]'; WANDB_MODE=offline keeps the run on disk under out/wandb).
    """

    checkpoint: str = field(default="", metadata=path_kind("file_or_dir"))
    backbone: str = ""
    small_images: bool | None = None
    dataset: Literal["fashion-mnist", "cifar10", "cifar100", "imagenet"] = "fashion-mnist"
    train_imbalance_ratio: float | None = field(default=None, metadata=bounds(ge=1))
    data_root: str = field(default="", metadata=path_kind("dir"))
    train_split: str = field(default="", metadata=path_kind("file"))
    val_split: str = field(default="", metadata=path_kind("file"))
    val_root: str = field(default="", metadata=path_kind("dir"))
    group_counts: str = field(default="", metadata=path_kind("file"))
    train_augmentation: Literal["supervised", "longtail"] = "supervised"
    image_size: int | None = field(default=None, metadata=bounds(ge=8))
    grouping: str = "default"
    class_set: str = field(default="", metadata=path_kind("file"))
    device: str = "auto"
    workers: int = field(default=0, metadata=bounds(ge=0))
    out: str = field(default="", metadata=path_kind("out_dir"))
    force: bool = False
    quiet: bool = False
    select_on: Literal["val", "test", "last"] = "val"
    select_split: str = field(default="", metadata=path_kind("file"))
    select_fraction: float = field(default=0.1, metadata=bounds(gt=0, lt=1))
    tensorboard: Literal["auto", "on", "off"] = "auto"
    wandb: str = ""

    def check(self, where: str) -> None:
        """:meth:`ProbeSettings.check` and the selection keys' relations.

        Raises:
            ConfigError: naming the key.
        """
        super().check(where)
        if self.select_split and self.select_on != "val":
            raise ConfigError(
                f"{where}select_split is where select_on val chooses; with {where}select_on "
                f"{self.select_on} leave it empty"
            )
        if self.select_split and self.dataset != "imagenet":
            raise ConfigError(
                f"{where}select_split is a split file of --dataset imagenet; for "
                f"{self.dataset} leave it empty (a selection split is carved from the training set)"
            )


@dataclass
class ProbeJob:
    """A probe job file: one ``probe:`` section (see :class:`ProbeOptions`)."""

    probe: ProbeOptions = field(default_factory=ProbeOptions)


def validate_probe_job(job: ProbeJob) -> None:
    """Relations between values (checked once, before any work).

    Raises:
        ConfigError: naming the key.
    """
    from balfeat.evaluation.metrics import parse_grouping

    job.probe.check("probe.")
    if job.probe.train_imbalance_ratio is not None and job.probe.dataset not in (
        "cifar10",
        "cifar100",
    ):
        raise ConfigError(
            "probe.train_imbalance_ratio makes a CIFAR-LT training set: use it with probe.dataset "
            f"cifar10 or cifar100, not {job.probe.dataset}"
        )
    try:
        parse_grouping(job.probe.grouping)
    except ValueError as err:
        raise ConfigError(f"probe.grouping: {err}") from None


def load_probe_job(paths: list[str] | None = None, overrides: list[str] | None = None) -> ProbeJob:
    """Read probe job files (each with its ``defaults:``) and ``probe.key=value`` overrides."""
    return load_typed(ProbeJob, paths or [], overrides or [], validate=validate_probe_job)
