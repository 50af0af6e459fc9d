"""The typed config loader (balfeat.typed_config) on toy dataclasses: sections, variants,
dict[str, Dataclass] entries, ranges and choices, path kinds, overrides, YAML checks, hints and
layered ``defaults:`` files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from balfeat.errors import ConfigError
from balfeat.typed_config import (
    apply_overrides,
    bounds,
    check_paths,
    closest_key,
    entries,
    from_dict,
    load_typed,
    load_yaml_text,
    merge_mapping,
    path_kind,
    to_dict,
    variant,
)
from balfeat.typed_config.schema import check_fields, field_docs


@dataclass
class Optim:
    """Optimisation.

    Attributes:
        epochs: passes over the data.
        base_lr: learning rate at batch 256;
            raise it with the batch.
    """

    epochs: int = field(default=10, metadata=bounds(ge=1))
    base_lr: float = field(default=0.1, metadata=bounds(gt=0))
    schedule: Literal["step", "cosine"] = "step"
    milestones: list[int] = field(default_factory=list, metadata=bounds(ge=1))


@dataclass
class Plain:
    name: str = "plain"
    width: int = field(default=4, metadata=bounds(ge=1))


@dataclass
class Queued(Plain):
    name: str = "queued"
    K: int = field(default=64, metadata=bounds(ge=1))


SECTIONS: dict[str, type] = {"plain": Plain, "queued": Queued}


def section_of(name: str) -> Plain:
    if name not in SECTIONS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(SECTIONS)}")
    return SECTIONS[name]()  # type: ignore[no-any-return]


@dataclass
class Probe:
    lr: float = field(default=30.0, metadata=bounds(gt=0))
    protocol: Literal["fast", "reference"] = "fast"
    passes: int = field(default=5, metadata=bounds(ge=0))


def study_probe() -> Probe:
    return Probe(passes=0)


@dataclass
class Job:
    optim: Optim = field(default_factory=Optim)
    method: Plain = field(
        default_factory=Plain, metadata=variant("name", section_of, lambda: SECTIONS)
    )
    probes: dict[str, Probe] = field(default_factory=lambda: {"fast": Probe()})
    study_probes: dict[str, Probe] = field(default_factory=dict, metadata=entries(study_probe))
    split: str = field(default="", metadata=path_kind("file"))
    out: str = field(default="", metadata=path_kind("out_dir"))


def test_nested_sections_from_a_mapping_and_overrides() -> None:
    job = merge_mapping(Job(), {"optim": {"epochs": 3, "schedule": "cosine"}}, "test")
    apply_overrides(job, ["optim.base_lr=0.5", "optim.milestones=[1, 2]"])
    assert (job.optim.epochs, job.optim.schedule, job.optim.base_lr) == (3, "cosine", 0.5)
    assert job.optim.milestones == [1, 2]
    assert from_dict(Job, to_dict(job)) == job


def test_a_variant_section_switches_class_keeping_shared_values() -> None:
    job = apply_overrides(Job(), ["method.width=8", "method.name=queued", "method.K=16"])
    assert isinstance(job.method, Queued)
    assert (job.method.width, job.method.K) == (8, 16)
    with pytest.raises(ConfigError, match=r"'plain' has no parameter 'K'.*belongs to queued"):
        apply_overrides(Job(), ["method.K=16"])
    # In a mapping the selector is applied first, whatever its position.
    job = merge_mapping(Job(), {"method": {"K": 8, "name": "queued"}}, "test")
    assert isinstance(job.method, Queued) and job.method.K == 8


def test_dict_of_dataclass_entries_are_typed() -> None:
    job = merge_mapping(Job(), {"probes": {"a": {"lr": 1.0}, "b": None}}, "test")
    assert job.probes == {"a": Probe(lr=1.0), "b": Probe()}  # the mapping replaces the default
    apply_overrides(job, ["probes.a.protocol=reference", "probes.c.lr=2", "probes.b={passes: 1}"])
    assert job.probes["a"] == Probe(lr=1.0, protocol="reference")
    assert job.probes["c"] == Probe(lr=2.0)  # a new entry starts from the defaults
    assert job.probes["b"].passes == 1
    # an entries() factory gives new entries their own starting values
    apply_overrides(job, ["study_probes.x.lr=3"])
    assert job.study_probes["x"] == Probe(lr=3.0, passes=0)
    assert from_dict(Job, to_dict(job)) == job


def test_dict_entry_errors_name_the_whole_key_and_the_closest_one() -> None:
    with pytest.raises(ConfigError, match=r"'probes\.fast\.lrr'.*did you mean 'probes\.fast\.lr'"):
        merge_mapping(Job(), {"probes": {"fast": {"lrr": 1}}}, "study.yaml")
    with pytest.raises(ConfigError, match=r"probes\.fast\.lr must be > 0, got -1.*from"):
        apply_overrides(Job(), ["probes.fast.lr=-1"])
    with pytest.raises(ConfigError, match=r"probes\.fast\.protocol.*one of 'fast', 'reference'"):
        apply_overrides(Job(), ["probes.fast.protocol=slow"])
    with pytest.raises(ConfigError, match=r"'probes\.fast'.*is a section"):
        merge_mapping(Job(), {"probes": {"fast": 3}}, "test")
    with pytest.raises(ConfigError, match=r"'probes'.*mapping of names"):
        merge_mapping(Job(), {"probes": [1]}, "test")


def test_bounds_and_literal_choices() -> None:
    with pytest.raises(ConfigError, match=r"optim\.epochs must be >= 1, got 0"):
        apply_overrides(Job(), ["optim.epochs=0"])
    with pytest.raises(ConfigError, match=r"optim\.base_lr must be a finite number > 0, got nan"):
        apply_overrides(Job(), ["optim.base_lr=.nan"])
    with pytest.raises(ConfigError, match=r"optim\.milestones\[1\] must be >= 1"):
        apply_overrides(Job(), ["optim.milestones=[2, 0]"])
    with pytest.raises(ConfigError, match=r"'optim\.schedule'.*one of 'step', 'cosine'"):
        apply_overrides(Job(), ["optim.schedule=linear"])
    with pytest.raises(ConfigError, match=r"'optim\.epochs'.*expected int, got 'many'"):
        apply_overrides(Job(), ["optim.epochs=many"])


def test_integers_beyond_64_bits_are_refused_at_the_door() -> None:
    """torch.manual_seed and numpy arrays hold 64-bit integers; a larger seed or count failed
    deep inside them (a raw OverflowError) or silently meant nothing."""
    big = "9" * 25
    with pytest.raises(ConfigError, match=rf"'optim\.epochs'.*{big} does not fit in a 64-bit"):
        apply_overrides(Job(), [f"optim.epochs={big}"])
    with pytest.raises(ConfigError, match=r"'optim\.milestones\[0\]'.*does not fit in a 64-bit"):
        apply_overrides(Job(), [f"optim.milestones=[{big}]"])
    assert apply_overrides(Job(), [f"optim.epochs={2**63 - 1}"]).optim.epochs == 2**63 - 1


def test_check_fields_checks_a_directly_built_instance() -> None:
    opt = Optim(epochs=2, base_lr=1)  # type: ignore[arg-type]
    check_fields(opt)
    assert isinstance(opt.base_lr, float)
    with pytest.raises(ConfigError, match=r"probe epochs must be >= 1, got 0"):
        check_fields(Optim(epochs=0), "probe ")
    with pytest.raises(ConfigError, match=r"unknown probe schedule 'linear'; use 'step' or"):
        check_fields(Optim(schedule="linear"), "probe ")  # type: ignore[arg-type]


def test_path_kinds(tmp_path: Path) -> None:
    job = Job(split=str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match=r"split: file .*missing\.txt' does not exist"):
        check_paths(job)
    (tmp_path / "a_file").write_text("x")
    job = Job(out=str(tmp_path / "a_file"))
    with pytest.raises(ConfigError, match=r"out: .* is a file, expected a directory"):
        check_paths(job)
    check_paths(Job(out=str(tmp_path / "new" / "dir")))  # creatable: fine
    check_paths(Job())  # "" is "not given"


def test_a_nul_character_in_a_path_key_is_a_config_error(tmp_path: Path) -> None:
    """It reached os.mkdir/open and failed there as a raw ValueError (embedded null byte)."""
    cfg = tmp_path / "job.yaml"
    cfg.write_text('out: "/tmp/a\\0b"\n')
    with pytest.raises(ConfigError, match=r"out: .* holds a NUL character"):
        load_typed(Job, [str(cfg)], [])


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"key 'epochs' is given twice.*line 1 and line 2"):
        load_yaml_text("epochs: 1\nepochs: 2\n")
    f = tmp_path / "job.yaml"
    f.write_text("optim:\n  epochs: 100\n  base_lr: 0.1\n  epochs: 1\n")
    with pytest.raises(ConfigError, match=r"job\.yaml.*'epochs' is given twice"):
        load_typed(Job, f)
    # merge keys (<<: *anchor) may be overridden: that is what they are for
    assert load_yaml_text("a: &x {k: 1}\nb:\n  <<: *x\n  k: 2\n") == {"a": {"k": 1}, "b": {"k": 2}}


def test_closest_key_hints() -> None:
    assert closest_key("optim.epoch", Job) == "did you mean 'optim.epochs'?"
    assert "optim.base_lr" in closest_key("base_lrr", Job)
    with pytest.raises(ConfigError, match=r"unknown config key 'optm\.epochs'.*'optim\.epochs'"):
        apply_overrides(Job(), ["optm.epochs=3"])


def test_layered_defaults_files(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "optim.yaml").write_text("optim: {epochs: 50, base_lr: 0.3}\n")
    (tmp_path / "base" / "probe.yaml").write_text("probes: {fast: {lr: 2.0}}\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("defaults: [base/optim.yaml, base/probe.yaml]\noptim: {epochs: 5}\n")
    job = load_typed(Job, recipe, ["probes.fast.passes=1"])
    assert (job.optim.epochs, job.optim.base_lr) == (5, 0.3)  # the recipe wins over its base
    assert job.probes == {"fast": Probe(lr=2.0, passes=1)}  # overrides come last
    loop = tmp_path / "loop.yaml"
    loop.write_text("defaults: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_typed(Job, loop)
    missing = tmp_path / "m.yaml"
    missing.write_text("defaults: [nope.yaml]\n")
    with pytest.raises(ConfigError, match=r"defaults entry 'nope\.yaml' does not exist"):
        load_typed(Job, missing)


def test_field_docs_read_the_attributes_section() -> None:
    docs = field_docs(Optim)
    assert docs["epochs"] == "passes over the data."
    assert docs["base_lr"] == "learning rate at batch 256; raise it with the batch."
