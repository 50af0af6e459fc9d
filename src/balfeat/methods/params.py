"""The ``method`` section of a pre-training config: one typed parameter dataclass per method.

``method.name`` selects a registered method (:data:`balfeat.methods.METHODS`) and with it the
section's dataclass: ``method.posk`` exists when ``method.name`` is ``kcl`` or ``tsc`` and is an
error ("moco_v2 has no parameter 'posk'") for MoCo. Each field declares its range
(:func:`balfeat.typed_config.bounds`) or its choices (``Literal``), so a value is checked once,
where the config is read; the method's constructor receives it through the registry builder
(``tests/methods/test_registry.py`` checks that every field reaches the constructor).

The shared families, each a base of the next:

- :class:`MethodParams`: ``name`` only (a method without parameters).
- :class:`HeadParams`: a projection head and a temperature (``dim``, ``T``, ``mlp``): in-batch
  SupCon, GPaCo, BCL.
- :class:`QueueParams`: a momentum key encoder and a key queue (``K``, ``m``, ``shuffle_bn``,
  ``bn_splits``, ``prefill``): MoCo v1/v2, SupCon (queue), PaCo, and KCL/TSC.

Paper letters are kept where the papers use them (K, m, T, posk, α, β, γ), each with its meaning
at the definition.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from balfeat.errors import BalfeatError
from balfeat.typed_config import bounds, check_range


@dataclass
class MethodParams:
    """The part every method's section has.

    Attributes:
        name: the registered method (``balfeat.methods.METHODS``).
    """

    name: str = "moco_v2"

    @property
    def views(self) -> int:
        """Crops per image, as the registered method declares (1 for SL, 2 for MoCo/KCL)."""
        from balfeat.methods import get_method

        return get_method(self.name).views

    def wants_prefill(self, by_default: bool) -> bool:
        """Whether the trainer fills the method's queue before the first step (no queue: no)."""
        return False


@dataclass
class SupervisedParams(MethodParams):
    """``sl``: supervised cross-entropy.

    Attributes:
        freeze_backbone: train the classifier head alone (linear-probe style fine-tuning).
    """

    name: str = "sl"
    freeze_backbone: bool = False


@dataclass
class HeadParams(MethodParams):
    """A projection head with an L2-normalised embedding and a softmax temperature.

    Attributes:
        dim: embedding size of the projection head.
        T: softmax temperature (paper letter T; 0.07 for MoCo v1, 0.2 for v2 and KCL).
        mlp: an MLP projection head (MoCo v2 / KCL) instead of a linear one (MoCo v1).
    """

    dim: int = field(default=128, metadata=bounds(ge=1))
    T: float = field(default=0.2, metadata=bounds(gt=0))
    mlp: bool = True


@dataclass
class QueueParams(HeadParams):
    """A momentum key encoder with a queue of past keys (MoCo and the methods built on it).

    Attributes:
        K: queue length (paper letter K: keys kept from past batches).
        m: momentum of the key encoder (paper letter m: key weights = m * key + (1-m) * query).
        shuffle_bn: shuffle BN across ranks (SplitBatchNorm in one process).
        bn_splits: splits of SplitBatchNorm when not distributed.
        prefill: fill the queue with keys of the first batches before the first step, as the
            reference KCL does (so the label queue holds real classes from step 1): ``auto``
            (what the registered method asks for: KCL, TSC, SupCon, PaCo), ``always`` or
            ``never``.
    """

    K: int = field(default=65536, metadata=bounds(ge=1))
    m: float = field(default=0.999, metadata=bounds(ge=0, le=1))
    shuffle_bn: bool = True
    bn_splits: int = field(default=8, metadata=bounds(ge=1))
    prefill: Literal["auto", "always", "never"] = "auto"

    def wants_prefill(self, by_default: bool) -> bool:
        """``prefill=always``, or ``auto`` where the registered method prefills by default."""
        return self.prefill == "always" or (self.prefill == "auto" and by_default)


@dataclass
class KCLParams(QueueParams):
    """``kcl``: k-positive contrastive learning (MoCo with a label queue).

    Attributes:
        posk: positives per anchor (paper's k: same-class queue keys per query).
        loss_type: ``v1`` (the reference's default), ``v2`` or ``sum``.
        selection: which same-class keys: ``random`` (the reference) or ``queue_order``.
    """

    name: str = "kcl"
    posk: int = field(default=6, metadata=bounds(ge=0))
    loss_type: Literal["v1", "v2", "sum"] = "v1"
    selection: Literal["random", "queue_order"] = "random"


def check_arguments(params: type[MethodParams], owner: str, **values: Any) -> None:
    """Check a method constructor's arguments against the ranges and choices its parameter
    dataclass declares: the one declaration behind both the config check (when the ``method``
    section is read) and the constructor check (a method built from Python).

    Args:
        params: the method's parameter dataclass.
        owner: the method's name in messages (``MoCo``).
        **values: argument name -> value, each a field of ``params``.

    Raises:
        BalfeatError: naming the argument, its value and the declared range or choices.
    """
    fields = {f.name: f for f in dataclasses.fields(params)}
    hints = typing.get_type_hints(params)
    for name, value in values.items():
        f = fields[name]
        choices = typing.get_args(hints[name]) if typing.get_origin(hints[name]) is Literal else ()
        if choices and value not in choices:
            raise BalfeatError(
                f"{owner} argument {name}={value!r} is unknown; use one of "
                f"{', '.join(repr(c) for c in choices)}"
            )
        check_range(f"{owner} argument {name}", value, f.metadata)
