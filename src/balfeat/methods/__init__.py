"""Representation-learning methods and the registry that names them.

Built in: SL, MoCo v1/v2, KCL, SupCon (queue and in-batch), PaCo, GPaCo, BCL, TSC.

A method is an ``nn.Module`` that fulfils :class:`Method`. It is made known to the engine by one
registry entry: ``register("name", views=..., prefill_by_default=...)`` on a builder function
``build(params, backbone, num_classes, seed) -> Method`` (``params`` is the ``method`` section of
the config). The trainer and ``engine.build`` only look the name up in :data:`METHODS`; they never
test a method's name. Adding a method = one module + one registry line + one recipe + tests
(docs/DESIGN.md has a worked example).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from balfeat.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from balfeat.models.backbones import Backbone


@runtime_checkable
class Method(Protocol):
    """What the trainer needs from a method.

    Attributes:
        views: crops per image the method consumes (1: ``images`` is (B, C, H, W); 2: a pair
            ``[view_q, view_k]`` of such tensors).
        uses_labels: whether ``forward`` uses the labels (SL, KCL) or ignores them (MoCo).

    Optional members, looked up with ``getattr`` by their users: ``prefill(batches)`` (fill a
    key queue before the first step; MoCo family), ``set_class_counts(counts)`` (training images
    per class, (C,); the trainer calls it after building the method: PaCo, GPaCo, BCL use it for
    logit adjustment) and ``classify(images) -> logits (B, C)`` (the method's own classifier:
    PaCo, GPaCo, BCL; for evaluating them beside the decoupled probes).
    """

    views: int
    uses_labels: bool

    def forward(self, images: Any, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch: images as described by ``views``, labels (B,) int64.

        Returns:
            ``{"loss": scalar tensor, ...}``; further scalar entries are logged as metrics.
        """
        ...

    def after_step(self) -> None:
        """Called after every optimiser step (momentum update, queue update, ...)."""
        ...


Builder = Callable[[Any, "Backbone", int, int], "nn.Module"]


@dataclass(frozen=True)
class MethodEntry:
    """A registered method.

    Attributes:
        name: the ``method.name`` that selects it.
        build: ``build(params, backbone, num_classes, seed)`` returning the method module.
        views: crops per image (1 or 2); the data pipeline wraps the transform accordingly.
        prefill_by_default: ``method.prefill=auto`` fills the queue before the first step.
    """

    name: str
    build: Builder
    views: int
    prefill_by_default: bool = False


METHODS: dict[str, MethodEntry] = {}


def register(
    name: str, views: int, prefill_by_default: bool = False
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name`` (a later registration replaces it)."""
    if views not in (1, 2):
        raise ValueError(f"method {name!r}: views must be 1 or 2, got {views}")

    def deco(build: Builder) -> Builder:
        METHODS[name] = MethodEntry(name, build, views, prefill_by_default)
        return build

    return deco


def get_method(name: str) -> MethodEntry:
    """The registry entry of ``name``.

    Raises:
        ConfigError: unknown name (naming the closest registered one).
    """
    _load_builtin()
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"config key 'method.name': expected one of "
            f"{', '.join(repr(n) for n in method_names())}, got {name!r} (the registered "
            f"methods){hint}"
        ) from None


_BUILTIN = (
    "sl",
    "moco_v1",
    "moco_v2",
    "kcl",
    "supcon",
    "supcon_inbatch",
    "paco",
    "gpaco",
    "bcl",
    "tsc",
)


def method_names() -> Sequence[str]:
    """Registered method names: the built-in ones first, then the others sorted."""
    _load_builtin()
    return [n for n in _BUILTIN if n in METHODS] + sorted(set(METHODS) - set(_BUILTIN))


def _load_builtin() -> None:
    # the built-in methods register themselves on import
    from balfeat.methods import bcl, kcl, moco, paco, supcon, supervised, tsc  # noqa: F401


from balfeat.methods.kcl import KCL  # noqa: E402
from balfeat.methods.moco import MoCo  # noqa: E402
from balfeat.methods.supervised import Supervised  # noqa: E402

__all__ = [
    "KCL",
    "METHODS",
    "Method",
    "MethodEntry",
    "MoCo",
    "Supervised",
    "get_method",
    "method_names",
    "register",
]
