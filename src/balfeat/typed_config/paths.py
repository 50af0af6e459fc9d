"""Path fields: each declares its kind (``metadata=path_kind(...)``), checked before work starts."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from balfeat.errors import ConfigError

#: What a path that exists but is neither a regular file nor a folder is (``/dev/null``, a FIFO).
_NOT_REGULAR = "is not a regular file (a device, pipe or socket)"

_UNSET_VAR = re.compile(r"\$(\w+|\{[^}]*\})")


def resolve_path(key: str, text: str, source: str = "") -> str:
    """The absolute path ``text`` means here: ``~`` and environment variables expanded, a
    relative path taken against the working directory (symbolic links are kept as typed).

    So a path means the same from any folder once it is stored (in a checkpoint, a results
    file). ``""`` (not given) stays ``""``.

    Raises:
        ConfigError: ``text`` names an environment variable that is not set, or holds a NUL
            character (no file name can; the OS call would fail with a raw ``ValueError``).
    """
    if not text:
        return text
    if "\x00" in text:
        where = f" in {source}" if source else ""
        raise ConfigError(f"{key}{where}: {text!r} holds a NUL character, which no path can hold")
    expanded = os.path.expandvars(os.path.expanduser(text))
    unset = _UNSET_VAR.search(expanded)
    if unset:
        where = f" in {source}" if source else ""
        raise ConfigError(
            f"{key}{where}: {text!r} names the environment variable {unset.group(0)}, which is "
            "not set; set it, or write the path out"
        )
    return os.path.abspath(expanded)


def typed_paths(cfg: Any) -> dict[str, str]:
    """``{"section.key": text as typed}`` of the path values :func:`resolve_path` changed while
    ``cfg`` was loaded (the config itself holds the absolute paths)."""
    return dict(vars(cfg).get("_typed_paths", {}))


def resolve_paths(cfg: Any, prefix: str = "", root: Any = None) -> None:
    """Resolve every path field of a dataclass tree that was given (differs from its default)
    with :func:`resolve_path`, keeping the text as typed (:func:`typed_paths` of ``cfg``).

    :func:`~balfeat.typed_config.load_typed` calls it once, after the files and overrides; a
    command that sets fields after loading (flags) calls it again. A config read back from a
    checkpoint is not resolved: it holds what was resolved when it was written.

    Raises:
        ConfigError: a path names an environment variable that is not set.
    """
    root = cfg if root is None else root
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            resolve_paths(value, prefix + f.name + ".", root)
        elif isinstance(value, dict):  # the entries of a dict[str, Dataclass]
            for name, sub in value.items():
                if dataclasses.is_dataclass(sub):
                    resolve_paths(sub, f"{prefix}{f.name}.{name}.", root)
        elif f.metadata.get("path") and isinstance(value, str) and value != f.default:
            resolved = resolve_path(prefix + f.name, value)
            if resolved != value:
                vars(root).setdefault("_typed_paths", {})[prefix + f.name] = value
                setattr(cfg, f.name, resolved)


def check_paths(cfg: Any, prefix: str = "") -> None:
    """Check every path field of a dataclass tree against its declared kind; "" is not checked.

    Raises:
        ConfigError: naming the key, the path and what is wrong with it.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_paths(value, prefix + f.name + ".")
            continue
        if isinstance(value, dict):  # the entries of a dict[str, Dataclass]
            for name, sub in value.items():
                if dataclasses.is_dataclass(sub):
                    check_paths(sub, f"{prefix}{f.name}.{name}.")
            continue
        kind = f.metadata.get("path")
        if kind and isinstance(value, str) and value:
            check_path(prefix + f.name, value, kind)


def check_path(key: str, value: str, kind: str) -> None:
    """Check one path ``value`` of option ``key`` against ``kind`` (see :func:`path_kind`)."""
    p = Path(value)
    if kind == "file":
        if p.is_dir():
            raise ConfigError(f"{key}: {value!r} is a directory, expected a file")
        if p.exists() and not p.is_file():
            raise ConfigError(f"{key}: {value!r} {_NOT_REGULAR}, expected a file")
        if not p.is_file():
            raise ConfigError(f"{key}: file {value!r} does not exist; check the path")
        if not os.access(p, os.R_OK):
            raise ConfigError(f"{key}: file {value!r} is not readable")
    elif kind == "dir":
        if p.is_file():
            raise ConfigError(f"{key}: {value!r} is a file, expected a directory")
        if not p.is_dir():
            raise ConfigError(f"{key}: directory {value!r} does not exist; check the path")
    elif kind == "file_or_dir":
        if not p.exists():
            raise ConfigError(f"{key}: {value!r} does not exist; check the path")
    elif kind == "new_file":
        if p.is_dir():
            raise ConfigError(f"{key}: {value!r} is a directory, expected a file path to write")
        if p.exists() and not p.is_file():  # a rename over it would replace the device itself
            raise ConfigError(f"{key}: {value!r} {_NOT_REGULAR}; give a file path to write")
        check_writable_dir(key, p.parent if str(p.parent) else Path("."))
    elif kind == "out_dir":
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{key}: {value!r} is a file, expected a directory to write into")
        check_writable_dir(key, p)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown path kind {kind!r}")


def check_writable_dir(key: str, d: Path) -> None:
    """Raise ConfigError unless ``d`` exists as a writable directory or could be created."""
    probe = d
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{key}: cannot create {str(d)!r}: {str(probe)!r} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {str(probe)!r} is not writable; choose another location")
