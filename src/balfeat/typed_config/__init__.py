"""Typed job configuration: dataclass trees from layered YAML files and ``key=value`` overrides.

Every job of balfeat (pre-training ``Config``, probing ``ProbeJob``, studies ``StudySpec``) is a
tree of dataclasses read by this one module:

- :func:`load_typed` builds an instance of a dataclass from its defaults, then from zero or more
  YAML files in order (later files override earlier ones), then from ``section.key=value``
  overrides as given on the command line. Override values are parsed with ``yaml.safe_load``
  (``[30, 40]`` is a list, ``true`` a bool).
- A YAML file may start with ``defaults: [base.yaml, ...]``: those files (paths relative to the
  file that names them) are loaded first, so a recipe holds only what differs from its base.
- Every value is checked against the field's declared type, and against the field's declared range
  (``field(default=..., metadata=bounds(ge=1))``). An unknown key raises
  :class:`~balfeat.errors.ConfigError` naming the key, where it came from and the closest valid key.
- Path fields declare their kind (``metadata=path_kind("file")``): ``file`` (an existing file),
  ``dir`` (an existing directory), ``file_or_dir``, ``new_file`` (a file to write: its folder must
  be creatable and writable, and it must not be a directory) or ``out_dir`` (a directory to create
  or reuse: not a file, writable). Each path given is resolved once, at load
  (:func:`resolve_paths`: ``~`` and environment variables expanded, a relative path taken
  against the working directory; the text as typed is kept beside it, :func:`typed_paths`), so a
  stored path means the same from any folder. :func:`check_paths` checks them all before any
  work starts; it is separate from loading so that a config read back from a checkpoint is not
  checked against the filesystem of another machine.
- A section may be a *variant* (``metadata=variant("name", section_of, sections)``): the value of
  its selector key picks the section's dataclass (``method.name: kcl`` makes ``method`` a
  ``KCLParams``, whose keys are the only ``method.*`` keys accepted). Setting the selector switches
  the section's class and keeps the values already set that the new class also has; in a mapping
  the selector is applied first, whatever its position.
"""

from balfeat.typed_config.load import (
    apply_overrides,
    check_all_ranges,
    from_dict,
    load_typed,
    merge_mapping,
    parse_override,
    set_key,
    to_dict,
)
from balfeat.typed_config.paths import (
    check_path,
    check_paths,
    check_writable_dir,
    resolve_path,
    resolve_paths,
    typed_paths,
)
from balfeat.typed_config.schema import (
    PathKind,
    all_keys,
    bounds,
    check_range,
    check_value,
    closest_key,
    entries,
    fits_int64,
    path_kind,
    range_text,
    type_name,
    variant,
)
from balfeat.typed_config.yaml_io import DuplicateKeyError, load_yaml_text, read_layered_yaml

__all__ = [
    "DuplicateKeyError",
    "PathKind",
    "all_keys",
    "apply_overrides",
    "bounds",
    "check_all_ranges",
    "check_path",
    "check_paths",
    "check_range",
    "check_value",
    "check_writable_dir",
    "closest_key",
    "entries",
    "fits_int64",
    "from_dict",
    "load_typed",
    "load_yaml_text",
    "merge_mapping",
    "parse_override",
    "path_kind",
    "range_text",
    "read_layered_yaml",
    "resolve_path",
    "resolve_paths",
    "set_key",
    "to_dict",
    "type_name",
    "typed_paths",
    "variant",
]
