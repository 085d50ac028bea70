"""Loading passes and backends registered through package entry points.

The registries never import the built-in `yolograph.passes` / `yolograph.backends` packages by name
(the core does not depend on them); pyproject.toml declares them as entry points of the groups
`yolograph.passes` and `yolograph.backends`, and a third-party package can add its own the same way.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from yolograph.errors import PipelineError

_LOADED: set[str] = set()


def load_plugins(group: str) -> None:
    """Import every module registered under entry point `group` (once per process)."""
    if group in _LOADED:
        return
    found = entry_points(group=group)
    if not found:
        raise PipelineError(f"No {group} are installed: the package metadata is missing; reinstall yolograph "
                            "(pip install -e .).")
    _LOADED.add(group)  # before importing: a plugin that reads its registry while it loads sees no recursion
    try:
        for entry in found:
            importlib.import_module(entry.value)
    except BaseException:
        _LOADED.discard(group)
        raise


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import every module of a package: built-in passes and backends register themselves on import."""
    import pkgutil

    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
