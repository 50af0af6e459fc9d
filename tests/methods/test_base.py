"""MethodBase's hooks, the registry entry's label and own-classifier flag, and the import of
``balfeat.methods`` (complete registry, no import cycle inside the package)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from method_standins import TinyBackbone

from balfeat.errors import BalfeatError
from balfeat.methods import KCL, METHODS, MethodBase, MoCo, Supervised, get_method, method_names
from balfeat.methods.params import KCLParams, MoCoV2Params
from balfeat.study.cells import method_has_classifier
from balfeat.study.plots import method_label

BUILTIN = {
    "sl", "moco_v1", "moco_v2", "kcl", "supcon", "supcon_inbatch", "paco", "gpaco", "bcl", "tsc",
}  # fmt: skip
METHODS_DIR = Path(__file__).resolve().parents[2] / "src" / "balfeat" / "methods"


def test_methods_is_complete_on_first_import() -> None:
    """In a fresh interpreter, ``from balfeat.methods import METHODS`` alone holds all 10."""
    code = "from balfeat.methods import METHODS; print(' '.join(sorted(METHODS)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert set(out.stdout.split()) == BUILTIN


@pytest.mark.parametrize("module", ["params", "kcl"])
def test_any_methods_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """No import order matters: each module imports alone (a cycle would fail one of them)."""
    code = f"import balfeat.methods.{module}; from balfeat.methods import METHODS; "
    code += "print(len(METHODS))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["10"]


def _package_imports(path: Path) -> set[str]:
    """The ``balfeat.methods.*`` modules ``path`` imports, at module level or in a function
    (imports for type checkers only, under ``if TYPE_CHECKING:``, never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "balfeat.methods":  # from balfeat.methods import X
                out |= {a.name for a in node.names if (METHODS_DIR / f"{a.name}.py").exists()}
                out.add("__init__")
            elif node.module.startswith("balfeat.methods."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("balfeat.methods."):
                    out.add(a.name.split(".")[2])
    return out


def test_no_import_cycle_inside_the_package() -> None:
    """Module-level and function-level imports between the modules of ``balfeat.methods`` form
    no cycle, and none of its modules imports the package face (``__init__``)."""
    graph = {p.stem: _package_imports(p) - {p.stem} for p in METHODS_DIR.glob("*.py")}
    assert not any("__init__" in deps for m, deps in graph.items() if m != "__init__"), graph
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for dep in graph.get(node, ()):
            visit(dep, (*path, node))
        done.add(node)

    for module in graph:
        visit(module, ())


def test_every_builtin_derives_from_method_base() -> None:
    for name in BUILTIN:
        cls = get_method(name).build.method_class  # type: ignore[attr-defined]
        assert issubclass(cls, MethodBase), name


def test_base_hooks_are_no_ops_and_classify_says_what_to_do() -> None:
    sl = Supervised(TinyBackbone(), 4)  # type: ignore[arg-type]
    sl.after_step()
    sl.set_class_counts(torch.tensor([3, 2, 1, 1]))
    assert sl.prefill([]) == 0
    # SL's classify is its head (run.keep_best validates it); a method without one says so
    assert sl.eval().classify(torch.zeros(2, 1, 4, 4)).shape == (2, 4)
    moco = MoCo(TinyBackbone(), K=8)  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match=r"MoCo has no classifier of its own.*probe"):
        moco.classify(torch.zeros(2, 1, 8, 8))


def test_registry_carries_label_and_own_classifier() -> None:
    assert get_method("moco_v2").label == "MoCo v2"
    assert get_method("supcon").label == "SupCon (queue)"
    assert get_method("sl").label == "SL (supervised)"
    own = {n for n in method_names() if get_method(n).has_classifier}
    assert own == {"paco", "gpaco", "bcl"}
    # the study reads both from the entry
    assert method_label("supcon_inbatch") == "SupCon (in-batch)"
    assert method_label("not_registered") == "not_registered"
    assert [method_has_classifier(n) for n in ("bcl", "kcl")] == [True, False]


def test_registry_label_and_classifier_of_a_new_method() -> None:
    """A method registered from outside gets its label and flag from its registry line."""
    from balfeat.methods import from_constructor, register

    try:
        register("moco_relabelled", views=2, params=MoCoV2Params, label="MoCo (mine)")(
            from_constructor(MoCo)
        )
        assert method_label("moco_relabelled") == "MoCo (mine)"
        assert not method_has_classifier("moco_relabelled")
        register("moco_flagged", views=2, params=MoCoV2Params, has_classifier=True)(
            from_constructor(MoCo)
        )
        assert method_has_classifier("moco_flagged")
        assert method_label("moco_flagged") == "moco_flagged"
    finally:
        METHODS.pop("moco_relabelled", None)
        METHODS.pop("moco_flagged", None)


def test_moco_v1_and_v2_are_one_class_with_their_own_defaults() -> None:
    v1, v2 = get_method("moco_v1"), get_method("moco_v2")
    assert v1.build.method_class is v2.build.method_class is MoCo  # type: ignore[attr-defined]
    assert (v1.params().T, v1.params().mlp) == (0.07, False)
    assert (v2.params().T, v2.params().mlp) == (0.2, True)
    built = v2.build(v2.params(K=16, bn_splits=2), TinyBackbone(), 4, 0)  # type: ignore[arg-type]
    assert isinstance(built, MoCo) and built.T == 0.2 and len(list(built.head.children())) > 1


def test_a_method_is_built_from_its_params_or_from_keywords() -> None:
    a = KCL(TinyBackbone(), params=KCLParams(K=32, posk=3, T=0.1))  # type: ignore[arg-type]
    b = KCL(TinyBackbone(), K=32, posk=3, T=0.1)  # type: ignore[arg-type]
    assert a.params == b.params and (a.posk, a.T, a.K) == (3, 0.1, 32)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['alpha'\].*posk"):
        KCL(TinyBackbone(), K=32, alpha=0.1)  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match="KCL takes params of type KCLParams, got MoCoV2"):
        KCL(TinyBackbone(), params=MoCoV2Params())  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match=r"KCL argument T must be > 0, got 0"):
        KCL(TinyBackbone(), params=KCLParams(K=32, T=0))  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "T", "mlp"), [("moco_v1", 0.07, False), ("moco_v2", 0.2, True)])
def test_show_config_prints_each_moco_version_its_own_defaults(
    name: str, T: float, mlp: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """``balfeat pretrain --show-config method.name=moco_v1`` no longer prints v2's T and head."""
    import yaml

    from balfeat.cli.main import main

    assert main(["pretrain", "--show-config", f"method.name={name}"]) == 0
    method = yaml.safe_load(capsys.readouterr().out)["method"]
    assert (method["T"], method["mlp"]) == (T, mlp)
