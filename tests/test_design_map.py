"""docs/DESIGN.md's package map names every module of ``src/balfeat`` and nothing else; the README
stays a user's README; LICENSE and CITATION.cff agree with pyproject.toml.

The map is the fenced block under "## Package map": ``src/balfeat/`` at indent 0, each folder
(``data/``) and module line two spaces deeper than its parent; a line may name several modules
(``supcon.py, tsc.py``); deeper lines that start with no module name continue a description.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "balfeat"
DESIGN = ROOT / "docs" / "DESIGN.md"
_NAMES = re.compile(r"^( *)((?:[\w]+\.py)(?:, *[\w]+\.py)*)(?: |$)")
_FOLDER = re.compile(r"^( *)([\w]+)/(?: |$)")


def map_block(text: str) -> str:
    """The fenced block that follows the heading "## Package map"."""
    after = text[text.index("## Package map") :]
    start = after.index("```\n") + 4
    return after[start : after.index("```", start)]


def modules_in_map(block: str) -> set[str]:
    """Paths relative to ``src/balfeat`` of every module the map names."""
    lines = block.splitlines()
    assert lines and lines[0].rstrip() == "src/balfeat/", "the map starts with src/balfeat/"
    stack: list[tuple[int, str]] = [(0, "")]
    found: set[str] = set()
    for line in lines[1:]:
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            break  # configs/, benchmarks/: outside the package
        if folder := _FOLDER.match(line):
            while stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, stack[-1][1] + folder.group(2) + "/"))
        elif names := _NAMES.match(line):
            while stack[-1][0] >= indent:
                stack.pop()
            if indent != stack[-1][0] + 2:
                continue  # a continuation line that happens to start with a file name
            found |= {stack[-1][1] + n.strip() for n in names.group(2).split(",")}
    return found


def package_modules(root: Path = PACKAGE) -> set[str]:
    """Every module of the package but the packages' ``__init__.py``."""
    return {str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "__init__.py"}


def test_map_parser_reads_nesting_and_lists() -> None:
    block = (
        "src/balfeat/\n  a.py   x\n  data/\n    b.py, c.py   y\n"
        "                       d.py is prose here\n  e.py\nconfigs/\n"
    )
    assert modules_in_map(block) == {"a.py", "data/b.py", "data/c.py", "e.py"}


def test_every_module_is_in_the_design_map_and_every_mapped_module_exists() -> None:
    mapped = modules_in_map(map_block(DESIGN.read_text()))
    modules = package_modules()
    missing = sorted(modules - mapped - {m for m in mapped if m.endswith("__init__.py")})
    assert not missing, f"modules missing from docs/DESIGN.md's package map: {missing}"
    stale = sorted(m for m in mapped if not (PACKAGE / m).is_file())
    assert not stale, f"docs/DESIGN.md's package map names modules that do not exist: {stale}"


def test_readme_is_a_users_readme() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) <= 2000, "README.md: 2,000 words or fewer (wc -w)"
    assert "bash scripts/setup.sh && .venv/bin/balfeat demo" in text
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in text
    for gone in ("previous stop", "while two jobs shared", "at commit"):
        assert gone not in text, f"README.md: {gone!r} belongs in docs/results/"
    for link in ("docs/results/", "benchmarks/README.md", "CITATION.cff"):
        assert link in text, link


def test_license_and_citation_match_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()  # tomllib is 3.11+, the package 3.10+
    license_ = re.search(r'^license = \{ *text = "([^"]+)" *\}', pyproject, re.MULTILINE)
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert license_ and version and license_.group(1) == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff)
    assert cff["license"] == license_.group(1)
    assert str(cff["version"]) == version.group(1)
    paper = cff["preferred-citation"]
    assert paper["title"] == "Exploring Balanced Feature Spaces for Representation Learning"
    assert paper["year"] == 2021 and paper["authors"][0]["family-names"] == "Kang"
