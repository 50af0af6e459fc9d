"""The method registry: one entry per ``method.name``, filled as the method modules are imported.

A leaf of the methods package: it imports no method module and no parameter dataclass at run
time, so :mod:`balfeat.methods.params` (whose ``views`` reads an entry) and the method modules
(which add entries through :func:`balfeat.methods.base.register`) can import it without a cycle.
``import balfeat.methods`` imports every built-in method, so :data:`METHODS` is complete from the
first import on.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from balfeat.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from balfeat.methods.params import MethodParams
    from balfeat.models.backbones import Backbone

#: ``build(params, backbone, num_classes, seed) -> method module``.
Builder = Callable[[Any, "Backbone", int, int], "nn.Module"]


@dataclass(frozen=True)
class MethodEntry:
    """A registered method.

    Attributes:
        name: the ``method.name`` that selects it.
        build: ``build(params, backbone, num_classes, seed)`` returning the method module.
        views: crops per image (default of the method's ``views``; a method whose parameters
            have a ``views`` field lets the config choose); the data pipeline makes that many.
        params: the dataclass of the method's config section (``method.*`` keys); its defaults
            are the method's defaults (``docs/method-defaults.md``).
        prefill_by_default: ``method.prefill=auto`` fills the queue before the first step.
        label: the name reports and plots print (``MoCo v2``, ``SupCon (queue)``).
        has_classifier: the method trains a classifier of its own (``classify(images)``), which a
            study evaluates beside the probes.
    """

    name: str
    build: Builder
    views: int
    params: type[MethodParams]
    prefill_by_default: bool = False
    label: str = ""
    has_classifier: bool = False


#: Every registered method by name. Complete once ``balfeat.methods`` is imported.
METHODS: dict[str, MethodEntry] = {}

#: The built-in methods in the order the CLI and reports list them.
BUILTIN_ORDER = (
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


def get_method(name: str) -> MethodEntry:
    """The registry entry of ``name``.

    Raises:
        ConfigError: unknown name (naming the closest registered one).
    """
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


def method_names() -> Sequence[str]:
    """Registered method names: the built-in ones first, then the others sorted."""
    builtin = [n for n in BUILTIN_ORDER if n in METHODS]
    return builtin + sorted(set(METHODS) - set(BUILTIN_ORDER))


def method_params(name: str) -> MethodParams:
    """A fresh parameter section (the defaults) of the registered method ``name``.

    Raises:
        ConfigError: unknown name (naming the closest registered one).
    """
    section = get_method(name).params()
    section.name = name
    return section
