"""Shared by the recipe tests: overrides that shrink a recipe to one tiny CPU step."""

from __future__ import annotations

from pathlib import Path

from balfeat.engine.config import load_config, overrides_for

#: Queue keys, applied only where the recipe's method has a queue (SL and BCL have none).
QUEUE = {"K": "16", "bn_splits": "2"}


def queue_overrides(path: str | Path) -> list[str]:
    """``method.K=16 method.bn_splits=2`` for the methods of ``path`` that have those keys."""
    return overrides_for(
        load_config(path).method.name, [f"method.{k}={v}" for k, v in QUEUE.items()]
    )
