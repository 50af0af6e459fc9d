"""Turn a :class:`~balfeat.engine.config.Config` into the objects of a training run.

Building blocks (datasets, samplers, transforms, backbones, methods) know nothing of configs;
this module is the one place that maps config values onto their constructors. Heavy or optional
modules are imported inside the functions.

Learning-rate schedule: the scheduler is a ``LambdaLR`` stepped **once per epoch** (at the end of
each epoch), exactly like ``adjust_learning_rate`` of the reference code (MoCo / BalFeat), which
sets the rate at the start of every epoch: cosine ``lr * 0.5 * (1 + cos(pi * epoch / epochs))``
or step ``lr * 0.1 ** (number of milestones <= epoch)``, after an optional linear warm-up.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from balfeat import distributed, schedules
from balfeat.data import catalog
from balfeat.data.batches import BatchSource
from balfeat.data.datasets import (
    FOLDER_SCAN,
    ArrayDataset,
    SplitImageDataset,
    class_counts,
    subset_classes,
)
from balfeat.data.decode import EncodedBatchAugment, select_decode
from balfeat.data.device_data import DeviceAugment
from balfeat.data.folder_scan import scan_image_folder
from balfeat.data.prepare import check_not_empty, exponential_subset
from balfeat.data.recipes import host_only, view_set
from balfeat.data.samplers import ClassBalancedSampler, ShardedSampler
from balfeat.data.splits import class_names_of
from balfeat.engine.config import Config, DataConfig
from balfeat.errors import ConfigError, DataError
from balfeat.methods import get_method
from balfeat.methods.base import MethodBase

if TYPE_CHECKING:
    from balfeat.models.backbones import Backbone


def lr_factor(cfg: Config, epoch: int) -> float:
    """Multiplier of the scaled learning rate during ``epoch`` (0-based), from
    :func:`balfeat.schedules.lr_factor` (the one schedule of pretraining and probing)."""
    o = cfg.optim
    return schedules.lr_factor(
        epoch,
        o.epochs,
        o.schedule,
        milestones=o.milestones,
        gamma=o.gamma,
        warmup_epochs=o.warmup_epochs,
        cosine_form=o.cosine_form,
        warmup_inclusive=o.warmup_inclusive,
    )


def build_optimizer(cfg: Config, method: nn.Module) -> torch.optim.SGD:
    """SGD over the trainable parameters at ``lr = base_lr * batch_size / 256``."""
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            "the method has no trainable parameters; check method.freeze_backbone / the method"
        )
    return torch.optim.SGD(
        params,
        lr=cfg.optim.scaled_lr(),
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )


def build_scheduler(
    cfg: Config, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-epoch schedule (see the module docstring); call ``.step()`` after each epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(cfg, epoch))


def local_batch_size(cfg: Config, world_size: int | None = None) -> int:
    """Per-rank batch: ``optim.batch_size`` (global) divided by the number of ranks."""
    ws = distributed.world_size() if world_size is None else world_size
    if cfg.optim.batch_size % ws != 0:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} (the global batch) is not divisible by the "
            f"{ws} processes; pick a multiple of {ws}"
        )
    return cfg.optim.batch_size // ws


def train_transform(cfg: Config, tensor: bool = False) -> Any:
    """The training transform: one pipeline, or one per view (``MultiView``) for a method that
    takes ``method.views`` crops.

    ``data.augmentation=none`` is the ``eval`` transform (resize + normalise, no randomness).
    A multi-view name (``paco_randcls_sim``, ...) gives each view its recipe
    (:func:`balfeat.data.recipes.view_set`: a one-view method takes the first, extra views repeat
    the last), e.g. BCL's three crops with ``method.views=3``. With ``tensor`` the same recipes
    for uint8 tensors (``data.decode=cpu``).
    """
    from balfeat.data.transforms import MultiView, TwoViews, build_view_transforms

    name = "eval" if cfg.data.augmentation == "none" else cfg.data.augmentation
    views = cfg.method.views
    made = build_view_transforms(
        name, cfg.data.image_size, cfg.data.channels, tensor=tensor, views=views
    )
    if views == 1:
        return made[0]
    return TwoViews(*made) if views == 2 else MultiView(made)


def resolve_decode(cfg: Config) -> str:
    """The decoder image folders use: ``data.decode``, with ``gpu`` falling back to ``cpu``
    (and a :class:`~balfeat.data.decode.DecodeFallbackWarning`) when ``run.device`` gives no
    CUDA device."""

    if cfg.data.decode == "gpu" and host_only(cfg.data.augmentation):
        raise ConfigError(
            f"data.augmentation={cfg.data.augmentation} uses RandAugment / AutoAugment / Cutout, "
            "which the GPU decoder (data.decode=gpu) does not have: use data.decode=cpu or pil"
        )
    dev = cfg.run.device
    cuda = (dev == "auto" or dev.startswith("cuda")) and torch.cuda.is_available()
    return select_decode(cfg.data.decode, cuda_available=cuda)


def build_train_dataset(cfg: Config) -> Dataset[Any]:
    """The training dataset of ``data.dataset`` (chosen from :mod:`balfeat.data.catalog`) with
    its transform; has ``.targets`` and ``.num_classes``.

    Image folders decode as ``data.decode`` says (:func:`resolve_decode`): with ``gpu`` the
    dataset yields encoded files and :func:`build_batch_decoder` augments them on the device.
    """
    d = cfg.data
    info = catalog.dataset_info(d.dataset)
    if info.layout == "folder":
        return _folder_train_dataset(cfg)
    if info.num_classes:  # fashion-mnist, cifar10(-lt), cifar100(-lt): known before loading
        _check_num_classes(cfg, info.num_classes, d.dataset)
    transform = train_transform(cfg)
    option = f"data.dataset={d.dataset}"
    if info.long_tailed_from:  # CIFAR-LT: the LDAM-DRW protocol, ratio = n_max/n_min
        cifar = catalog.load_arrays(d.dataset, d.root, imbalance_ratio=d.imbalance_ratio)
        num_classes = int(info.num_classes or 0)
        check_not_empty(cifar.train_y, num_classes, option)
        return ArrayDataset(
            cifar.train_x, cifar.train_y, transform=transform, num_classes=num_classes
        )
    if d.dataset == "synthetic":
        data = catalog.synthetic_data(
            d.num_classes,
            d.image_size,
            channels=d.channels,
            train_size=d.synthetic_size,
            test_size=0,
            seed=cfg.run.seed,
        )
    else:
        data = catalog.load_arrays(
            d.dataset,
            d.root,
            option=option,
            root_key="data.root",
            npz_pairs=(("images", "labels"),),
        )
    images, labels = data.train_x, np.asarray(data.train_y, dtype=np.int64)
    num_classes = int(labels.max()) + 1
    if d.dataset == "array":  # the classes of the file (synthetic: data.num_classes)
        _check_num_classes(cfg, len(data.class_names), f"array file {d.root!r}")
    if d.imbalance_ratio > 1.0 or d.per_class > 0:
        keep = exponential_subset(labels, num_classes, d.imbalance_ratio, d.per_class, cfg.run.seed)
        images, labels = images[keep], labels[keep]
    if d.max_samples > 0 and len(labels) > d.max_samples:
        pick = np.sort(
            np.random.default_rng(cfg.run.seed).choice(
                len(labels), size=d.max_samples, replace=False
            )
        )
        images, labels = images[pick], labels[pick]
    check_not_empty(labels, num_classes, option)
    return ArrayDataset(images, labels, transform=transform, num_classes=num_classes)


def _folder_train_dataset(cfg: Config) -> Dataset[Any]:
    """The training set of an image-folder dataset (split file or folder scan), class-set and
    ``max_samples`` applied, its labels and files checked."""
    d = cfg.data
    root = catalog.require_root(
        d.dataset, d.root, option=f"data.dataset={d.dataset}", key="data.root=DIR"
    )
    # No split file: every image under data.root/<class>/ (the reference's folder scan), e.g.
    # the class-set recipes train on all ImageNet train images of the set's classes.
    split: Any = d.train_split or scan_image_folder(root)
    decode = resolve_decode(cfg)
    ds = SplitImageDataset(
        root,
        split,
        transform=None if decode == "gpu" else train_transform(cfg, tensor=decode == "cpu"),
        skip_bad_images=d.skip_bad_images,
        check_files=False,
        decode=decode,
        source=FOLDER_SCAN.format(root),
    )
    if d.class_set:  # e.g. the paper's clsset1: keep those classes, relabelled 0..C'-1
        known = class_names_of(ds.entries, d.train_split or root).values()
        ds = subset_classes(ds, catalog.check_class_set(d.class_set, list(known), d.train_split))
    if d.max_samples > 0:
        ds.entries, ds.lines = ds.entries[: d.max_samples], ds.lines[: d.max_samples]
        ds.targets = ds.targets[: d.max_samples]
    before = catalog.check_label_gaps(ds.targets, d.train_split or root, ds.lines)
    source = d.train_split or f"{root} (folder scan)"
    _check_num_classes(cfg, len(before), repr(source))
    names_of = class_names_of(ds.entries, source)
    ds.check_files()  # missing images: an error naming split:line, or skipped and recorded
    after = class_counts(ds.targets, len(before))
    emptied = np.flatnonzero(after == 0)
    if len(emptied):
        what = ", ".join(f"{int(c)} ({names_of.get(int(c), '?')!r})" for c in emptied[:10])
        raise DataError(
            f"class(es) {what} of {(d.train_split or root)!r} have no images left after skipping "
            f"{len(ds.bad_images)} missing image(s) (e.g. {ds.bad_images[0][0]}); restore the "
            "images or leave the class out with data.class_set"
        )
    ds.num_classes = len(before)
    return ds


def _check_num_classes(cfg: Config, found: int, where: str) -> None:
    """A ``data.num_classes`` other than its default must be the classes the data has."""
    unset = DataConfig.num_classes  # the declared default: "not given"
    catalog.check_num_classes(cfg.data.num_classes, found, where, unset=unset)


def build_sampler(cfg: Config, dataset: Dataset[Any]) -> Sampler[int]:
    """``ClassBalancedSampler`` if ``data.balanced`` else ``ShardedSampler``; sharded by rank in
    blocks of the per-rank batch, so rank ``r`` holds slice ``r`` of every global batch of one
    process's order (:func:`balfeat.data.samplers.shard_positions`)."""

    labels = np.asarray(dataset.targets)  # type: ignore[attr-defined]
    block = local_batch_size(cfg)
    if cfg.data.balanced:
        return ClassBalancedSampler(
            labels, repeat=cfg.data.repeat, num_samples=len(labels), seed=cfg.run.seed, block=block
        )
    return ShardedSampler(len(labels), shuffle=True, seed=cfg.run.seed, block=block)


def uses_device_loader(cfg: Config, dataset: Dataset[Any]) -> bool:
    """Whether batches come from :class:`balfeat.data.device_data.DeviceArrayLoader`
    (``data.loader``: ``device``, or ``auto`` with an in-memory uint8 array dataset and an
    augmentation the device path can run: ``auto`` takes the PIL path for a RandAugment /
    AutoAugment / Cutout one).

    Raises:
        ConfigError: ``data.loader=device`` for a dataset that is not an in-memory array, or with
            a host-only augmentation (``paco_randcls_sim``, ``paco_cifar_autoaug_sim``, ...).
    """

    in_memory = isinstance(dataset, ArrayDataset) and np.asarray(dataset.images).dtype == np.uint8
    if cfg.data.loader == "device" and not in_memory:
        raise ConfigError(
            "data.loader=device needs an in-memory image array (data.dataset fashion-mnist, "
            f"synthetic or array); data.dataset={cfg.data.dataset} reads image files: use "
            "data.loader=pil"
        )
    on_host = host_only(cfg.data.augmentation)
    if cfg.data.loader == "device" and on_host:
        raise ConfigError(
            f"data.loader=device cannot run data.augmentation={cfg.data.augmentation}: it uses "
            "RandAugment / AutoAugment / Cutout, which the on-device augmentation does not have; "
            "use data.loader=auto or pil"
        )
    return cfg.data.loader == "device" or (cfg.data.loader == "auto" and in_memory and not on_host)


def build_batch_source(
    cfg: Config,
    dataset: Dataset[Any],
    sampler: Sampler[int],
    *,
    batch_size: int,
    device: torch.device,
    rank: int,
    seed_offset: int = 0,
) -> BatchSource:
    """The trainer's :class:`~balfeat.data.batches.BatchSource`: the on-device array loader
    (:func:`uses_device_loader`, recipe per view from ``data.augmentation``), the GPU decode path
    (:func:`build_batch_decoder`) or a DataLoader over the dataset's own transform."""

    augments: list[DeviceAugment] | None = None
    if uses_device_loader(cfg, dataset):
        name = "eval" if cfg.data.augmentation == "none" else cfg.data.augmentation
        made: dict[str, DeviceAugment] = {}
        for recipe in view_set(name, cfg.method.views):
            if recipe not in made:
                made[recipe] = DeviceAugment.from_recipe(
                    recipe, cfg.data.image_size, cfg.data.channels
                )
        augments = [made[r] for r in view_set(name, cfg.method.views)]
    return BatchSource(
        dataset,
        sampler,
        batch_size=batch_size,
        device=device,
        seed=cfg.run.seed,
        rank=rank,
        world=distributed.world_size(),
        seed_offset=seed_offset,
        num_workers=cfg.data.num_workers,
        device_augment=augments,
        views=cfg.method.views,
        decoder=build_batch_decoder(cfg, dataset),
        channels_last=cfg.run.channels_last,
    )


def build_batch_decoder(cfg: Config, dataset: Dataset[Any]) -> Any:
    """The on-device decoder + augmentation of a dataset that yields encoded files
    (``data.decode=gpu`` on a CUDA device), or ``None`` for every other dataset.

    Returns:
        A :class:`balfeat.data.decode.EncodedBatchAugment` of recipe ``data.augmentation`` with
        ``method.views`` views, or ``None``.
    """

    if getattr(dataset, "decode", "pil") != "gpu":
        return None
    return EncodedBatchAugment(
        cfg.data.augmentation,
        cfg.data.image_size,
        cfg.data.channels,
        views=cfg.method.views,
        backend="gpu",
    )


def backbone_of(cfg: Config) -> Backbone:
    """The backbone of ``model.*`` (optionally initialised from ``model.init_checkpoint``)."""
    from balfeat.models.backbones import build_backbone

    in_ch = cfg.model.in_channels or cfg.data.channels
    backbone = build_backbone(
        cfg.model.backbone,
        small_images=cfg.model.small_images,
        in_channels=in_ch,
        image_size=cfg.data.image_size,
    )
    if cfg.model.init_checkpoint:
        from balfeat.models.loading import load_backbone_state

        state, _info = load_backbone_state(cfg.model.init_checkpoint, cfg.model.backbone)
        backbone.load_state_dict(state)
    return backbone


def build_method(cfg: Config, num_classes: int) -> MethodBase:
    """The registered method ``method.name`` around a fresh backbone (a registry lookup)."""
    entry = get_method(cfg.method.name)
    method = entry.build(cfg.method, backbone_of(cfg), num_classes, cfg.run.seed)
    if not isinstance(method, MethodBase):
        raise ConfigError(
            f"method {cfg.method.name!r} built a {type(method).__name__}, not a "
            "balfeat.methods.MethodBase: derive the method's class from MethodBase"
        )
    if cfg.model.init_classifier and cfg.model.init_checkpoint:
        from balfeat.models.loading import load_classifier_state

        load = getattr(method, "load_classifier", None)
        if load is None:
            raise ConfigError(
                f"model.init_classifier: method {cfg.method.name!r} has no classifier to start "
                "from a checkpoint (only sl); set model.init_classifier=false"
            )
        load(*load_classifier_state(cfg.model.init_checkpoint))
    return method


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``run.precision`` on ``device`` (``None``: float32); fp16 off a GPU
    warns and trains in float32."""
    if precision == "bf16":  # autocast on CPU and GPU alike
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cuda":
            return torch.float16
        warnings.warn(
            f"run.precision=fp16 needs a GPU; training in float32 on {device.type} "
            "(bf16 works on CPU)",
            stacklevel=3,
        )
    return None


def warn_late_milestones(cfg: Config) -> None:
    """Warn when a step schedule's milestones are not below ``optim.epochs`` (never reached)."""
    late = [m for m in cfg.optim.milestones if m >= cfg.optim.epochs]
    if cfg.optim.schedule == "step" and late:
        warnings.warn(
            f"optim.milestones {late} are not below optim.epochs={cfg.optim.epochs}: the "
            "learning rate never drops there (shrank the epochs of a recipe? scale its "
            "milestones too)",
            stacklevel=3,
        )


def method_for(cfg: Config, dataset: Dataset[Any], method: MethodBase | None = None) -> MethodBase:
    """The method to train on ``dataset``: ``method``, or the one ``cfg`` names, with the class
    prior of the logit-adjusted methods (PaCo, BCL: ``set_class_counts``) set from the data.

    Raises:
        DataError: the dataset is empty.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError(
            "the training set is empty (0 images); check data.train_split, data.per_class, "
            "data.max_samples or the study's family.total"
        )
    targets = np.asarray(dataset.targets, dtype=np.int64)  # type: ignore[attr-defined]
    num_classes = int(getattr(dataset, "num_classes", 0)) or int(targets.max() + 1)
    method = method or build_method(cfg, num_classes)
    method.set_class_counts(torch.from_numpy(np.bincount(targets, minlength=num_classes)))
    return method


def training_model(cfg: Config, method: nn.Module, device: torch.device) -> nn.Module:
    """What the training step calls: ``method``, compiled with ``run.compile``, and wrapped in
    ``DistributedDataParallel`` under torchrun.

    With ``run.sync_bn`` under torchrun, the BatchNorm layers of the method's trained submodules
    (those with a parameter that takes gradients: backbone, heads) become
    :class:`~balfeat.models.batchnorm.GlobalBatchNorm` in place (same parameters, so the
    optimizer built before is unchanged); momentum encoders keep per-rank shuffle-BN.
    """
    if cfg.run.sync_bn and distributed.is_distributed():
        from balfeat.models.batchnorm import convert_global_batchnorm

        for name, child in method.named_children():
            if any(p.requires_grad for p in child.parameters()):
                setattr(method, name, convert_global_batchnorm(child))
    model: nn.Module = method
    if cfg.run.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    if distributed.is_distributed():
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # Buffers are not broadcast from rank 0 before every forward: the MoCo/KCL queues
            # are updated identically on every rank (gathered keys), and re-sending a
            # 65536-key queue each step is pure cost. BN running statistics stay per rank
            # (without run.sync_bn); checkpoints hold rank 0's.
            broadcast_buffers=False,
        )
    return model
