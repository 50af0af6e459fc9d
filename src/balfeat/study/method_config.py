"""A study's methods: each a :class:`StudyMethod` entry of ``StudySpec.methods`` (pre-training
config sections merged over the study's ``base``) and the pre-training config of its cells
(:func:`cell_config`), built and checked once when the study is validated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from balfeat.errors import ConfigError
from balfeat.typed_config import merge_mapping

if TYPE_CHECKING:
    from balfeat.study.spec import StudySpec

#: Sections of the pre-training config: an override starting with one goes to every cell.
PRETRAIN_SECTIONS = ("data", "model", "method", "optim", "run")


@dataclass
class StudyMethod:
    """One method of a study: its pre-training config, as sections merged over the study's
    ``base`` (a key that is not a section is refused when the study file is read, with the
    closest one; the values are checked when the spec is validated, naming the entry).

    Attributes:
        defaults: pre-training config file(s) read first, under ``base`` (paths as
            ``balfeat pretrain --config`` takes them), e.g. a recipe of ``configs/base/``.
        data: ``data`` keys of the pre-training config (:mod:`balfeat.engine.config`).
        model: ``model`` keys.
        method: ``method`` keys (``name`` selects the method; its parameters follow).
        optim: ``optim`` keys.
        run: ``run`` keys (``run.seed`` and ``run.output_dir`` are the study's, per cell).
    """

    defaults: str | list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        """The ``defaults`` files, as a list."""
        return [self.defaults] if isinstance(self.defaults, str) else list(self.defaults)

    def sections(self) -> dict[str, dict[str, Any]]:
        """The sections it sets (those given), as a pre-training config mapping."""
        return {name: getattr(self, name) for name in PRETRAIN_SECTIONS if getattr(self, name)}


def typed_methods(methods: Mapping[str, Any]) -> dict[str, StudyMethod]:
    """Each method as :class:`StudyMethod`; a plain mapping (a spec built in Python) is read
    as its sections, ``None`` as no section.

    Raises:
        ConfigError: not a mapping, or a key that is not a section (with the closest one),
            naming the method.
    """
    out: dict[str, StudyMethod] = {}
    for mname, entry in methods.items():
        if isinstance(entry, StudyMethod):
            out[mname] = entry
        elif entry is None or isinstance(entry, Mapping):
            out[mname] = merge_mapping(StudyMethod(), entry or {}, f"study methods.{mname}")
        else:
            raise ConfigError(
                f"methods.{mname} must be a mapping of pre-training config sections "
                f"(defaults, data, model, method, optim, run), got {entry!r}"
            )
    return out


def cell_config(
    spec: StudySpec, method: str, overrides: Sequence[str] = (), source: str = "the study"
) -> Any:
    """The pre-training :class:`~balfeat.engine.config.Config` of ``method`` in this study:
    defaults (or the pre-training config files the method's ``defaults:`` names, paths as
    ``balfeat pretrain --config`` takes them), ``base``, the method's sections, then the cell
    overrides (checked). A ``method.KEY`` override applies to the methods whose section has
    KEY (:func:`~balfeat.engine.config.overrides_for`). ``source`` names the study in errors.

    Raises:
        ConfigError: naming ``source``, the method's entry and the key."""
    from balfeat.engine.config import (
        Config,
        apply_overrides,
        load_config,
        merge_mapping,
        overrides_for,
        validate,
    )

    if not isinstance(spec.base, Mapping):
        raise ConfigError("study key 'base' must be a mapping of pre-training config sections")
    entry = typed_methods({method: spec.methods[method]})[method]
    where, base = f"{source}, methods.{method}", f"{source}, base"
    try:
        cfg = load_config(entry.files) if entry.files else Config()  # the recipe file(s) first
        merge_mapping(cfg, spec.base, base)
        merge_mapping(cfg, entry.sections(), where)
        apply_overrides(cfg, overrides_for(cfg.method.name, overrides))
        if spec.is_job_study:  # checked as the cell's job will run it (study.jobs sets the same)
            cfg.data.dataset = "imagenet" if spec.dataset == "image-folder" else spec.dataset
        validate(cfg)
    except ConfigError as err:
        if where in str(err) or base in str(err):  # named already
            raise
        raise ConfigError(f"{where}: {err}") from None
    return cfg
