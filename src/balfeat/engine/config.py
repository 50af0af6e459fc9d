"""Typed configuration of a pre-training run: YAML files plus ``key=value`` overrides.

A config is a tree of dataclasses (:class:`Config` with sections ``data``, ``model``, ``method``,
``optim``, ``run``). It is read from zero or more YAML files (later files override earlier ones)
and then from ``section.key=value`` overrides as given on the command line, e.g.
``optim.base_lr=0.03 method.name=kcl data.dataset=fashion-mnist``. Override values are parsed with
``yaml.safe_load`` (so ``[30, 40]`` is a list and ``true`` a bool) and every value is checked
against the field's declared type. An unknown key raises :class:`~balfeat.errors.ConfigError`
naming the key, where it came from and the closest valid key; a value of the wrong type names the
key, the expected type and what was given.

The resolved config is a plain dict via :func:`config_to_dict` (saved as ``config.yaml`` in the
output directory and inside every checkpoint) and is read back with :func:`config_from_dict`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from balfeat import typed_config
from balfeat.errors import ConfigError
from balfeat.methods.params import MethodParams
from balfeat.typed_config import bounds, path_kind, variant

DatasetName = Literal[
    "fashion-mnist", "imagenet", "inat", "array", "synthetic", "cifar10-lt", "cifar100-lt"
]
AugmentationName = Literal[
    "moco_v1", "moco_v2", "supervised", "longtail", "eval", "none",
    "randcls", "randclsstack", "paco_sim", "bcl_sim", "cifar_autoaug_cutout",
    "paco_randcls_sim", "gpaco_randcls_randclsstack", "bcl_randcls_sim", "paco_cifar_autoaug_sim",
]  # fmt: skip


@dataclass
class DataConfig:
    """Which images to train on and how to feed them.

    Attributes:
        dataset: ``fashion-mnist`` (the embedded/torchvision Fashion-MNIST files under ``root``),
            ``imagenet`` / ``inat`` (split files of ``path label`` lines, images under ``root``),
            ``array`` (an ``.npz`` file at ``root`` with ``images`` (N,H,W[,C]) uint8 and
            ``labels`` (N,)), ``synthetic`` (random images, for tests and benchmarks) or
            ``cifar10-lt`` / ``cifar100-lt`` (CIFAR in torchvision's folder layout under ``root``,
            made long-tailed by the common protocol, ``balfeat.data.cifar_lt``, with ratio
            ``imbalance_ratio``: 100, 50 or 10 in the papers).
        root: data directory (or ``.npz`` file for ``array``); ``""`` = the default location.
        train_split: split file for training (imagenet/inat), ``""`` = none.
        val_split: split file for validation, ``""`` = none (read by ``run.keep_best``; an
            image folder's split, relative to ``val_root``).
        val_root: imagenet/inat: the folder ``val_split`` is relative to, ``""`` = ``root``; with
            an empty ``val_split``, every image under it (e.g. the ImageNet ``val/`` folder, as
            the reference without ``--valset``), restricted to ``class_set``.
        test_split: split file for testing, ``""`` = none.
        class_set: class-set file restricting the classes, ``""`` = all classes.
        image_size: side of the square crops fed to the network.
        channels: image channels (1 for Fashion-MNIST, 3 for RGB).
        augmentation: transform name for ``balfeat.data.transforms.build_transform``
            (``none`` = ``eval``: resize + normalise only).
        balanced: sample classes uniformly (``ClassBalancedSampler``) instead of images.
        repeat: images taken per class draw by the balanced sampler.
        num_workers: DataLoader worker processes per rank (0 = load in the main process).
        imbalance_ratio: Fashion-MNIST/synthetic/array imbalance: n_max / n_min of the
            exponential profile ``balfeat.data.imbalance.exponential_profile`` (1 = balanced).
        per_class: images per class before the imbalance profile (0 = all available).
        max_samples: cap on training images after everything else (0 = no cap; smoke tests).
        num_classes: classes of the ``synthetic`` dataset.
        synthetic_size: images of the ``synthetic`` dataset.
        skip_bad_images: imagenet/inat: skip missing or unreadable images (listed in the log and
            the run summary at the end) instead of stopping with an error naming the first one.
            Missing files are found before training; unreadable ones when loaded, and are listed
            at the end only with ``num_workers=0`` (worker processes keep their own list).
        loader: how batches are made. ``device``: the whole uint8 array stays on the training
            device and every sample is augmented there with batched tensor ops
            (``balfeat.data.device_data``; in-memory datasets only: fashion-mnist, synthetic,
            array); ``pil``: a DataLoader with PIL transforms per image (image folders, or to
            compare); ``auto`` (default): ``device`` for in-memory datasets, ``pil`` otherwise.
        decode: how image-folder datasets (imagenet, inat) decode their files
            (``balfeat.data.decode``). ``pil`` (default): PIL + the PIL transforms in DataLoader
            workers; ``cpu``: ``torchvision.io.decode_jpeg`` + the same recipe on uint8 tensors,
            in the workers (faster per core); ``gpu``: the workers only read the files, a batch
            is decoded by nvJPEG on the GPU and augmented there (frees the CPU cores; falls back
            to ``cpu`` with a warning without a CUDA training device). In-memory datasets
            ignore it.
    """

    dataset: DatasetName = "fashion-mnist"
    root: str = field(default="", metadata=path_kind("file_or_dir"))
    train_split: str = field(default="", metadata=path_kind("file"))
    val_split: str = field(default="", metadata=path_kind("file"))
    val_root: str = field(default="", metadata=path_kind("dir"))
    test_split: str = field(default="", metadata=path_kind("file"))
    class_set: str = field(default="", metadata=path_kind("file"))
    image_size: int = field(default=28, metadata=bounds(ge=1))
    channels: int = field(default=1, metadata=bounds(ge=1, le=3))
    augmentation: AugmentationName = "moco_v2"
    balanced: bool = False
    repeat: int = field(default=1, metadata=bounds(ge=1))
    num_workers: int = field(default=0, metadata=bounds(ge=0))
    imbalance_ratio: float = field(default=1.0, metadata=bounds(ge=1.0))
    per_class: int = field(default=0, metadata=bounds(ge=0))
    max_samples: int = field(default=0, metadata=bounds(ge=0))
    num_classes: int = field(default=10, metadata=bounds(ge=1))
    synthetic_size: int = field(default=512, metadata=bounds(ge=1))
    skip_bad_images: bool = False
    loader: Literal["auto", "pil", "device"] = "auto"
    decode: Literal["pil", "cpu", "gpu"] = "pil"


@dataclass
class ModelConfig:
    """The backbone.

    Attributes:
        backbone: ``build_backbone`` name (``resnet18``, ``resnet50``, ``resnet20``, ...).
        small_images: 3x3 stem without max-pool, for 28-32 px images.
        in_channels: input channels; 0 = take ``data.channels``.
        init_checkpoint: checkpoint to initialise the backbone from, ``""`` = random init.
        init_classifier: with ``init_checkpoint``, also start SL's classifier from the
            checkpoint's (``head.*``, or the reference's ``fc.*``), as BalFeat's ``main_sl.py
            --pretrained`` (``main_sl.py:101-118``); False: a fresh classifier.
    """

    backbone: str = "resnet18"
    small_images: bool = True
    in_channels: int = field(default=0, metadata=bounds(ge=0, le=3))
    init_checkpoint: str = field(default="", metadata=path_kind("file_or_dir"))
    init_classifier: bool = False


def _method_section(name: str) -> MethodParams:
    from balfeat.methods import method_params

    return method_params(name)


def _method_sections() -> dict[str, type]:
    from balfeat.methods import METHODS, method_names

    return {n: METHODS[n].params for n in method_names()}


def _default_method() -> MethodParams:
    return _method_section("moco_v2")


@dataclass
class OptimConfig:
    """SGD and its learning-rate schedule.

    Attributes:
        epochs: passes over the training set.
        batch_size: GLOBAL batch over all ranks (each rank gets ``batch_size / world_size``).
        base_lr: learning rate for a global batch of 256; the run uses
            ``lr = base_lr * batch_size / 256`` (logged at start).
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        schedule: ``cosine`` (half-cosine to 0 over ``epochs``) or ``step`` (x0.1 at each
            milestone), both updated once per epoch as in the reference code.
        milestones: epochs of the ``step`` schedule.
        gamma: factor of the ``step`` schedule at each milestone (reference: 0.1).
        warmup_epochs: linear warm-up epochs before the schedule (0 = none).
        cosine_form: ``moco`` (``cos(pi * epoch / epochs)``, the reference's) or ``shifted``
            (``cos(pi * (epoch - warmup + 1) / (epochs - warmup + 1))``, PaCo / GPaCo / BCL's
            ``adjust_learning_rate``); see :mod:`balfeat.schedules`.
        warmup_inclusive: the warm-up also sets epoch ``warmup_epochs`` (PaCo CIFAR's
            ``epoch <= warmup_epochs``: that epoch runs at ``(warmup + 1) / warmup`` of the rate).
    """

    epochs: int = field(default=200, metadata=bounds(ge=1))
    batch_size: int = field(default=256, metadata=bounds(ge=1))
    base_lr: float = field(default=0.03, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=1e-4, metadata=bounds(ge=0))
    schedule: Literal["cosine", "step"] = "cosine"
    milestones: list[int] = field(default_factory=lambda: [120, 160], metadata=bounds(ge=1))
    gamma: float = field(default=0.1, metadata=bounds(gt=0, le=1))
    warmup_epochs: int = field(default=0, metadata=bounds(ge=0))
    cosine_form: Literal["moco", "shifted"] = "moco"
    warmup_inclusive: bool = False

    def scaled_lr(self) -> float:
        """The learning rate actually used: ``base_lr * batch_size / 256``."""
        return self.base_lr * self.batch_size / 256


@dataclass
class RunConfig:
    """Where and how the run executes.

    Attributes:
        output_dir: directory for checkpoints, ``config.yaml`` and ``metrics.jsonl``.
        seed: seed of every random generator (model init, sampler, augmentation).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        precision: ``fp32``; ``bf16`` (autocast to bfloat16 on CPU and GPU: the same code
            path on both); ``fp16`` (autocast to float16 with a gradient scaler, GPU only: float32
            with a warning on CPU).
        keep_last: checkpoints kept (older ``checkpoint_NNNN.pth`` are deleted; ``last.pth``
            always points at the newest).
        log_every: steps between metrics lines.
        max_steps: stop after this many optimiser steps in total (0 = run all epochs).
        save_every_steps: also checkpoint every N steps within an epoch (0 = once per epoch).
        compile: ``torch.compile`` the method.
        channels_last: channels-last memory format (faster convolutions on GPUs).
        detect_anomaly: ``torch.autograd.detect_anomaly`` (slow; for debugging NaNs).
        timeout_s: collective timeout of torch.distributed: a failed rank makes the others exit
            within this time.
        progress: show a tqdm progress bar on rank 0.
        overwrite: replace a finished or different run found in ``output_dir`` (its checkpoints
            and metrics are deleted first). Without it, a folder holding a run is refused unless
            the run is resumed (``--resume``).
        tensorboard: TensorBoard event files in ``output_dir/tensorboard``: ``auto`` (when the
            ``tensorboard`` package is installed; ``pip install 'balfeat[tensorboard]'``),
            ``on`` (an error without the package) or ``off``. It holds the losses, lr and
            throughput, the kNN monitor and the resolved config (as text and hyper-parameters);
            ``auto`` says once when it finds no package.
        wandb: a Weights & Biases project to log the same to (``pip install 'balfeat[wandb]'``;
            files under ``output_dir/wandb``; ``WANDB_MODE=offline`` keeps them on disk; a
            resumed run is a new W&B run); ``""`` (default) = off.
        knn_every: epochs between online kNN evaluations (k = 20, cosine, T = 0.07) on two
            held-out class-balanced subsets (about 200 images each) of the dataset's test
            images (image folders: ``data.val_split`` / ``data.val_root``, else
            ``data.test_split``), as a study's ``knn_every``: logged as ``knn_top1`` in
            ``metrics.jsonl`` and the trackers. 0 (default) = off; each evaluation costs two
            feature passes over those images.
        keep_best: validate the method's classifier (SL, PaCo, GPaCo, BCL) on ``data.val_split``
            / ``data.val_root`` after every epoch and copy the checkpoint of the best top-1 to
            ``best.pth`` (``best.json`` holds its epoch and accuracy), as BalFeat's
            ``main_sl.py:240-255`` (``helper.py:246-251`` writes ``NAME.pth.tar`` only when the
            accuracy improved). Image-folder datasets (imagenet, inat) only; elsewhere a warning.
        sync_bn: under torchrun, the BatchNorm layers of the trained encoder normalise with the
            statistics of the global batch (:class:`balfeat.models.batchnorm.GlobalBatchNorm2d`,
            gloo and NCCL alike), so N processes compute what one process does with the same
            global batch. Default ``false``: per-GPU statistics, as the reference code (MoCo,
            KCL, PaCo) trains. The momentum key encoder of MoCo/KCL keeps its shuffle-BN
            (per-rank statistics of a shuffled slice: that is its purpose). No effect in one
            process.
    """

    output_dir: str = field(default="runs/pretrain", metadata=path_kind("out_dir"))
    seed: int = field(default=0, metadata=bounds(ge=0))
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    keep_last: int = field(default=3, metadata=bounds(ge=1))
    log_every: int = field(default=10, metadata=bounds(ge=1))
    max_steps: int = field(default=0, metadata=bounds(ge=0))
    save_every_steps: int = field(default=0, metadata=bounds(ge=0))
    compile: bool = False
    channels_last: bool = False
    detect_anomaly: bool = False
    timeout_s: float = field(default=600.0, metadata=bounds(gt=0))
    progress: bool = True
    overwrite: bool = False
    tensorboard: Literal["auto", "on", "off"] = "auto"
    wandb: str = ""
    knn_every: int = field(default=0, metadata=bounds(ge=0))
    keep_best: bool = False
    sync_bn: bool = False


@dataclass
class Config:
    """The whole configuration of ``balfeat pretrain``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: the registered method's own parameter dataclass, selected by ``method.name``
    #: (``balfeat.methods.params``; ``method.posk`` exists only for methods that have it).
    method: MethodParams = field(
        default_factory=_default_method,
        metadata=variant("name", _method_section, _method_sections),
    )
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def merge_mapping(cfg: Config, mapping: Mapping[str, Any], source: str) -> Config:
    """Apply a nested mapping (as read from YAML) onto ``cfg`` in place and return it."""
    return typed_config.merge_mapping(cfg, mapping, source)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply ``section.key=value`` strings onto ``cfg`` in place and return it."""
    return typed_config.apply_overrides(cfg, overrides)


def overrides_for(method: str, overrides: Sequence[str]) -> list[str]:
    """The ``overrides`` that apply to the registered method ``method``.

    Every override outside the ``method`` section applies; a ``method.KEY=value`` one applies when
    the method's own section has KEY (``method.K=4096`` configures MoCo and KCL cells and is
    skipped for SL, which has no queue). For one list of overrides that configures several
    methods (a study's cells). ``method.name`` overrides are never skipped.
    """
    from balfeat.methods import method_params

    own = {f.name for f in dataclasses.fields(method_params(method))}
    out = []
    for item in overrides:
        key = typed_config.parse_override(item)[0]
        section, _, rest = key.partition(".")
        if section != "method" or not rest or rest.split(".")[0] in own:
            out.append(item)
    return out


def load_config(
    paths: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Build a :class:`Config` from defaults, YAML files (in order, each with its ``defaults:``
    list first) and overrides.

    Raises:
        ConfigError: a file is missing or unparsable, a key is unknown, a value mistyped.
    """
    return typed_config.load_typed(Config, paths, overrides, validate=validate)


def validate(cfg: Config) -> None:
    """Check relations between values that types alone cannot express."""
    from balfeat.data import catalog
    from balfeat.methods import get_method

    get_method(cfg.method.name)  # unknown name: ConfigError naming the closest one
    d = cfg.data
    fixed = catalog.CATALOG.get(d.dataset)
    if fixed is not None and fixed.layout == "arrays" and fixed.channels not in (None, d.channels):
        raise ConfigError(
            f"data.channels={d.channels}, but {d.dataset} images have {fixed.channels} "
            f"channel(s); set data.channels={fixed.channels} (the backbone follows it)"
        )
    o = cfg.optim  # single values are range-checked by their declared bounds
    ms = o.milestones
    if any(b <= a for a, b in itertools.pairwise(ms)):
        raise ConfigError(f"optim.milestones must be strictly increasing epochs, got {ms}")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as nested plain dicts/lists (YAML and checkpoint friendly)."""
    return dataclasses.asdict(cfg)


#: Keys renamed since earlier releases: (section, old) -> (section, new). Saved configs (e.g. in
#: checkpoints written before the rename) are read with the new names.
RENAMED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("data", "lt_ratio"): ("data", "imbalance_ratio"),
    ("data", "bal_repeat"): ("data", "repeat"),
    ("method", "init_checkpoint"): ("model", "init_checkpoint"),
    ("run", "amp"): ("run", "precision"),
}

#: Values renamed with their key: (section, new key) -> {old value: new value}.
RENAMED_VALUES: dict[tuple[str, str], dict[Any, Any]] = {("run", "precision"): {"none": "fp32"}}


def _migrate(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in mapping.items()}
    for (sec, old), (new_sec, new) in RENAMED_KEYS.items():
        section = out.get(sec)
        if isinstance(section, dict) and old in section:
            value = section.pop(old)
            value = RENAMED_VALUES.get((new_sec, new), {}).get(value, value)
            out.setdefault(new_sec, {})[new] = value
    return out


def _drop_foreign_method_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """Configs saved before the per-method sections held every method key for every method
    (``method.alpha`` in a KCL run); keep only the keys of the saved method's section."""
    from balfeat.methods import METHODS, get_method

    section = mapping.get("method")
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        return mapping
    get_method(section["name"])  # an unknown name: the ConfigError of the registry
    own = {f.name for f in dataclasses.fields(METHODS[section["name"]].params)}
    mapping["method"] = {k: v for k, v in section.items() if k in own}
    return mapping


def config_from_dict(mapping: Mapping[str, Any], source: str = "a saved config") -> Config:
    """Rebuild a :class:`Config` from :func:`config_to_dict` output (e.g. from a checkpoint);
    keys of :data:`RENAMED_KEYS` are read under their new names, and keys a saved flat ``method``
    section held for other methods are dropped."""
    migrated = _drop_foreign_method_keys(_migrate(mapping))
    return typed_config.from_dict(Config, migrated, source, validate=validate)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a kill leaves the old file or the new)."""
    from balfeat.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
