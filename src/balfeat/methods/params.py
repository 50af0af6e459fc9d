"""The ``method`` section of a pre-training config: one typed parameter dataclass per method.

``method.name`` selects a registered method (:data:`balfeat.methods.METHODS`) and with it the
section's dataclass: ``method.posk`` exists when ``method.name`` is ``kcl`` or ``tsc`` and is an
error ("moco_v2 has no parameter 'posk'") for MoCo. Each field declares its range
(:func:`balfeat.typed_config.bounds`) or its choices (``Literal``), so a value is checked once,
where the config is read or where a method is built from Python
(:func:`balfeat.methods.base.resolve_params`).

**A setting is declared once, here.** A method's constructor takes its dataclass
(``KCL(backbone, params=KCLParams(posk=6))``, or the same fields as keyword arguments,
``KCL(backbone, posk=6)``); it has no defaults of its own. The default of every field of a
registered dataclass is that method's reference value; ``docs/method-defaults.md`` gives each
with its source, and ``tests/methods/test_method_defaults.py`` fails when the two part.

The shared families, each a base of the next (their defaults are MoCo v1's; each registered
dataclass sets its own method's values):

- :class:`MethodParams`: ``name`` only (a method without parameters).
- :class:`HeadParams`: a projection head and a temperature (``dim``, ``T``, ``mlp``).
- :class:`QueueParams`: a momentum key encoder and a key queue (``K``, ``m``, ``shuffle_bn``,
  ``bn_splits``, ``prefill``).
- :class:`PositivesParams`: same-class queue keys as positives (``posk``, ``selection``): KCL,
  TSC.

Paper letters are kept where the papers use them (K, m, T, posk, α, β, γ), each with its meaning
at the definition.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from balfeat.errors import BalfeatError
from balfeat.methods.registry import get_method
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
        return get_method(self.name).views

    def wants_prefill(self, by_default: bool) -> bool:
        """Whether the trainer fills the method's queue before the first step (no queue: no)."""
        return False


@dataclass
class SupervisedParams(MethodParams):
    """``sl``: supervised cross-entropy.

    Attributes:
        freeze_backbone: train the classifier head alone (the re-training of BalFeat's
            ``main_sl.py --pretrained``: every parameter but ``fc`` gets ``requires_grad=False``).
        frozen_bn: with ``freeze_backbone``, also keep the backbone's BatchNorm layers in eval
            mode (running statistics frozen, a linear probe). False: they stay in training mode
            and re-estimate their statistics on the re-training data, as the authors'
            (``main_sl.py:76-82`` only sets ``requires_grad``; ``main_sl.py:268-272`` calls
            ``model.train()``), which gives SL an adaptation the MoCo/KCL probes (eval mode,
            ``main_lincls.py:242``) do not get.
    """

    name: str = "sl"
    freeze_backbone: bool = False
    frozen_bn: bool = False


@dataclass
class HeadParams(MethodParams):
    """A projection head with an L2-normalised embedding and a softmax temperature.

    Attributes:
        dim: embedding size of the projection head.
        T: softmax temperature (paper letter T).
        mlp: an MLP projection head (MoCo v2 and most successors) instead of a linear one
            (MoCo v1, KCL).
    """

    dim: int = field(default=128, metadata=bounds(ge=1))
    T: float = field(default=0.07, metadata=bounds(gt=0))
    mlp: bool = False


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
            (what the registered method's authors do: KCL only; TSC's and SupCon-queue's
            authors start from random keys labelled -1, ``moco/builder.py:224-225`` of
            github:LTH14/targeted-supcon, PaCo's and GPaCo's from random keys with random
            labels), ``always`` or ``never``.
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
class MoCoParams(QueueParams):
    """``moco_v1``: MoCo v1 (He et al. 2020): T 0.07, a linear head."""

    name: str = "moco_v1"


@dataclass
class MoCoV2Params(MoCoParams):
    """``moco_v2``: MoCo v2 (Chen et al. 2020): MoCo v1 with T 0.2 and an MLP head."""

    name: str = "moco_v2"
    T: float = field(default=0.2, metadata=bounds(gt=0))
    mlp: bool = True


@dataclass
class PositivesParams(QueueParams):
    """A queue whose same-class keys are positives (KCL and TSC).

    Attributes:
        posk: positives per anchor (paper's k: same-class queue keys per query).
        selection: which same-class keys: ``random`` (uniform among them) or ``queue_order``
            (the first ``posk`` in queue index order).
    """

    posk: int = field(default=6, metadata=bounds(ge=0))
    selection: Literal["random", "queue_order"] = "random"


@dataclass
class KCLParams(PositivesParams):
    """``kcl``: k-positive contrastive learning (MoCo v1 with a label queue).

    Attributes:
        loss_type: ``v1`` (the reference's default), ``v2`` or ``sum``.
    """

    name: str = "kcl"
    loss_type: Literal["v1", "v2", "sum"] = "v1"


@dataclass
class SupConParams(QueueParams):
    """``supcon``: SupCon against the labelled key queue (the TSC authors' baseline), MLP head."""

    name: str = "supcon"
    mlp: bool = True


@dataclass
class SupConBatchParams(HeadParams):
    """``supcon_inbatch``: SupCon in the batch (Khosla et al. 2020), MLP head."""

    name: str = "supcon_inbatch"
    mlp: bool = True


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
