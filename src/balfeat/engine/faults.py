"""Fault injection for tests: kill or fail a training process at a given step.

Not part of the user config. Tests set the environment variable ``BALFEAT_TEST_FAULT`` of the
process they start:

- ``kill:STEP``: SIGKILL rank 0 at optimiser step ``STEP`` (no cleanup code runs);
- ``raise:STEP:RANK``: raise ``RuntimeError`` on rank ``RANK`` at step ``STEP``.
"""

from __future__ import annotations

import os
import signal

ENV = "BALFEAT_TEST_FAULT"


def inject(step: int, rank: int) -> None:
    """Act on ``BALFEAT_TEST_FAULT`` after optimiser step ``step`` of rank ``rank``.

    Raises:
        RuntimeError: the injected fault (``raise:STEP:RANK``).
        ValueError: the variable is malformed.
    """
    spec = os.environ.get(ENV, "")
    if not spec:
        return
    parts = spec.split(":")
    try:
        kind, at = parts[0], int(parts[1])
        on_rank = int(parts[2]) if kind == "raise" else 0
    except (IndexError, ValueError):
        raise ValueError(f"{ENV}={spec!r}: use kill:STEP or raise:STEP:RANK") from None
    if step != at or rank != on_rank:
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "raise":
        raise RuntimeError(f"injected fault on rank {rank} at step {step}")
    else:
        raise ValueError(f"{ENV}={spec!r}: use kill:STEP or raise:STEP:RANK")
