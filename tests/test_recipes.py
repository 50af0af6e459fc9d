"""The recipe files equal the reference table ``docs/recipes.yaml``, value by value (issue 13).

``docs/recipes.yaml`` is the single source: every recipe, every value and where it comes from.
This module expands it (families, ``{set}`` and ``over`` placeholders), loads each recipe file with
its layered ``defaults:`` and compares every value of the table with the file. It also renders the
tables of ``docs/recipes.md`` and checks that the committed document is the rendering of the table
(``python tests/test_recipes.py --write`` regenerates it).

A recipe of the table lives in ``configs/<folder>/<name>.yaml`` (``folder`` is its job and dataset,
e.g. ``pretrain/imagenet-lt``); the ``successors`` section names the other recipe files with their
source. A recipe missing from its folder fails, and so does a file under ``configs/pretrain/`` or
``configs/probe/`` that the table does not name.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "recipes.yaml"
DOC = ROOT / "docs" / "recipes.md"
CONFIGS = ROOT / "configs"
JOBS = ("pretrain", "probe")
BEGIN = "<!-- BEGIN GENERATED FROM docs/recipes.yaml -->"
END = "<!-- END GENERATED -->"
MARKER = "# recipe-table: docs/recipes.yaml"
SOURCE_KINDS = ("README", "default:", "extension:", "run:")


@dataclass(frozen=True)
class Recipe:
    """One expanded recipe of the table.

    Attributes:
        name: file stem, e.g. ``kcl_resnet50_b256-cos-200e_imagenet-lt``.
        folder: its folder under ``configs/``, e.g. ``pretrain/imagenet-lt``.
        family: the family it was built from.
        extension: why it is an extension, or ``""`` for a reference recipe.
        values: dotted key -> (value, source).
    """

    name: str
    folder: str
    family: str
    extension: str
    values: dict[str, tuple[Any, str]]


def _fill(obj: Any, subs: dict[str, str]) -> Any:
    if isinstance(obj, str):
        for k, v in subs.items():
            obj = obj.replace("{" + k + "}", v)
        return obj
    if isinstance(obj, list):
        return [_fill(x, subs) for x in obj]
    return obj


def _family_values(families: dict[str, Any], name: str) -> dict[str, list[Any]]:
    fam = dict(families[name])
    parent = fam.pop("_parent", None)
    out = _family_values(families, parent) if parent else {}
    out.update(fam)
    return out


def load_table(path: Path = TABLE) -> list[Recipe]:
    """Expand ``docs/recipes.yaml`` into one :class:`Recipe` per recipe file."""
    raw = yaml.safe_load(path.read_text())
    sets: dict[str, dict[str, str]] = raw["sets"]
    recipes: list[Recipe] = []
    for pattern, spec in raw["recipes"].items():
        over: dict[str, list[str]] = dict(spec.get("over", {}))
        if "{set}" in pattern:
            over["set"] = list(sets)
        combos: list[dict[str, str]] = [{}]
        for var, choices in over.items():
            combos = [{**c, var: ch} for c in combos for ch in choices]
        for subs in combos:
            full = dict(subs)
            if "set" in subs:
                full.update(sets[subs["set"]])
            if "cs" in subs:
                full["cs_file"] = subs["cs"].replace("-", "_")
            merged = _family_values(raw["families"], spec["family"])
            merged.update(spec.get("values", {}))
            values = {k: (_fill(v[0], full), _fill(v[1], full)) for k, v in merged.items()}
            recipes.append(
                Recipe(
                    _fill(pattern, full),
                    spec["folder"],
                    spec["family"],
                    spec.get("extension", ""),
                    values,
                )
            )
    return recipes


def load_successors(path: Path = TABLE) -> dict[str, str]:
    """``configs/``-relative path without ``.yaml`` -> source, of the successors' recipes."""
    return dict(yaml.safe_load(path.read_text())["successors"])


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_recipe_file(path: Path) -> dict[str, Any]:
    """Load a YAML recipe with its ``defaults: [..]`` layers (relative to the file), later wins."""
    doc = yaml.safe_load(path.read_text()) or {}
    layers = doc.pop("defaults", []) or []
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, load_recipe_file((path.parent / layer).resolve()))
    return _merge(merged, doc)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_MISSING = object()


def _equal(want: Any, got: Any) -> bool:
    if want is None:
        return got in (None, "")
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(float(want), float(got), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_equal(a, b) for a, b in zip(want, got, strict=True))
    return bool(want == got)


def compare(recipe: Recipe, cfg: dict[str, Any]) -> list[str]:
    """Every difference between the table and a loaded recipe, one line each (empty: equal)."""
    flat = flatten(cfg)
    diffs = []
    for key, (want, source) in sorted(recipe.values.items()):
        got = flat.get(key, _MISSING)
        if got is _MISSING:
            diffs.append(f"{key}: missing, table says {want!r} ({source})")
        elif not _equal(want, got):
            diffs.append(f"{key}: {got!r} -> {want!r} ({source})")
    return diffs


def missing_and_unlisted(
    recipes: list[Recipe], successors: dict[str, str], root: Path = CONFIGS
) -> tuple[list[str], list[str]]:
    """Table entries with no file under ``root``, and files under ``root/{pretrain,probe}`` that
    the table does not name (both as ``root``-relative paths without ``.yaml``)."""
    named = {f"{r.folder}/{r.name}" for r in recipes} | set(successors)
    files = {
        str(p.relative_to(root).with_suffix(""))
        for job in JOBS
        for p in (root / job).rglob("*.yaml")
    }
    return sorted(named - files), sorted(files - named)


def render_markdown(recipes: list[Recipe], successors: dict[str, str] | None = None) -> str:
    """The generated part of ``docs/recipes.md``: one table per recipe, then the successors."""
    lines = [BEGIN, ""]
    for r in recipes:
        tag = f" — **extension**: {r.extension}" if r.extension else ""
        where = f"`configs/{r.folder}/{r.name}.yaml`"
        lines += [f"### `{r.name}`{tag}", "", where, ""]
        lines += ["| key | value | source |", "|---|---|---|"]
        for key, (value, source) in sorted(r.values.items()):
            shown = "whole folder" if value is None else value
            lines.append(f"| `{key}` | `{shown}` | {source.replace('|', '/')} |")
        lines.append("")
    if successors:
        lines += ["### Recipes of KCL's successors", ""]
        lines += ["Values: each file's header; checked by `tests/test_configs_methods.py`.", ""]
        lines += ["| recipe | source |", "|---|---|"]
        for rel, source in sorted(successors.items()):
            lines.append(f"| `configs/{rel}.yaml` | {source.replace('|', '/')} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


RECIPES = load_table()
SUCCESSORS = load_successors()


def test_table_is_well_formed() -> None:
    names = [r.name for r in RECIPES]
    assert len(names) == len(set(names)), "recipe names repeat"
    for r in RECIPES:
        assert "{" not in r.name, r.name
        job = "probe" if r.name.startswith("probe") else "pretrain"
        assert r.folder.split("/")[0] == job, f"{r.name}: folder {r.folder} is not under {job}/"
        assert r.name.endswith("-ext") == bool(r.extension), f"{r.name}: -ext iff extension"
        for key, (value, source) in r.values.items():
            assert source.startswith(SOURCE_KINDS), f"{r.name} {key}: source {source!r}"
            assert "{" not in str(value), f"{r.name} {key}: unfilled {value!r}"
            if r.extension == "":
                assert not source.startswith("extension:"), f"{r.name} {key} is an extension"


def test_table_reference_values() -> None:
    """Spot checks of values the issue names, so an edit of the table itself is caught."""
    by = {r.name: r.values for r in RECIPES}
    kcl = by["kcl_resnet50_b256-cos-200e_imagenet-lt"]
    assert (kcl["method.T"][0], kcl["method.mlp"][0], kcl["optim.weight_decay"][0]) == (
        0.07,
        False,
        0.0005,
    )
    cls1 = by["kcl_resnet50_b256-cos-200e_imagenet-clsset1"]
    assert cls1["data.train_split"][0] is None and cls1["optim.weight_decay"][0] == 0.0001
    assert by["moco_v1_resnet50_b256-step-200e_imagenet-lt"]["optim.weight_decay"][0] == 0.0005
    assert by["moco_v1_resnet50_b256-step-200e_imagenet-clsset1"]["optim.weight_decay"][0] == 1e-4
    assert by["sl_resnet50_b256-cos-90e_imagenet-lt"]["optim.epochs"][0] == 90
    assert by["sl-2full_resnet50_b256-cos-10e_imagenet-lt2"]["optim.epochs"][0] == 10
    assert by["sl-crt-bal4_resnet50_b256-cos-10e_imagenet-lt"]["data.repeat"][0] == 4
    probe = by["probe_kcl_resnet50_b256-cos-200e_imagenet-lt_on-lt"]
    assert probe["probe.train_split"][0] == "splits/ImageNet_LT_train.txt"


def test_compare_finds_each_difference() -> None:
    values = {"a.b": (0.07, "README: x"), "a.c": ([1, 2], "README: y")}
    r = Recipe("x", "pretrain/x", "f", "", values)
    assert compare(r, {"a": {"b": 0.07, "c": [1, 2]}}) == []
    assert compare(r, {"a": {"b": 0.2, "c": [1, 2]}}) == ["a.b: 0.2 -> 0.07 (README: x)"]
    assert compare(r, {"a": {"b": 0.07}})[0].startswith("a.c: missing")
    assert compare(Recipe("y", "pretrain/x", "f", "", {"k": (True, "run: z")}), {"k": 1}) != []


def test_layered_loading(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yaml").write_text("optim: {lr: 0.1, epochs: 90}\n")
    (tmp_path / "r.yaml").write_text("defaults: [base/b.yaml]\noptim: {epochs: 10}\n")
    assert flatten(load_recipe_file(tmp_path / "r.yaml")) == {"optim.lr": 0.1, "optim.epochs": 10}


def test_doc_is_generated_from_table() -> None:
    text = DOC.read_text()
    assert BEGIN in text and END in text, "docs/recipes.md lost its generated section"
    start, stop = text.index(BEGIN), text.index(END) + len(END) + 1
    want = render_markdown(RECIPES, SUCCESSORS)
    assert text[start:stop] == want, "run python tests/test_recipes.py --write"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_recipe_file_matches_table(recipe: Recipe) -> None:
    path = CONFIGS / recipe.folder / f"{recipe.name}.yaml"
    assert path.is_file(), f"{path} is missing: docs/recipes.yaml names it"
    assert MARKER in path.read_text(), f"{path}: a table recipe carries {MARKER!r}"
    diffs = compare(recipe, load_recipe_file(path))
    assert not diffs, f"{path.name}:\n" + "\n".join(diffs)


def test_every_recipe_file_is_named_in_the_table_and_every_named_file_exists() -> None:
    missing, unlisted = missing_and_unlisted(RECIPES, SUCCESSORS)
    assert not missing, f"named in docs/recipes.yaml, missing from configs/: {missing}"
    assert not unlisted, f"in configs/, not named in docs/recipes.yaml: {unlisted}"
    for rel in SUCCESSORS:
        assert MARKER not in (CONFIGS / f"{rel}.yaml").read_text(), f"{rel} is a table recipe"


def test_a_deleted_or_moved_recipe_is_reported(tmp_path: Path) -> None:
    """A deleted paper recipe fails (no xfail): copy two recipes, delete one, move the other."""
    kcl = next(r for r in RECIPES if r.name == "kcl_resnet50_b256-cos-200e_imagenet-lt")
    probe = next(r for r in RECIPES if r.name.startswith("probe_kcl_"))
    for r in (kcl, probe):
        (tmp_path / r.folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / r.folder / f"{r.name}.yaml").write_text("x: 1\n")
    assert missing_and_unlisted([kcl, probe], {}, tmp_path) == ([], [])
    (tmp_path / kcl.folder / f"{kcl.name}.yaml").unlink()
    (tmp_path / probe.folder / f"{probe.name}.yaml").rename(tmp_path / "probe" / "p.yaml")
    missing, unlisted = missing_and_unlisted([kcl, probe], {}, tmp_path)
    assert missing == sorted([f"{kcl.folder}/{kcl.name}", f"{probe.folder}/{probe.name}"])
    assert unlisted == ["probe/p"]


def _write_doc() -> None:
    text = DOC.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END) + 1
    DOC.write_text(text[:start] + render_markdown(RECIPES, SUCCESSORS) + text[stop:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        _write_doc()


def test_bal_repeat_and_kcl_selection_choices_are_stated() -> None:
    """Issue 23: ``--bal_repeat 4`` reaches the reference's sampler only on its KV reader
    (helper.py:271-274; the folder/DDP path drops it, helper.py:290-293), and the reference KCL
    picks positives with topk over a 0/1 mask (kcl_builder.py:168-171): both choices are stated
    with their file:line, and the recipes hold them."""
    by_name = {r.name: r for r in RECIPES}
    value, source = by_name["sl-crt-bal4_resnet50_b256-cos-10e_imagenet-lt"].values["data.repeat"]
    assert value == 4 and "helper.py:290-293" in source and "data.repeat=1" in source
    path = CONFIGS / "pretrain/imagenet-lt/sl-crt-bal4_resnet50_b256-cos-10e_imagenet-lt.yaml"
    assert "helper.py:290-293" in path.read_text()
    for r in RECIPES:
        if r.name.startswith("kcl_"):
            value, source = r.values["method.selection"]
            assert value == "queue_order" and "kcl_builder.py:168-171" in source
            from balfeat.engine.config import load_config

            cfg = load_config(CONFIGS / r.folder / f"{r.name}.yaml")
            assert cfg.method.selection == value  # type: ignore[attr-defined]
