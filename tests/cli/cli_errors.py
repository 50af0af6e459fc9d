"""What a command printed on stderr when it failed, for the CLI tests."""

from __future__ import annotations

import pytest


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed command printed on stderr (a probe's stage lines aside), checked to
    be one line with no traceback."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("probe: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
