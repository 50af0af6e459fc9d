"""Errors a user can cause. Each message says what was wrong, where, and what to do.

The CLI prints these as one line (``balfeat CMD: error: ...``) without a traceback; set
``BALFEAT_DEBUG=1`` to see it. They subclass ``ValueError`` so library callers can catch either.
"""

from __future__ import annotations


class BalfeatError(ValueError):
    """Base class of errors caused by bad input (files, configs, arguments, checkpoints)."""


class SplitFormatError(BalfeatError):
    """A split or class-set file is malformed; the message names the file and line."""


class DataError(BalfeatError):
    """A dataset cannot be built: missing/unreadable images, unknown classes, empty classes."""


class ConfigError(BalfeatError):
    """A config key is unknown or has the wrong type; the message names the closest valid key."""


class CheckpointError(BalfeatError):
    """A checkpoint does not fit: another architecture or method, missing or unexpected keys."""


class TrainingError(BalfeatError):
    """Training cannot go on, e.g. a non-finite loss; the message names the step."""
