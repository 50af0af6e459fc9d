"""What a method is: the :class:`Method` protocol, the :class:`MethodBase` every built-in method
derives from, and :func:`register` / :func:`from_constructor`, which add one to the registry.

A method is an ``nn.Module`` whose settings are one parameter dataclass
(:mod:`balfeat.methods.params`). Its constructor takes that dataclass, or its fields as keyword
arguments, and declares no default of its own::

    KCL(backbone, params=KCLParams(posk=3))     # or KCL(backbone, posk=3)
    PaCo(backbone, num_classes, K=4096)

A registry line makes it selectable by ``method.name``::

    register("kcl", views=2, params=KCLParams, prefill_by_default=True, label="KCL")(
        from_constructor(KCL)
    )

:func:`register` checks, once, that the constructor reads every field of the registered
dataclass, so a config key can never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.methods.inputs import check_num_classes
from balfeat.methods.params import MethodParams, check_arguments
from balfeat.methods.registry import METHODS, Builder, MethodEntry

if TYPE_CHECKING:
    from balfeat.models.backbones import Backbone


@runtime_checkable
class Method(Protocol):
    """What the trainer needs from a method.

    Attributes:
        views: crops per image the method consumes (1: ``images`` is (B, C, H, W); n >= 2: a
            list of n such tensors, e.g. ``[view_q, view_k]``).
        uses_labels: whether ``forward`` uses the labels (SL, KCL) or ignores them (MoCo).

    A method derived from :class:`MethodBase` also has ``prefill``, ``set_class_counts`` and
    ``classify`` (no-ops, or a clear error for ``classify``, where it has none of its own).
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


class MethodBase(nn.Module):
    """Base of every built-in method: the hooks the trainer and the study call, as no-ops.

    Class attributes:
        views: crops per image (>= 1).
        uses_labels: whether ``forward`` reads the labels.
        has_classifier: ``classify`` is a classifier of the method's own (PaCo, GPaCo, BCL).
        params_type: the parameter dataclass the constructor reads (``params``).

    Attribute ``params``: the settings the method was built with (a ``params_type``).
    """

    views: int = 2
    uses_labels: bool = True
    has_classifier: ClassVar[bool] = False
    params_type: ClassVar[type[MethodParams]] = MethodParams
    params: MethodParams

    def after_step(self) -> None:
        """Called after every optimiser step; nothing to update here."""

    @torch.no_grad()
    def prefill(
        self,
        batches: Iterable[tuple[Sequence[torch.Tensor], torch.Tensor]],
        max_batches: int | None = None,
    ) -> int:
        """Fill a key queue before the first step; a method without a queue uses no batch.

        Returns:
            The number of batches used (0 here).
        """
        return 0

    def set_class_counts(self, counts: torch.Tensor) -> None:
        """Training images per class, Shape: (C,); read by logit-adjusted methods only."""

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """The method's own classifier, Shape: (B, C, H, W) -> logits (B, num_classes).

        Raises:
            BalfeatError: the method has no classifier of its own (``has_classifier`` False).
        """
        raise BalfeatError(
            f"{type(self).__name__} has no classifier of its own (only PaCo, GPaCo and BCL "
            "train one); evaluate its backbone with a probe instead (balfeat probe)"
        )


P = TypeVar("P", bound=MethodParams)

#: Parameter fields that configure the trainer, not the method's constructor.
TRAINER_FIELDS = frozenset({"name", "prefill", "views"})


def constructor_fields(params: type[MethodParams]) -> list[str]:
    """The fields of ``params`` handed to the method's constructor (all but the trainer's)."""
    return [f.name for f in dataclasses.fields(params) if f.name not in TRAINER_FIELDS]


def resolve_params(
    owner: str, kind: type[P], params: MethodParams | None, overrides: Mapping[str, Any]
) -> P:
    """The settings a constructor was given: ``params`` (default ``kind()``) with ``overrides``.

    Every value is checked against the range or choices its field declares, the same
    declaration the config loader checks.

    Args:
        owner: the method's name in messages (``KCL``).
        kind: the parameter dataclass the constructor reads.
        params: an instance of ``kind`` (or of a subclass), or None for ``kind``'s defaults.
        overrides: field name -> value, from the constructor's keyword arguments.

    Raises:
        TypeError: an override that is not a field of ``kind``.
        BalfeatError: ``params`` of another type, or a value out of its range or choices.
    """
    if params is None:
        params = kind()
    elif not isinstance(params, kind):
        raise BalfeatError(
            f"{owner} takes params of type {kind.__name__}, got {type(params).__name__}"
        )
    names = constructor_fields(kind)
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(
            f"{owner}() got unexpected keyword arguments {unknown}; its settings are the fields "
            f"of {kind.__name__}: {', '.join(names)}"
        )
    if overrides:
        params = dataclasses.replace(params, **overrides)
    check_arguments(type(params), owner, **{n: getattr(params, n) for n in names})
    return params


def _takes_params(cls: type) -> bool:
    return "params" in inspect.signature(cls).parameters


def check_constructor(name: str, cls: type, params: type[MethodParams]) -> None:
    """The constructor of ``cls`` reads every constructor field of ``params``.

    A constructor taking ``params`` reads the fields of its ``params_type``; ``params`` must be
    that dataclass or a subclass without further fields. Any other constructor must take every
    field as an argument.

    Raises:
        ValueError: naming the fields the constructor does not read.
    """
    kind = getattr(cls, "params_type", None) if _takes_params(cls) else None
    if _takes_params(cls) and not (isinstance(kind, type) and issubclass(kind, MethodParams)):
        raise ValueError(
            f"method {name!r}: {cls.__name__} takes params but declares no params_type "
            "(a MethodParams dataclass); derive it from MethodBase and set params_type"
        )
    if kind is not None:
        reads = set(constructor_fields(kind))
    else:
        reads = set(inspect.signature(cls).parameters)
    missing = [f for f in constructor_fields(params) if f not in reads]
    if missing:
        raise ValueError(
            f"method {name!r}: {params.__name__} fields {missing} are not arguments of "
            f"{cls.__name__}(...); rename the field or the argument"
        )
    if kind is not None and not issubclass(params, kind):
        raise ValueError(
            f"method {name!r}: {cls.__name__} reads {kind.__name__}, not {params.__name__}; "
            f"register it with {kind.__name__} or a subclass"
        )


def from_constructor(cls: type) -> Builder:
    """A builder calling ``cls(backbone, [num_classes=], [seed=], params=...)``.

    A constructor without a ``params`` argument gets the fields as keyword arguments instead.
    ``num_classes`` and ``seed`` are passed when the constructor takes them; ``num_classes``
    must be >= 1 for every method (a :class:`~balfeat.errors.BalfeatError` otherwise).
    """
    takes = set(inspect.signature(cls).parameters)

    def build(params: Any, backbone: Backbone, num_classes: int, seed: int) -> nn.Module:
        check_num_classes(f"method {cls.__name__}", num_classes)
        if "params" in takes:
            kwargs: dict[str, Any] = {"params": params}
        else:
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


def register(
    name: str,
    *,
    views: int,
    params: type[MethodParams] = MethodParams,
    prefill_by_default: bool = False,
    label: str | None = None,
    has_classifier: bool | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name`` (a later registration replaces it).

    Args:
        name: the ``method.name`` that selects the method.
        views: crops per image (>= 1).
        params: the method's parameter dataclass (a :class:`MethodParams` subclass); its fields
            are the ``method.*`` config keys of this method, its defaults the method's defaults.
        prefill_by_default: ``method.prefill=auto`` fills the key queue before the first step.
        label: the name reports print (default: ``name``).
        has_classifier: the method has a classifier of its own (default: the class's
            ``has_classifier`` for a :func:`from_constructor` builder, else False).

    Raises:
        ValueError: ``views`` is below 1, ``params`` is not a MethodParams dataclass, or (for
            a :func:`from_constructor` builder) a parameter the constructor does not read.
    """
    if views < 1:
        raise ValueError(f"method {name!r}: views must be >= 1, got {views}")
    if not (isinstance(params, type) and issubclass(params, MethodParams)):
        raise ValueError(f"method {name!r}: params must be a MethodParams dataclass")

    def deco(build: Builder) -> Builder:
        cls = getattr(build, "method_class", None)
        if cls is not None:
            check_constructor(name, cls, params)
        own = has_classifier
        if own is None:
            own = bool(getattr(cls, "has_classifier", False))
        METHODS[name] = MethodEntry(
            name, build, views, params, prefill_by_default, label or name, own
        )
        return build

    return deco
