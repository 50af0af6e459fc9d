"""The house's floors: every import (module-level or inside a function) goes down, never up.

Floors, lowest first: shared helpers (errors, atomic, typed_config, schedules, distributed,
device, provenance) < building blocks (data, models, losses, evaluation) < methods < engine <
classify, integrations < study < cli < __main__. Only the shared helpers of floor 0 import each
other.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "balfeat"

FLOOR = {
    "__init__": 0,
    "__version__": 0,
    "errors": 0,
    "atomic": 0,
    "typed_config": 0,
    "schedules": 0,
    "distributed": 0,
    "device": 0,
    "provenance": 0,
    "seeding": 0,
    "data": 1,
    "models": 1,
    "losses": 1,
    "evaluation": 1,
    "methods": 2,
    "engine": 3,
    "classify": 4,
    "integrations": 4,
    "study": 5,
    "cli": 6,
    "__main__": 7,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("balfeat"):
            parts = node.module.split(".")
            names = [a.name for a in node.names] if len(parts) == 1 else [parts[1]]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[1]) for a in node.names if "." in a.name
                    and a.name.startswith("balfeat.")]  # fmt: skip
    return out


def test_every_module_has_a_floor() -> None:
    units = {_unit(p) for p in SRC.rglob("*.py")}
    assert units <= set(FLOOR), f"give these a floor: {sorted(units - set(FLOOR))}"


def test_no_import_runs_up_a_floor() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(path)
        for line, target in _imports(path):
            if target == unit:
                continue
            if FLOOR.get(target, 0) > FLOOR[unit] or (
                FLOOR[unit] > 0 and FLOOR.get(target, 0) == FLOOR[unit]
            ):
                upward.append(f"{path.relative_to(SRC)}:{line} imports balfeat.{target}")
    assert not upward, "imports against the floors:\n" + "\n".join(upward)


def test_cli_only_parses_and_calls() -> None:
    """No training loop, loss or tensor arithmetic lives in cli/: it imports no torch.nn and
    defines no nn.Module."""
    for path in (SRC / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                assert not any("Module" in b for b in bases), f"{path.name}: {node.name}"
            if isinstance(node, ast.ImportFrom) and node.module == "torch":
                assert all(a.name != "nn" for a in node.names), path.name
