"""docs/method-defaults.md is the table of every method default with its source: each registered
default must equal its row, and every setting must have one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from balfeat.methods import get_method, method_names

TABLE = Path(__file__).resolve().parents[2] / "docs" / "method-defaults.md"


def _cell(text: str) -> str:
    return text.strip().strip("`")


def table_rows(text: str) -> dict[tuple[str, str], tuple[Any, str]]:
    """``(method, setting) -> (default, source)`` from the markdown table of ``text``."""
    rows: dict[tuple[str, str], tuple[Any, str]] = {}
    for line in text.splitlines():
        cells = [c for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4 or set(cells[0].strip()) <= {"-", " "}:
            continue
        method, setting, default, source = (c.strip() for c in cells)
        if method == "method":  # the header
            continue
        key = (_cell(method), _cell(setting))
        assert key not in rows, f"two rows for {key}"
        rows[key] = (yaml.safe_load(_cell(default)), source)
    return rows


ROWS = table_rows(TABLE.read_text())


def registered_defaults() -> dict[tuple[str, str], Any]:
    out = {}
    for name in method_names():
        params = get_method(name).params()
        for f in dataclasses.fields(params):
            if f.name != "name":
                out[(name, f.name)] = getattr(params, f.name)
    return out


BUILTIN = ("sl", "moco_v1", "moco_v2", "kcl", "supcon", "supcon_inbatch", "paco", "gpaco", "bcl")


def test_the_table_parses_and_covers_every_builtin() -> None:
    assert {m for m, _ in ROWS} == {*BUILTIN, "tsc"}
    assert all(source for _, source in ROWS.values()), "every row names its source"


@pytest.mark.parametrize("key", sorted(registered_defaults()), ids=lambda k: ".".join(k))
def test_registered_default_equals_its_row(key: tuple[str, str]) -> None:
    value = registered_defaults()[key]
    assert key in ROWS, f"{key[0]} method.{key[1]} has no row in docs/method-defaults.md"
    documented = ROWS[key][0]
    assert type(value) is type(documented) or (
        isinstance(value, float) and isinstance(documented, int)
    ), (key, value, documented)
    assert value == documented, (
        f"{key[0]} method.{key[1]} defaults to {value!r}, docs/method-defaults.md says "
        f"{documented!r}; change one of them (and the row's source)"
    )


def test_every_row_is_a_registered_setting() -> None:
    extra = set(ROWS) - set(registered_defaults())
    assert not extra, f"rows for settings no method has: {sorted(extra)}"


def test_a_drifted_default_is_caught() -> None:
    """The parser reads what the table says: a changed cell no longer matches."""
    changed = TABLE.read_text().replace("| `kcl` | `T` | `0.07` |", "| `kcl` | `T` | `0.2` |")
    assert table_rows(changed)[("kcl", "T")][0] == 0.2 != registered_defaults()[("kcl", "T")]


def test_the_reference_values_named_in_the_issue() -> None:
    """Issue 20: MoCo v1 T 0.07 no MLP; v2 T 0.2 MLP; KCL T 0.07 no MLP; TSC, BCL and in-batch
    SupCon T 0.07; PaCo K 8192; GPaCo alpha as its authors' ImageNet-LT script (0.045)."""
    d = registered_defaults()
    assert (d["moco_v1", "T"], d["moco_v1", "mlp"]) == (0.07, False)
    assert (d["moco_v2", "T"], d["moco_v2", "mlp"]) == (0.2, True)
    assert (d["kcl", "T"], d["kcl", "mlp"]) == (0.07, False)
    assert d["tsc", "T"] == d["bcl", "T"] == d["supcon_inbatch", "T"] == d["supcon", "T"] == 0.07
    assert d["paco", "K"] == 8192 and d["gpaco", "alpha"] == 0.045
