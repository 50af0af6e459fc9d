"""Shared by the recipe tests: where the recipes live, and overrides that shrink a recipe to one
tiny CPU step."""

from __future__ import annotations

import re
from pathlib import Path

from balfeat.engine.config import load_config, overrides_for

#: ``configs/``: ``base/`` layers, ``pretrain/<dataset>/``, ``probe/<dataset>/``, ``study/``.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: The line a recipe of the reference table ``docs/recipes.yaml`` carries.
MARKER = "# recipe-table: docs/recipes.yaml"

#: Queue keys, applied only where the recipe's method has a queue (SL and BCL have none).
QUEUE = {"K": "16", "bn_splits": "2"}


def queue_overrides(path: str | Path) -> list[str]:
    """``method.K=16 method.bn_splits=2`` for the methods of ``path`` that have those keys."""
    return overrides_for(
        load_config(path).method.name, [f"method.{k}={v}" for k, v in QUEUE.items()]
    )


def recipes(job: str, table: bool) -> list[Path]:
    """The recipe files of ``configs/<job>/`` (``pretrain`` or ``probe``): those of the reference
    table (``table=True``, they carry :data:`MARKER`) or the others (KCL's successors)."""
    found = sorted((CONFIGS / job).rglob("*.yaml"))
    return [p for p in found if (MARKER in p.read_text()) == table]


def find_recipe(job: str, stem: str) -> Path | None:
    """The file ``configs/<job>/<dataset>/<stem>.yaml``, or None."""
    hits = sorted((CONFIGS / job).rglob(f"{stem}.yaml"))
    return hits[0] if hits else None


def recipe_text(path: Path) -> str:
    """The text of a recipe file and of every layer its ``defaults:`` names (headers included)."""
    text = path.read_text()
    found = re.search(r"^defaults: \[(.*?)\]", text, flags=re.MULTILINE)
    layers = [s.strip() for s in found.group(1).split(",")] if found else []
    return "\n".join([text, *(recipe_text((path.parent / layer).resolve()) for layer in layers)])
