"""Published numbers of the methods a study trains, for printing beside the study's own.

The table (``published_results.yaml`` beside this module; prose and sources in
``docs/published-results.md``) lists, per method, dataset and backbone, the published top-1 and
many/medium/few accuracies with their source. A row whose paper table was not read yet has
``status: todo`` and no numbers: nothing is entered from memory.

A study's report prints the rows of what its cells train: each method's ``method.name`` (not
the method's id in the study) on the data of each set, the table's ``dataset`` name of a set
being :func:`set_dataset` (CIFAR-LT sets by their ratio, ``cifar10-lt-r100``; an image-folder
study names its sets' datasets in ``folder.published``). A study on other data has none.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import yaml

from balfeat.study.spec import StudySpec, cell_config

TABLE = Path(__file__).with_name("published_results.yaml")


def _key(name: str) -> str:
    """A method's matching key: ``"PaCo"`` and ``"paco"`` -> ``"paco"``; ``"SupCon (queue) as
    reported by TSC"`` -> ``"supcon"``."""
    return re.sub(r"[^a-z0-9]", "", name.split(" ")[0].lower())


def load_published(path: str | Path = TABLE) -> list[dict[str, Any]]:
    """The rows of the published-results table."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return list(data.get("results", []))


def set_dataset(spec: StudySpec, set_name: str) -> str:
    """The published table's ``dataset`` of a study set's images (``""``: none)."""
    if spec.dataset in ("cifar10-lt", "cifar100-lt"):
        return f"{spec.dataset}-r{spec.family.sets[set_name]:g}"
    if spec.dataset == "image-folder":
        return spec.folder.published.get(set_name, "")
    return ""


def study_trains(spec: StudySpec, overrides: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """What a study's cells train, as published rows are matched: every method's
    ``method.name`` and every set's :func:`set_dataset` (one list each: every method trains on
    every set)."""
    names = sorted({cell_config(spec, m, overrides).method.name for m in spec.methods})
    datasets = sorted({d for s in spec.sets if (d := set_dataset(spec, s))})
    return names, datasets


def published_rows(
    methods: Sequence[str], path: str | Path = TABLE, datasets: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The rows of ``methods`` (method names such as ``paco``, ``kcl``, ``supcon``), on
    ``datasets`` (the table's names, ``cifar10-lt-r100``; ``None`` = any)."""
    wanted = {_key(m) for m in methods}
    return [
        r
        for r in load_published(path)
        if _key(str(r.get("method", ""))) in wanted
        and (datasets is None or r.get("dataset") in datasets)
    ]


def published_markdown(
    methods: Sequence[str], path: str | Path = TABLE, datasets: Collection[str] | None = None
) -> list[str]:
    """A Markdown section with the published rows of ``methods`` on ``datasets`` (``None`` =
    any); empty when there are none, but for given ``datasets`` a sentence saying so."""
    rows = published_rows(methods, path, datasets)
    if not rows:
        if datasets is None:
            return []
        return [
            "## Published numbers of these methods",
            "",
            f"None for {', '.join(methods)} on this study's data "
            f"({', '.join(datasets) or 'not in the table'}): the table "
            "(docs/published-results.md) holds the authors' datasets only.",
            "",
        ]

    def num(v: Any) -> str:
        return "–" if v is None else f"{float(v):.1f}"

    out = [
        "## Published numbers of these methods",
        "",
        "For orientation: the authors' figures on their own datasets and backbones (not this "
        "study's), top-1 % (overall / many / medium / few); `todo` = the paper table is named "
        "but was not read, so no number is given. P1 = the method's own authors, P2 = another "
        "paper's authors reporting their own run; a secondary value is an aggregator's, not a "
        "paper's.",
        "",
        "| method | dataset | backbone | overall | many | medium | few | status | source |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [num(r.get(k)) for k in ("overall", "many", "medium", "few")]
        name = str(r.get("method")) + (f" ({r['variant']})" if r.get("variant") else "")
        status = str(r.get("status")) + (f" ({r['tier']})" if r.get("tier") else "")
        source = str(r.get("source", ""))
        second = r.get("secondary")
        if second and r.get("status") == "todo":
            source += (
                f"; secondary (not the paper): {num(second.get('overall'))}, {second['source']}"
            )
        out.append(
            f"| {name} | {r.get('dataset')} | {r.get('backbone')} | "
            + " | ".join(cells)
            + f" | {status} | {source.replace('|', '/')} |"
        )
    return [*out, ""]
