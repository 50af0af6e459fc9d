"""No import cycle between the package's modules, counting imports inside functions too.

An edge A -> B is an ``import``/``from … import`` in module A that names module B (or a name
of package B's ``__init__``), wherever it stands in A: module level or inside a function.
Imports under ``if TYPE_CHECKING:`` are not executed and are left out. A cycle means two
modules need each other; an import moved into a function only hides it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "balfeat"


def modules_of(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module below ``package_dir``."""
    out = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` imports anywhere (TYPE_CHECKING aside)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                if sub in modules:
                    out.add(sub)
                elif mod in modules:
                    out.add(mod)
    out.discard(name)
    return out


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (Tarjan's components > 1)."""
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    cycles = import_cycles(modules_of(SRC))
    assert not cycles, "modules that import each other (directly or round a loop):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_a_cycle_hidden_in_functions_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "balfeat"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from balfeat.sub.c import h\n")
    (pkg / "a.py").write_text("def f():\n    from balfeat.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from balfeat import a\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from balfeat.sub import h\n"
        "def h():\n    from . import d\n"
    )
    (pkg / "sub" / "d.py").write_text("from .. import a\n")
    modules = modules_of(pkg)
    assert imported_modules("balfeat.sub.c", modules["balfeat.sub.c"], modules) == {"balfeat.sub.d"}
    assert import_cycles(modules) == [["balfeat.a", "balfeat.b"]]
