"""The command sets OpenMP's wait policy to PASSIVE before torch loads; importing balfeat does
not touch the environment, and a policy the user chose is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from balfeat.cli.main import WAIT_POLICY, passive_openmp

SRC = str(Path(__file__).resolve().parents[2] / "src")

# Runs ``python -m balfeat splits --help`` in this interpreter and prints the OMP_WAIT_POLICY that
# the environment held when torch was first imported (what libgomp reads), and the one after.
CHILD = r"""
import os, runpy, sys
seen = []

def hook(event, args):
    if event == "import" and args[0] == "torch" and not seen:
        seen.append(os.environ.get("OMP_WAIT_POLICY", "unset"))

sys.addaudithook(hook)
import balfeat, balfeat.cli.main  # importing the library changes nothing
before = os.environ.get("OMP_WAIT_POLICY", "unset")
sys.argv = ["balfeat", sys.argv[1], "--help"]
try:
    runpy.run_module("balfeat", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
import torch  # loaded by now in any case
print("RESULT", before, seen[0], os.environ.get("OMP_WAIT_POLICY", "unset"))
"""


def _child(policy: str | None, command: str = "splits") -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run(
        [sys.executable, "-c", CHILD, command], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    return line.split()[1:]


def test_the_command_sets_passive_before_torch_loads() -> None:
    before, at_torch_import, after = _child(None)
    assert before == "unset"  # importing balfeat (the library, the CLI module) sets nothing
    assert at_torch_import == WAIT_POLICY == "PASSIVE" and after == "PASSIVE"


@pytest.mark.parametrize("command", ["demo", "study"])
def test_per_cell_commands_keep_openmps_default(command: str) -> None:
    # they choose their threads again before every cell (leaving busy cores to others)
    assert _child(None, command) == ["unset", "unset", "unset"]
    assert not passive_openmp({}, command=command)


def test_a_users_policy_is_kept() -> None:
    assert _child("ACTIVE") == ["ACTIVE", "ACTIVE", "ACTIVE"]


def test_nothing_is_set_once_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    assert "torch" in sys.modules  # this test process: too late for libgomp to read it
    assert not passive_openmp(env) and env == {}
    monkeypatch.delitem(sys.modules, "torch")
    assert passive_openmp(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert not passive_openmp(env) and env["OMP_WAIT_POLICY"] == "ACTIVE"
