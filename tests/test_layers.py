"""The tree's layers, as the imports follow them: the core never imports a backend or a built-in pass."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "yolograph"
ENTRY_POINTS = {CORE / "cli"}  # the command line sits on top of every layer
# Modules allowed past the size bar because they do one job (named with the job).
ONE_JOB_MODULES: dict[str, str] = {
    "yolograph/layout/propagate.py": "the to-nhwc layout dataflow: one forward analysis over the graph",
}
SIZE_BAR = 480


def _imports(path: Path) -> set[str]:
    """Every module name an `import` or `from ... import` names, at any depth (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _core_modules() -> list[Path]:
    return [p for p in sorted(CORE.rglob("*.py")) if not any(e in p.parents for e in ENTRY_POINTS)]


def test_no_core_module_imports_a_backend_or_a_built_in_pass():
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path)
                                            if re.match(r"yolograph\.(backends|passes)(\.|$)", n))
        for path in _core_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_backends_and_passes_depend_only_on_the_core_and_themselves():
    for folder, own in ((ROOT / "backends", "backends"), (ROOT / "passes", "passes")):
        other = "passes" if own == "backends" else "backends"
        for path in folder.rglob("*.py"):
            assert not [n for n in _imports(path) if n.startswith(f"yolograph.{other}")], path


def test_every_source_folder_is_a_package_the_build_finds():
    """setup.py discovers packages; a folder of modules without __init__.py would silently not install."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("yolograph_setup", ROOT / "setup.py")
    setup_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_module)
    found = set(setup_module.all_packages())
    for name, folder in setup_module.SOURCES.items():
        for directory in [ROOT / folder, *(ROOT / folder).rglob("*")]:
            if directory.is_dir() and directory.name != "__pycache__" and any(directory.glob("*.py")):
                assert (directory / "__init__.py").exists(), f"{directory.relative_to(ROOT)} needs an __init__.py"
                package = ".".join([name, *directory.relative_to(ROOT / folder).parts])
                assert package in found


def test_modules_stay_small_unless_they_do_one_job():
    large = {}
    for folder in ("yolograph", "passes", "backends"):
        for path in (ROOT / folder).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            name = str(path.relative_to(ROOT))
            if lines > SIZE_BAR and name not in ONE_JOB_MODULES:
                large[name] = lines
    assert large == {}
