"""Representation-learning methods and the registry that names them.

Built in: SL, MoCo v1/v2, KCL, SupCon (queue and in-batch), PaCo, GPaCo, BCL, TSC.

A method is an ``nn.Module`` that fulfils :class:`Method`, with a typed parameter dataclass (its
``method`` config section, :mod:`balfeat.methods.params`). It is made known to the engine by one
registry entry: ``register("name", views=..., params=..., prefill_by_default=...)`` on a builder
function ``build(params, backbone, num_classes, seed) -> Method``; a method whose constructor takes
its parameters by their config names needs no builder of its own
(``register(...)(from_constructor(MyMethod))``), and then every parameter field is checked
against the constructor's arguments once, at registration. The trainer and ``engine.build`` only
look the name up in :data:`METHODS`; they never test a method's name. Adding a method = one module
+ one registry line + one recipe + tests (docs/DESIGN.md has a worked example).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from balfeat.errors import ConfigError
from balfeat.methods.inputs import check_num_classes
from balfeat.methods.params import MethodParams

if TYPE_CHECKING:
    from balfeat.models.backbones import Backbone


@runtime_checkable
class Method(Protocol):
    """What the trainer needs from a method.

    Attributes:
        views: crops per image the method consumes (1: ``images`` is (B, C, H, W); n >= 2: a
            list of n such tensors, e.g. ``[view_q, view_k]``).
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


Builder = Callable[[Any, "Backbone", int, int], nn.Module]


@dataclass(frozen=True)
class MethodEntry:
    """A registered method.

    Attributes:
        name: the ``method.name`` that selects it.
        build: ``build(params, backbone, num_classes, seed)`` returning the method module.
        views: crops per image (default of the method's ``views``; a method whose parameters
            have a ``views`` field lets the config choose); the data pipeline makes that many.
        prefill_by_default: ``method.prefill=auto`` fills the queue before the first step.
        params: the dataclass of the method's config section (``method.*`` keys).
    """

    name: str
    build: Builder
    views: int
    prefill_by_default: bool = False
    params: type[MethodParams] = MethodParams


METHODS: dict[str, MethodEntry] = {}


def register(
    name: str,
    views: int,
    prefill_by_default: bool = False,
    params: type[MethodParams] = MethodParams,
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name`` (a later registration replaces it).

    Args:
        name: the ``method.name`` that selects the method.
        views: crops per image (>= 1).
        prefill_by_default: ``method.prefill=auto`` fills the key queue before the first step.
        params: the method's parameter dataclass (a :class:`MethodParams` subclass); its fields
            are the ``method.*`` config keys of this method.

    Raises:
        ValueError: ``views`` is below 1, ``params`` is not a MethodParams dataclass, or (for
            a :func:`from_constructor` builder) a parameter the constructor does not take.
    """
    if views < 1:
        raise ValueError(f"method {name!r}: views must be >= 1, got {views}")
    if not (isinstance(params, type) and issubclass(params, MethodParams)):
        raise ValueError(f"method {name!r}: params must be a MethodParams dataclass")

    def deco(build: Builder) -> Builder:
        cls = getattr(build, "method_class", None)
        if cls is not None:
            check_constructor(name, cls, params)
        METHODS[name] = MethodEntry(name, build, views, prefill_by_default, params)
        return build

    return deco


#: Parameter fields that configure the trainer and the data pipeline, not the method's
#: constructor (``views``: how many crops the pipeline makes, for a method that takes several).
TRAINER_FIELDS = frozenset({"name", "prefill", "views"})


def constructor_fields(params: type[MethodParams]) -> list[str]:
    """The fields of ``params`` handed to the method's constructor (all but the trainer's)."""
    return [f.name for f in dataclasses.fields(params) if f.name not in TRAINER_FIELDS]


def check_constructor(name: str, cls: type, params: type[MethodParams]) -> None:
    """Every constructor field of ``params`` must be an argument of ``cls.__init__``.

    Raises:
        ValueError: naming the fields the constructor does not take.
    """
    accepted = set(inspect.signature(cls).parameters)
    missing = [f for f in constructor_fields(params) if f not in accepted]
    if missing:
        raise ValueError(
            f"method {name!r}: {params.__name__} fields {missing} are not arguments of "
            f"{cls.__name__}(...); rename the field or the argument"
        )


def from_constructor(cls: type) -> Builder:
    """A builder calling ``cls(backbone, [num_classes=], [seed=], **parameter fields)``.

    ``num_classes`` and ``seed`` are passed when the constructor takes them; ``num_classes``
    must be >= 1 for every method (a :class:`~balfeat.errors.BalfeatError` otherwise).
    """
    takes = set(inspect.signature(cls).parameters)

    def build(params: Any, backbone: Backbone, num_classes: int, seed: int) -> nn.Module:
        check_num_classes(f"method {cls.__name__}", num_classes)
        kwargs = {f: getattr(params, f) for f in constructor_fields(type(params))}
        if "num_classes" in takes:
            kwargs["num_classes"] = num_classes
        if "seed" in takes:
            kwargs["seed"] = seed
        module: nn.Module = cls(backbone, **kwargs)
        return module

    build.method_class = cls  # type: ignore[attr-defined]
    build.__doc__ = f"Registry builder: {cls.__name__}(backbone, **method parameters)."
    return build


def method_params(name: str) -> MethodParams:
    """A fresh parameter section (defaults) of the registered method ``name``.

    Raises:
        ConfigError: unknown name (naming the closest registered one).
    """
    entry = get_method(name)
    section = entry.params()
    section.name = name
    return section


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
    "MethodParams",
    "MoCo",
    "Supervised",
    "from_constructor",
    "get_method",
    "method_names",
    "method_params",
    "register",
]
