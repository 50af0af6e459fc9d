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

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from balfeat import distributed, schedules
from balfeat.data.prepare import check_not_empty, exponential_subset, synthetic_arrays
from balfeat.engine.config import Config
from balfeat.errors import ConfigError, DataError

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
    """The training transform, wrapped in ``TwoViews`` when the method needs two crops.

    ``data.augmentation=none`` is the ``eval`` transform (resize + normalise, no randomness).
    A two-view name (``paco_randcls_sim``, ...) gives ``TwoViews(t_q, t_k)``, and its first
    view to a one-view method. With ``tensor`` the same recipe for uint8 tensors
    (``data.decode=cpu``).
    """
    from balfeat.data.transforms import TwoViews, build_view_transforms

    name = "eval" if cfg.data.augmentation == "none" else cfg.data.augmentation
    t_q, t_k = build_view_transforms(name, cfg.data.image_size, cfg.data.channels, tensor=tensor)
    if cfg.method.views == 2:
        return TwoViews(t_q, t_k)
    return t_q


def resolve_decode(cfg: Config) -> str:
    """The decoder image folders use: ``data.decode``, with ``gpu`` falling back to ``cpu``
    (and a :class:`~balfeat.data.decode.DecodeFallbackWarning`) when ``run.device`` gives no
    CUDA device."""
    from balfeat.data.decode import select_decode
    from balfeat.data.recipes import host_only

    if cfg.data.decode == "gpu" and host_only(cfg.data.augmentation):
        raise ConfigError(
            f"data.augmentation={cfg.data.augmentation} uses RandAugment / AutoAugment / Cutout, "
            "which the GPU decoder (data.decode=gpu) does not have: use data.decode=cpu or pil"
        )
    dev = cfg.run.device
    cuda = (dev == "auto" or dev.startswith("cuda")) and torch.cuda.is_available()
    return select_decode(cfg.data.decode, cuda_available=cuda)


def build_train_dataset(cfg: Config) -> Dataset[Any]:
    """The training dataset with its transform; has ``.targets`` and ``.num_classes``.

    Image folders decode as ``data.decode`` says (:func:`resolve_decode`): with ``gpu`` the
    dataset yields encoded files and :func:`build_batch_decoder` augments them on the device.
    """
    from balfeat.data.datasets import ArrayDataset

    d = cfg.data
    transform = train_transform(cfg)
    if d.dataset in ("cifar10-lt", "cifar100-lt"):  # the LDAM-DRW protocol, ratio = n_max/n_min
        from balfeat.data.cifar_lt import load_cifar_lt

        cifar = load_cifar_lt(d.dataset.removesuffix("-lt"), d.root or ".", d.imbalance_ratio)
        num_classes = 10 if d.dataset == "cifar10-lt" else 100
        check_not_empty(cifar.train_y, num_classes, f"data.dataset={d.dataset}")
        return ArrayDataset(
            cifar.train_x, cifar.train_y, transform=transform, num_classes=num_classes
        )
    if d.dataset in ("synthetic", "fashion-mnist", "array"):
        if d.dataset == "synthetic":
            images, labels = synthetic_arrays(
                d.synthetic_size, d.num_classes, d.image_size, d.channels, cfg.run.seed
            )
        elif d.dataset == "fashion-mnist":
            from balfeat.data.sources import load_fashion_mnist

            fm = load_fashion_mnist(d.root or None)
            images, labels = fm.train_x, fm.train_y
        else:
            if not d.root:
                raise ConfigError("data.dataset=array needs data.root=FILE.npz")
            from balfeat.data.sources import load_npz_arrays

            arrays = load_npz_arrays(d.root, (("images", "labels"),))
            images, labels = arrays["images"], arrays["labels"]
        labels = np.asarray(labels, dtype=np.int64)
        num_classes = int(labels.max()) + 1
        if d.imbalance_ratio > 1.0 or d.per_class > 0:
            keep = exponential_subset(
                labels, num_classes, d.imbalance_ratio, d.per_class, cfg.run.seed
            )
            images, labels = images[keep], labels[keep]
        if d.max_samples > 0 and len(labels) > d.max_samples:
            pick = np.sort(
                np.random.default_rng(cfg.run.seed).choice(
                    len(labels), size=d.max_samples, replace=False
                )
            )
            images, labels = images[pick], labels[pick]
        check_not_empty(labels, num_classes, f"data.dataset={d.dataset}")
        return ArrayDataset(images, labels, transform=transform, num_classes=num_classes)
    from balfeat.data.datasets import FOLDER_SCAN, SplitImageDataset, class_counts, subset_classes
    from balfeat.data.splits import class_names_of, read_class_set_lines, scan_image_folder

    if not d.root:
        raise ConfigError(
            f"data.dataset={d.dataset} needs data.root=DIR (the folder the split paths are "
            "relative to, e.g. ImageNet train/)"
        )
    # No split file: every image under data.root/<class>/ (the reference's folder scan), e.g.
    # the class-set recipes train on all ImageNet train images of the set's classes.
    split: Any = d.train_split or scan_image_folder(d.root)
    decode = resolve_decode(cfg)
    ds = SplitImageDataset(
        d.root,
        split,
        transform=None if decode == "gpu" else train_transform(cfg, tensor=decode == "cpu"),
        skip_bad_images=d.skip_bad_images,
        check_files=False,
        decode=decode,
        source=FOLDER_SCAN.format(d.root),
    )
    if d.class_set:  # e.g. the paper's clsset1: keep those classes, relabelled 0..C'-1
        numbered = read_class_set_lines(d.class_set)
        names = [n for _, n in numbered]
        known = set(class_names_of(ds.entries, d.train_split or d.root).values())
        unknown = [f"{n!r} ({d.class_set}:{i})" for i, n in numbered if n not in known]
        if unknown:
            raise DataError(
                f"data.class_set: {len(unknown)} class(es) not in data.train_split "
                f"{d.train_split!r} ({len(known)} classes): {', '.join(unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''}; fix the class-set file or use the split "
                "it was made for"
            )
        ds = subset_classes(ds, names)
    if d.max_samples > 0:
        ds.entries, ds.lines = ds.entries[: d.max_samples], ds.lines[: d.max_samples]
        ds.targets = ds.targets[: d.max_samples]
    before = class_counts(ds.targets)
    gaps = np.flatnonzero(before == 0)
    if len(gaps):  # labels must be 0..C-1 with images in every class
        top = int(before.size - 1)
        line = ds.lines[int(np.flatnonzero(ds.targets == top)[0])]
        raise DataError(
            f"{d.train_split or d.root}:{line}: label {top} makes {top + 1} classes, but class(es) "
            f"{', '.join(str(int(c)) for c in gaps[:10])}{' ...' if len(gaps) > 10 else ''} "
            "have no images; labels must be 0..C-1 with images in every class - renumber the "
            "labels or fix the wrong one"
        )
    source = d.train_split or f"{d.root} (folder scan)"
    names_of = class_names_of(ds.entries, source)
    ds.check_files()  # missing images: an error naming split:line, or skipped and recorded
    after = class_counts(ds.targets, len(before))
    emptied = np.flatnonzero(after == 0)
    if len(emptied):
        what = ", ".join(f"{int(c)} ({names_of.get(int(c), '?')!r})" for c in emptied[:10])
        raise DataError(
            f"class(es) {what} of {(d.train_split or d.root)!r} have no images left after skipping "
            f"{len(ds.bad_images)} missing image(s) (e.g. {ds.bad_images[0][0]}); restore the "
            "images or leave the class out with data.class_set"
        )
    ds.num_classes = len(before)
    return ds


def build_sampler(cfg: Config, dataset: Dataset[Any]) -> Sampler[int]:
    """``ClassBalancedSampler`` if ``data.balanced`` else ``ShardedSampler``; sharded by rank."""
    from balfeat.data.samplers import ClassBalancedSampler, ShardedSampler

    labels = np.asarray(dataset.targets)  # type: ignore[attr-defined]
    if cfg.data.balanced:
        return ClassBalancedSampler(
            labels, repeat=cfg.data.repeat, num_samples=len(labels), seed=cfg.run.seed
        )
    return ShardedSampler(len(labels), shuffle=True, seed=cfg.run.seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(
    cfg: Config,
    dataset: Dataset[Any],
    sampler: Sampler[int],
    batch_size: int,
    generator: torch.Generator,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """DataLoader of one rank: ``drop_last`` (equal steps on every rank), seeded workers.

    ``generator`` (persistent, checkpointed by the trainer) seeds the worker processes of each
    epoch, so augmentation is reproducible. A dataset yielding encoded files (``decode="gpu"``)
    is batched by :func:`balfeat.data.decode.collate_encoded`.
    """
    from balfeat.data.decode import collate_encoded

    encoded = getattr(dataset, "decode", "pil") == "gpu"
    nw = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=nw,
        drop_last=True,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=generator,
        collate_fn=collate_encoded if encoded else None,
        persistent_workers=False,
    )


def uses_device_loader(cfg: Config, dataset: Dataset[Any]) -> bool:
    """Whether batches come from :class:`balfeat.data.device_data.DeviceArrayLoader`
    (``data.loader``: ``device``, or ``auto`` with an in-memory uint8 array dataset and an
    augmentation the device path can run: ``auto`` takes the PIL path for a RandAugment /
    AutoAugment / Cutout one).

    Raises:
        ConfigError: ``data.loader=device`` for a dataset that is not an in-memory array, or with
            a host-only augmentation (``paco_randcls_sim``, ``paco_cifar_autoaug_sim``, ...).
    """
    from balfeat.data.datasets import ArrayDataset
    from balfeat.data.recipes import host_only

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


def build_device_loader(
    cfg: Config,
    dataset: Dataset[Any],
    sampler: Sampler[int],
    batch_size: int,
    device: torch.device,
    seed: int,
    start_batch: int = 0,
) -> Any:
    """A :class:`~balfeat.data.device_data.DeviceArrayLoader` over ``dataset``'s uint8 array in
    ``sampler``'s order (``drop_last``, as the DataLoader path), augmenting on ``device`` with the
    recipe ``data.augmentation``; ``start_batch`` batches are skipped (mid-epoch resume) and the
    augmentation of batch ``b`` depends only on ``(seed, epoch, b)``, so a resumed epoch sees the
    same batches as an uninterrupted one."""
    from balfeat.data.device_data import DeviceArrayLoader, DeviceAugment

    name = "eval" if cfg.data.augmentation == "none" else cfg.data.augmentation
    augment = DeviceAugment.from_recipe(name, cfg.data.image_size, cfg.data.channels)
    return DeviceArrayLoader(
        dataset.images,  # type: ignore[attr-defined]
        dataset.targets,  # type: ignore[attr-defined]
        batch_size=batch_size,
        sampler=sampler,
        transform=augment,
        views=cfg.method.views,
        device=device,
        seed=seed,
        drop_last=True,
        start_batch=start_batch,
    )


def build_batch_decoder(cfg: Config, dataset: Dataset[Any]) -> Any:
    """The on-device decoder + augmentation of a dataset that yields encoded files
    (``data.decode=gpu`` on a CUDA device), or ``None`` for every other dataset.

    Returns:
        A :class:`balfeat.data.decode.EncodedBatchAugment` of recipe ``data.augmentation`` with
        ``method.views`` views, or ``None``.
    """
    from balfeat.data.decode import EncodedBatchAugment

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
        cfg.model.backbone, small_images=cfg.model.small_images, in_channels=in_ch
    )
    if cfg.model.init_checkpoint:
        from balfeat.models.loading import load_backbone_state

        state, _info = load_backbone_state(cfg.model.init_checkpoint, cfg.model.backbone)
        backbone.load_state_dict(state)
    return backbone


def build_method(cfg: Config, num_classes: int) -> nn.Module:
    """The registered method ``method.name`` around a fresh backbone (a registry lookup)."""
    from balfeat.methods import get_method

    entry = get_method(cfg.method.name)
    return entry.build(cfg.method, backbone_of(cfg), num_classes, cfg.run.seed)


# Deprecated names kept for callers outside engine/ (study/study.py uses build_transform); they
# shadowed the building blocks' own function names.
build_transform = train_transform
