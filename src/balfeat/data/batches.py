"""The trainer's one input object: device batches of an epoch, whatever path makes them.

Three paths give a batch, each chosen when the source is built:

- a ``DataLoader`` over a dataset whose transform returns tensors (PIL or uint8-tensor recipes,
  :mod:`balfeat.data.transforms`), copied to the device;
- the on-device array loader (:class:`~balfeat.data.device_data.DeviceArrayLoader`), for small
  uint8 arrays resident on the device and augmented there with the draws of the *global* batch,
  seeded by ``(seed, epoch, batch)`` on every rank, each rank using the rows of its slice: with
  the trainer's samplers (rank ``r`` holds slice ``r`` of every global batch,
  :func:`balfeat.data.samplers.shard_positions`) an image gets the same crop, flip and jitter in
  N processes as in one;
- encoded image files (``data.decode=gpu``): a ``DataLoader`` of
  :class:`~balfeat.data.decode.EncodedBatch` es, decoded and augmented on the device by an
  :class:`~balfeat.data.decode.EncodedBatchAugment` with draws seeded by
  ``(seed, rank, epoch, batch)`` (per rank: N processes draw other numbers than one).

On the DataLoader path the dataset's transform draws from the process's (or worker's) global
generators, image after image, so N processes draw other numbers than one there too.

:class:`BatchSource` hides which: iterating it gives ``(images, labels)`` on the device (images
one tensor (B, C, H, W), or a list of ``views`` of them), and its :meth:`~BatchSource.state_dict`
holds what an exact resume needs (the loader generator and the position in the epoch). A resumed
epoch skips the batches already trained, each path its own way, and batch ``b`` of the epoch is
the batch the uninterrupted run saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from balfeat import distributed
from balfeat.data.decode import EncodedBatchAugment, collate_encoded
from balfeat.data.device_data import DeviceArrayLoader, DeviceAugment
from balfeat.data.samplers import SkipSampler
from balfeat.errors import DataError
from balfeat.seeding import derive_seed, rank_seed


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def to_device(x: Any, device: torch.device, channels_last: bool = False) -> Any:
    """A tensor, or a list of them (views), on ``device`` (4-D ones channels-last if asked)."""
    if isinstance(x, (list, tuple)):
        return [to_device(v, device, channels_last) for v in x]
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class BatchSource:
    """The batches of one rank, epoch after epoch, on the training device.

    Args:
        dataset: the training dataset (with ``.images``/``.targets`` for the device path).
        sampler: the rank's sampler (``set_epoch`` is called by :meth:`set_epoch`).
        batch_size: images per batch on this rank; the last incomplete batch is dropped.
        device: where batches are delivered.
        seed: the run's seed; this rank's streams are derived from it
            (:func:`balfeat.seeding.rank_seed` with ``seed_offset``).
        rank: this process's rank.
        world: the number of ranks; default :func:`balfeat.distributed.world_size`. On the
            on-device path the batches are slice ``rank`` of global batches of
            ``world * batch_size`` (augmented with the global batch's draws).
        seed_offset: added to ``seed`` (the queue-prefill source uses its own streams).
        num_workers: DataLoader worker processes (host paths).
        device_augment: the on-device path's augmentation, one per view or one for all; ``None``
            for the host paths.
        views: crops per image the method takes (the device path makes them; on the host paths
            the dataset's transform or ``decoder`` does).
        decoder: for a dataset that yields encoded files: decodes and augments a batch on the
            device.
        channels_last: deliver 4-D images in channels-last memory format.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        sampler: Sampler[int],
        *,
        batch_size: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world: int | None = None,
        seed_offset: int = 0,
        num_workers: int = 0,
        device_augment: DeviceAugment | Sequence[DeviceAugment] | None = None,
        views: int = 1,
        decoder: EncodedBatchAugment | None = None,
        channels_last: bool = False,
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.device = device
        self.seed = int(seed) + int(seed_offset)
        self.rank = int(rank)
        self.world = distributed.world_size() if world is None else int(world)
        if not 0 <= self.rank < self.world:
            raise DataError(f"BatchSource: rank {self.rank} is not in [0, world={self.world})")
        self.num_workers = int(num_workers)
        self.device_augment = device_augment
        self.views = int(views)
        self.decoder = decoder
        self.channels_last = channels_last
        self.generator = torch.Generator()
        self.generator.manual_seed(rank_seed(seed, rank, seed_offset))
        self.epoch = 0
        #: batches of the current epoch already delivered (or skipped on resume)
        self.position = 0

    @property
    def on_device(self) -> bool:
        """Whether batches come from the on-device array loader."""
        return self.device_augment is not None

    def __len__(self) -> int:
        """Batches per epoch (``drop_last``)."""
        return len(self.sampler) // self.batch_size  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Deliver the order and augmentations of ``epoch`` (0-based) next."""
        self.epoch = int(epoch)
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)

    def state_dict(self) -> dict[str, Any]:
        """``{"loader": generator state, "batch_in_epoch": position}``."""
        return {"loader": self.generator.get_state(), "batch_in_epoch": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s state: the next epoch iterated starts at its
        position (a key that is missing keeps its current value)."""
        if "loader" in state:
            self.generator.set_state(state["loader"])
        self.position = int(state.get("batch_in_epoch", self.position))

    def to_device(self, images: Any, batch_index: int) -> Any:
        """A loader batch's images on the device; encoded files are decoded and augmented there
        with draws seeded by ``(seed, rank, epoch, batch_index)``."""
        if self.decoder is not None:
            seed = derive_seed(self.seed, self.rank, self.epoch, batch_index)
            images = self.decoder(images, self.device, torch.Generator().manual_seed(seed))
        return to_device(images, self.device, self.channels_last)

    def host_loader(self, skip: int = 0) -> Iterable[tuple[Any, torch.Tensor]]:
        """The current epoch's batches as the path's loader yields them, from batch ``skip`` on
        (encoded files not yet decoded; the benchmarks time this part alone)."""
        if self.device_augment is not None:  # skips by batch index: batch b keeps its draws
            loader = DeviceArrayLoader(
                self.dataset.images,  # type: ignore[attr-defined]
                self.dataset.targets,  # type: ignore[attr-defined]
                batch_size=self.batch_size,
                sampler=self.sampler,
                transform=self.device_augment,
                views=self.views,
                device=self.device,
                seed=self.seed,  # the global batch's draws; this rank's rows of them
                drop_last=True,
                start_batch=skip,
                part=(self.rank, self.world),
            )
            loader.set_epoch(self.epoch)
            return loader
        encoded = getattr(self.dataset, "decode", "pil") == "gpu"
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=SkipSampler(self.sampler, skip * self.batch_size) if skip else self.sampler,
            num_workers=self.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=self.generator,
            collate_fn=collate_encoded if encoded else None,
            persistent_workers=False,
        )

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        """The rest of the epoch: ``(images, labels)`` on the device; :attr:`position` counts
        the batches delivered and is 0 again once the epoch is through."""
        for images, labels in self.host_loader(self.position):
            batch = self.to_device(images, self.position)
            self.position += 1
            yield batch, labels.to(self.device, non_blocking=True)
        self.position = 0
