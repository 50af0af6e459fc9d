"""Representation-learning methods and the registry that names them.

Built in: SL, MoCo v1/v2, KCL, SupCon (queue and in-batch), PaCo, GPaCo, BCL, TSC; importing
this package imports them all, so :data:`METHODS` is complete from the first import on.

The package's rooms:

- :mod:`~balfeat.methods.registry`: :data:`METHODS`, :class:`MethodEntry` (builder, views,
  parameter dataclass, display label, own classifier), :func:`get_method`, :func:`method_names`;
  a leaf that imports no method.
- :mod:`~balfeat.methods.params`: the parameter dataclasses, the one place a setting and its
  default are declared (``docs/method-defaults.md`` gives each default's source).
- :mod:`~balfeat.methods.base`: :class:`MethodBase` (the trainer's hooks as no-ops),
  :func:`register`, :func:`from_constructor`.
- one module per method family: ``supervised``, ``moco`` (``moco_v1``, ``moco_v2``), ``kcl``,
  ``supcon``, ``tsc``, ``paco`` (PaCo, GPaCo), ``bcl``.

A method is a :class:`MethodBase` subclass whose constructor takes its parameter dataclass
(``params=``, or the fields as keyword arguments), plus one registry line::

    register("kcl", views=2, params=KCLParams, prefill_by_default=True, label="KCL")(
        from_constructor(KCL)
    )

The trainer and ``engine.build`` only look the name up in :data:`METHODS`; they never test a
method's name. Adding a method = one module + one registry line + one recipe + a row of
``docs/method-defaults.md`` + tests (docs/DESIGN.md has a worked example).
"""

from __future__ import annotations

from balfeat.methods.base import (
    TRAINER_FIELDS,
    Method,
    MethodBase,
    check_constructor,
    constructor_fields,
    from_constructor,
    register,
    resolve_params,
)
from balfeat.methods.bcl import BCL
from balfeat.methods.kcl import KCL
from balfeat.methods.moco import MoCo
from balfeat.methods.paco import GPaCo, PaCo
from balfeat.methods.params import MethodParams
from balfeat.methods.registry import (
    METHODS,
    MethodEntry,
    get_method,
    method_names,
    method_params,
)
from balfeat.methods.supcon import SupConBatch, SupConQueue
from balfeat.methods.supervised import Supervised
from balfeat.methods.tsc import TSC

__all__ = [
    "BCL",
    "KCL",
    "METHODS",
    "TRAINER_FIELDS",
    "TSC",
    "GPaCo",
    "Method",
    "MethodBase",
    "MethodEntry",
    "MethodParams",
    "MoCo",
    "PaCo",
    "SupConBatch",
    "SupConQueue",
    "Supervised",
    "check_constructor",
    "constructor_fields",
    "from_constructor",
    "get_method",
    "method_names",
    "method_params",
    "register",
    "resolve_params",
]
