"""Published numbers of the methods a study trains, for printing beside the study's own.

The table (``published_results.yaml`` beside this module; prose and sources in
``docs/published-results.md``) lists, per method, dataset and backbone, the published top-1 and
many/medium/few accuracies with their source. A row whose paper table was not read yet has
``status: todo`` and no numbers: nothing is entered from memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

TABLE = Path(__file__).with_name("published_results.yaml")


def _key(name: str) -> str:
    """A method's matching key: ``"PaCo"`` and ``"paco"`` -> ``"paco"``; ``"SupCon (queue) as
    reported by TSC"`` -> ``"supcon"``."""
    return re.sub(r"[^a-z0-9]", "", name.split(" ")[0].lower())


def load_published(path: str | Path = TABLE) -> list[dict[str, Any]]:
    """The rows of the published-results table."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return list(data.get("results", []))


def published_rows(methods: Sequence[str], path: str | Path = TABLE) -> list[dict[str, Any]]:
    """The rows of ``methods`` (study method names such as ``paco``, ``kcl``, ``supcon``)."""
    wanted = {_key(m) for m in methods}
    return [r for r in load_published(path) if _key(str(r.get("method", ""))) in wanted]


def published_markdown(methods: Sequence[str], path: str | Path = TABLE) -> list[str]:
    """A Markdown section with the published rows of ``methods`` (empty when there are none)."""
    rows = published_rows(methods, path)
    if not rows:
        return []

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
