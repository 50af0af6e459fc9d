"""The study file: a typed :class:`StudySpec` read by :mod:`balfeat.typed_config`.

A study file (YAML, ``balfeat study FILE [key=value ...]``) describes a grid of (method x
imbalance set x probe) cells, each run for every seed::

    name: fmnist-imbalance            # report title
    output_dir: runs/fmnist-study     # cells/, results.csv, report.md go here
    dataset: fashion-mnist            # fashion-mnist | synthetic | array (in-memory data)
    root: ""                          # data folder / .npz file ("" = default location)
    seed: 0                           # which class gets which count (fixed for the study)
    seeds: [0, 1, 2]                  # run seeds (or a number N = seeds 0..N-1)
    family:                           # the imbalance family of pre-training sets
      total: 5000                     # images per set (the same for every set)
      sets: {balanced: 1, exp10: 10, exp100: 100}   # name: n_max / n_min (exponential profile)
    probe_per_class: 300              # balanced probe training set: images per class
    test_max: 0                       # test images (0 = the whole test set)
    grouping: thirds                  # many/medium/few grouping (metrics.parse_grouping)
    groups: ""                        # a counts file fixing the groups ("" = most imbalanced set)
    base:                             # pretrain config (balfeat.engine.config) for every cell
      model: {backbone: resnet20}
      optim: {epochs: 2, batch_size: 128}
    methods:                          # method id: config mapping merged over base
      sl: {method: {name: sl}, data: {augmentation: supervised}, optim: {base_lr: 0.1}}
      moco_v2: {method: {name: moco_v2, K: 4096}}
    probes:                           # probe label: balfeat.classify.job.ProbeSettings fields
      fast: {epochs: 30, lr: 1.0, schedule: cosine}   # protocol: fast (the default), passes: 0

A probe's name is its label (its results folder and table row); what it runs is its fields, the
``protocol`` among them: a probe named ``reference`` without ``protocol: reference`` runs the fast
protocol, and its results say so. The study's probe training set is its balanced in-memory images
without augmentation, so ``passes`` is 0 there (another pass would repeat the first).

A file may start with ``defaults: [other_study.yaml]`` (layered, as every balfeat config).

Overrides on the command line: a key of the study (``seeds=3``, ``family.total=2000``,
``output_dir=x``) sets that key; a key of the pre-training config (``optim.epochs=1``,
``model.backbone=resnet8``) is applied to every cell's pre-training config, after ``base`` and
the method's mapping. ``run.seed`` and ``run.output_dir`` are refused there: a study sets them per
cell from ``seeds`` and ``output_dir``.

**Seeds.** Seed ``s`` of a cell seeds its pre-training (``run.seed = s``: model initialisation,
data order, augmentation), the draw of which images form each pre-training set (the class counts
are fixed by ``seed``), the probe's training set and the probe. The test images are the same for
every seed. Changes from the balanced set to a long-tailed one are paired by seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from balfeat.classify.job import ProbeSettings
from balfeat.errors import BalfeatError, ConfigError
from balfeat.study.method_config import PRETRAIN_SECTIONS, StudyMethod, cell_config, typed_methods
from balfeat.typed_config import bounds, entries, load_typed, parse_override, path_kind

StudyDataset = Literal[
    "fashion-mnist", "synthetic", "array", "image-folder", "cifar10-lt", "cifar100-lt"
]
#: Datasets whose cells are ``balfeat pretrain`` / ``balfeat probe`` jobs (balfeat.study.jobs).
JOB_DATASETS = ("image-folder", "cifar10-lt", "cifar100-lt")

#: Pre-training config keys a study sets per cell and so refuses as overrides.
CELL_KEYS = ("run.seed", "run.output_dir")


@dataclass
class FamilySpec:
    """The imbalance family of pre-training sets.

    Attributes:
        total: images per set (the same for every set of the family).
        sets: set name -> imbalance ratio n_max / n_min (1 = balanced) of an exponential profile.
    """

    total: int = field(default=5000, metadata=bounds(ge=1))
    sets: dict[str, float] = field(
        default_factory=lambda: {"balanced": 1.0, "exp10": 10.0, "exp100": 100.0}
    )


@dataclass
class FolderSpec:
    """The sets of an ``image-folder`` study: split files of one image folder, as in the paper.

    Attributes:
        root: the folder the set split files are relative to (ImageNet's ``train/``).
        split_dir: where relative split-file names are looked up (``""`` = as given).
        sets: set name -> split file of its pre-training images (``path label`` lines).
        grouping_set: the set whose counts fix many/medium/few for every row (the paper: LT);
            ``""`` = the last set.
        probe_train: split file of the balanced probe training set; ``""`` = every image under
            ``probe_root`` (ImageFolder layout).
        probe_root: the folder ``probe_train`` is relative to (``""`` = ``root``).
        test: split file of the test images (``""`` = every image under ``test_root``).
        test_root: the folder ``test`` is relative to (``""`` = ``root``).
        class_set: the class-split protocol: a class-set file (set A); every set is restricted to
            A for pre-training, and each probe runs on A and on its complement B (``""`` = off).
        set_sizes: set name -> images, used by ``--plan`` when the set's split file is absent
            (planning on a machine without the data).
        num_classes: classes, used by ``--plan`` when the split files are absent (0 = 1000).
        published: set name -> the dataset its images are in the published table
            (``lt: imagenet-lt``), which a report with ``published: true`` prints beside the
            set's rows; a set not named has no published rows.
    """

    root: str = ""
    split_dir: str = ""
    sets: dict[str, str] = field(default_factory=dict)
    grouping_set: str = ""
    probe_train: str = ""
    probe_root: str = ""
    test: str = ""
    test_root: str = ""
    class_set: str = ""
    set_sizes: dict[str, int] = field(default_factory=dict)
    num_classes: int = field(default=0, metadata=bounds(ge=0))
    published: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> str:
        """A split file's path: ``name`` under ``split_dir`` unless absolute or empty."""
        if not name or not self.split_dir or Path(name).is_absolute():
            return name
        return str(Path(self.split_dir) / name)


def study_probe(**values: Any) -> ProbeSettings:
    """A study's probe: :class:`ProbeSettings` with no augmented passes (the study's probe images
    are not augmented) and ``values``."""
    return ProbeSettings(**{"passes": 0, **values})


@dataclass
class StudySpec:
    """A parsed study file (see the module docstring for the YAML form).

    Attributes:
        name: report title.
        description: Markdown placed under the title of the report.
        output_dir: where cells, tables, figures and the report go.
        dataset: in-memory dataset of the study.
        root: data folder (fashion-mnist) or ``.npz`` file (array); ``""`` = default.
        seed: seed of the class -> count assignment of the family (fixed for the study).
        seeds: run seeds, a list or a number N (= ``[0, ..., N-1]``); empty = ``[seed]``.
        family: the pre-training sets.
        probe_per_class: images per class of the balanced probe training set.
        test_max: test images used (0 = all).
        grouping: many/medium/few rule (``thirds``, ``default``, ``reference``, ``MANY,FEW``).
        groups: a file of per-class counts (one integer per line, class order) that fixes the
            groups; ``""`` = the counts of the most imbalanced set of the family.
        base: pre-training config mapping for every cell.
        methods: method id -> its :class:`StudyMethod`: pre-training config sections merged
            over ``base`` (its ``defaults: [FILE]`` names pre-training config files read first,
            under ``base``).
        probes: probe label -> its :class:`~balfeat.classify.job.ProbeSettings` (see
            :func:`study_probe`); the label names the results, the fields decide the run.
        synthetic_size: images of the synthetic dataset.
        image_size: side of the synthetic images.
        knn_every: epochs between online kNN evaluations during pre-training (0 = off).
        published: print the published numbers of the study's methods (their authors' datasets,
            from ``balfeat/study/published_results.yaml``) in the report, after its results.
        control: add a control row per (set, seed): the untrained network (the first method's
            architecture and initial weights), BatchNorm statistics adapted on the set, the same
            probes (:mod:`balfeat.study.control`); the report gives each method's gain over it.
    """

    name: str = "balfeat study"
    description: str = ""
    output_dir: str = field(default="runs/study", metadata=path_kind("out_dir"))
    dataset: StudyDataset = "fashion-mnist"
    root: str = ""
    seed: int = field(default=0, metadata=bounds(ge=0))
    seeds: int | list[int] = field(default_factory=list)
    family: FamilySpec = field(default_factory=FamilySpec)
    probe_per_class: int = field(default=300, metadata=bounds(ge=1))
    test_max: int = field(default=0, metadata=bounds(ge=0))
    grouping: str = "thirds"
    groups: str = field(default="", metadata=path_kind("file"))
    base: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, StudyMethod] = field(default_factory=dict)
    probes: dict[str, ProbeSettings] = field(
        default_factory=lambda: {"fast": study_probe()}, metadata=entries(study_probe)
    )
    synthetic_size: int = field(default=2000, metadata=bounds(ge=1))
    image_size: int = field(default=28, metadata=bounds(ge=8))
    knn_every: int = field(default=0, metadata=bounds(ge=0))
    published: bool = False
    control: bool = True
    folder: FolderSpec = field(default_factory=FolderSpec)
    launcher: Literal["local", "torchrun"] = "local"
    nproc_per_node: int = field(default=1, metadata=bounds(ge=1))

    @property
    def is_job_study(self) -> bool:
        """Whether its cells are ``balfeat pretrain``/``probe`` jobs (:mod:`balfeat.study.jobs`)."""
        return self.dataset in JOB_DATASETS

    @property
    def run_seeds(self) -> list[int]:
        """The seeds every cell runs with."""
        if isinstance(self.seeds, int):
            return list(range(self.seeds))
        return list(self.seeds) or [self.seed]

    @property
    def total(self) -> int:
        """Images per pre-training set (``family.total``)."""
        return self.family.total

    @property
    def sets(self) -> dict[str, float]:
        """Set name -> imbalance ratio (``family.sets``); an image-folder study's sets (their
        ratios are read from the split files when the cell runs, 0 here)."""
        if self.dataset == "image-folder":
            return {name: 0.0 for name in self.folder.sets}
        return self.family.sets


def validate_study(
    spec: StudySpec, cell_overrides: Sequence[str] = (), source: str = "the study"
) -> None:
    """Check what types and ranges cannot: a non-empty grid, valid seeds, ratios, every method's
    pre-training config and every probe's options (before hours of training).

    ``source`` names the study (its file) in the errors of a method's pre-training config.

    Raises:
        ConfigError: naming the study key.
    """

    from balfeat.engine.config import overrides_for

    if isinstance(spec.seeds, int) and spec.seeds < 1:
        raise ConfigError(f"seeds must be a number >= 1 or a list of seeds, got {spec.seeds}")
    seeds = spec.run_seeds
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct non-negative integers, got {seeds}")
    if spec.dataset == "image-folder":
        check_folder(spec.folder)
    elif not spec.family.sets:
        raise ConfigError("family.sets is empty; give e.g. {balanced: 1, exp100: 100}")
    if spec.launcher == "torchrun" and not spec.is_job_study:
        raise ConfigError(
            f"launcher: torchrun runs `balfeat pretrain` jobs, which need a dataset they can "
            f"read from a config (image-folder, cifar10-lt, cifar100-lt); {spec.dataset!r} "
            "sets are drawn in memory by the study: use launcher: local"
        )
    for name, ratio in ({} if spec.dataset == "image-folder" else spec.family.sets).items():
        check_name("family.sets", name)
        if not math.isfinite(ratio) or ratio < 1:
            raise ConfigError(
                f"family.sets.{name} must be a finite ratio n_max/n_min >= 1, got {ratio}"
            )
    if not spec.methods:
        raise ConfigError(
            "the study lists no methods; add e.g. methods: {sl: {method: {name: sl}}}"
        )
    if not spec.probes:
        raise ConfigError("the study lists no probes; add e.g. probes: {fast: {}}")
    for mname in spec.methods:
        check_name("methods", mname)
        if mname == "control":  # the rows of the untrained network (study.control)
            raise ConfigError(
                "methods.control: 'control' names the untrained-network rows; rename the method"
            )
    for pname in spec.probes:
        check_name("probes", pname)
        if pname == "pretrain":  # the folder of the cell's pre-training run
            raise ConfigError("probes.pretrain: 'pretrain' names the cell's pre-training folder")
    from balfeat.evaluation.metrics import parse_grouping

    try:  # read when the report is written, hours later: check it now
        parse_grouping(spec.grouping)
    except BalfeatError as err:
        raise ConfigError(f"grouping: {err}") from None
    spec.probes = typed_probes(spec.probes)
    spec.methods = typed_methods(spec.methods)
    for pname, probe in spec.probes.items():
        probe.check(f"probes.{pname}.")
        if probe.passes and not spec.is_job_study:  # a job's probe reads augmented images
            raise ConfigError(
                f"probes.{pname}.passes={probe.passes}: a study's probe images are not augmented, "
                "so every pass would be the same; leave passes at 0"
            )
        if probe.decoupled:
            raise ConfigError(
                f"probes.{pname}.decoupled: a study runs no decoupled classifiers; use "
                "`balfeat probe --decoupled` on a cell's checkpoint"
            )
    used: set[str] = set()
    for where, run in [
        ("base", spec.base.get("run") if isinstance(spec.base, Mapping) else None),
        *((f"methods.{m}", c.run) for m, c in spec.methods.items()),
    ]:
        for key in CELL_KEYS:
            if isinstance(run, Mapping) and key.split(".")[1] in run:
                what = "seeds: [...]" if key == "run.seed" else "output_dir (or --out)"
                raise ConfigError(
                    f"{where}.{key}: a study sets {key} for every cell, so this value would be "
                    f"ignored; remove it and use {what}"
                )
    for mname in spec.methods:
        cfg = cell_config(spec, mname, cell_overrides, source=source)
        used.update(overrides_for(cfg.method.name, cell_overrides))
    unused = [o for o in cell_overrides if o not in used]
    if unused:  # a method.KEY that no method of the study has: a typo, not a no-op
        key = parse_override(unused[0])[0]
        raise ConfigError(
            f"override {unused[0]!r}: none of the study's methods ({', '.join(spec.methods)}) "
            f"has the parameter {key!r}"
        )


def check_folder(folder: FolderSpec) -> None:
    """Check an image-folder study's ``folder`` section: sets named, the grouping set one of them.

    Raises:
        ConfigError: naming the key.
    """
    if not folder.sets:
        raise ConfigError(
            "folder.sets is empty; give e.g. "
            "{lt0: imagenet_100k_train.txt, lt: ImageNet_LT_train.txt}"
        )
    for name in folder.sets:
        check_name("folder.sets", name)
    for key, name in [
        ("grouping_set", folder.grouping_set),
        *(("published", n) for n in folder.published),
    ]:
        if name and name not in folder.sets:
            raise ConfigError(
                f"folder.{key} {name!r} is not one of folder.sets ({', '.join(folder.sets)})"
            )
    if not folder.root:
        raise ConfigError("folder.root: give the folder the set split files are relative to")


def typed_probes(probes: Mapping[str, Any]) -> dict[str, ProbeSettings]:
    """Each probe as :class:`ProbeSettings`; a plain mapping (a spec built in Python) is read as
    its fields over :func:`study_probe`'s defaults.

    Raises:
        ConfigError: an unknown key (with the closest one) or a bad value, naming the probe.
    """
    import difflib

    out: dict[str, ProbeSettings] = {}
    for pname, pkw in probes.items():
        if isinstance(pkw, ProbeSettings):
            out[pname] = pkw
            continue
        if pkw is not None and not isinstance(pkw, Mapping):
            raise ConfigError(f"probes.{pname} must be a mapping of probe options")
        values = dict(pkw or {})
        known = sorted(ProbeSettings.__dataclass_fields__)
        for k in values:
            if k not in known:
                close = difflib.get_close_matches(str(k), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown probe option probes.{pname}.{k}{hint}")
        try:  # the values too, before any folder is written
            out[pname] = study_probe(**values)
        except BalfeatError as err:
            raise ConfigError(f"probes.{pname}: {err}") from None
    return out


#: Characters of a method, set or probe name: each becomes part of a folder name.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")


def check_name(section: str, name: object) -> None:
    """Refuse a method, set or probe name that cannot be a folder name of its own.

    A cell's folder is ``<method>__<set>``: a name with ``/`` would write outside the study, and
    one with ``__`` could give two cells the same folder (``a__b`` + ``c`` and ``a`` + ``b__c``).

    Raises:
        ConfigError: naming the section and the name.
    """
    text = str(name)
    if (
        not text
        or text in (".", "..")
        or not set(text) <= _NAME_CHARS
        or "__" in text
        or text.startswith(".")
    ):
        raise ConfigError(
            f"{section}: name {text!r} cannot name a folder; use letters, digits and '_', '-', "
            "'.', '+' (no '__', not starting with '.')"
        )


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split command-line ``key=value`` items into (study overrides, per-cell config overrides).

    Raises:
        ConfigError: a per-cell key the study sets itself (``run.seed``, ``run.output_dir``).
    """
    study: list[str] = []
    cells: list[str] = []
    for item in overrides:
        key = parse_override(item)[0]
        if key.split(".", 1)[0] in PRETRAIN_SECTIONS:
            if key in CELL_KEYS:
                what = "seeds=[...]" if key == "run.seed" else "output_dir=DIR (or --out)"
                raise ConfigError(
                    f"override {item!r}: a study sets {key} for every cell; use {what} instead"
                )
            cells.append(item)
        else:
            study.append(item)
    return study, cells


def load_study(
    path: str | Path | Sequence[str | Path] | None, overrides: Sequence[str] = ()
) -> tuple[StudySpec, list[str]]:
    """Read a study file (with its ``defaults:``) and overrides; validate everything.

    Returns:
        ``(spec, cell_overrides)``: the spec, and the overrides for every cell's pre-training.

    Raises:
        ConfigError: missing/unparsable file, unknown key (with the closest one), bad value.
    """
    study_over, cell_over = split_overrides(overrides)
    spec = load_typed(StudySpec, path, study_over)
    files = [path] if isinstance(path, (str, Path)) else list(path or [])
    named = "study file " + ", ".join(str(f) for f in files) if files else "the study"
    validate_study(spec, cell_over, source=named)
    return spec, cell_over


def study_from_mapping(
    data: Mapping[str, Any], source: str = "study", overrides: Sequence[str] = ()
) -> StudySpec:
    """Build and validate a :class:`StudySpec` from a mapping (as read from YAML)."""
    from balfeat.typed_config import apply_overrides, merge_mapping

    spec = merge_mapping(StudySpec(), data, source)
    study_over, cell_over = split_overrides(overrides)
    apply_overrides(spec, study_over)
    validate_study(spec, cell_over)
    return spec
