"""The test-only fault hook: off by default, raises on the named rank and step, checks its spec."""

from __future__ import annotations

import pytest

from balfeat.engine import faults
from balfeat.engine.config import load_config
from balfeat.errors import ConfigError


def test_no_variable_no_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.inject(3, 1)


def test_raise_on_the_named_rank_and_step_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "raise:3:1")
    faults.inject(2, 1)
    faults.inject(3, 0)
    with pytest.raises(RuntimeError, match="injected fault on rank 1 at step 3"):
        faults.inject(3, 1)


def test_malformed_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "boom")
    with pytest.raises(ValueError, match="kill:STEP"):
        faults.inject(1, 0)


def test_fault_keys_are_not_user_config() -> None:
    with pytest.raises(ConfigError):
        load_config(None, ["run.fault_kill_at_step=3"])
