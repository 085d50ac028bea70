"""The backend interface: registry rules, CLI flags from options, artifact detection, the README's backend."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from yolograph.cli import main
from yolograph.errors import BackendError
from yolograph.runtime.backend import (
    Backend,
    Runner,
    backend_options,
    get_backend,
    open_runner,
    register_backend,
    registered_backends,
)
from yolograph.runtime.backend import _REGISTRY as BACKENDS

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_backend() -> str:
    text = README.read_text()
    section = text[text.index("## Writing a backend"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def readme_backend():
    registered_backends()
    module = types.ModuleType("readme_backend")  # dataclasses look their module up in sys.modules
    sys.modules[module.__name__] = module
    exec(compile(_readme_backend(), "README.md", "exec"), module.__dict__)
    yield get_backend("ort-basic")
    BACKENDS.pop("ort-basic")
    sys.modules.pop(module.__name__)


def test_the_builtin_backends_are_registered():
    assert {"ort", "tvm", "tensorrt"} <= set(registered_backends())
    for cls in registered_backends().values():
        assert cls.summary()


def test_the_readme_backend_compiles_runs_and_is_found_from_its_artifact(readme_backend, tmp_path, capsys):
    out = tmp_path / "m.ortb"
    assert main(["compile", "-p", "cleanup", "-o", str(out), "--backend", "ort-basic", "--level", "basic"]) == 0
    assert out.exists()
    runner, imgsz = open_runner(str(out))
    assert runner.backend == "ort" and isinstance(runner, Runner) and imgsz == (640, 640)
    (output,) = runner.run(np.zeros((1, 3, 640, 640), np.float32))
    assert output.shape == (1, 84, 8400)
    capsys.readouterr()
    assert main(["bench", str(out), "--runs", "2", "--warmup", "1", "--json"]) == 0
    assert '"median_ms"' in capsys.readouterr().out


def test_backend_options_are_checked_with_the_backend_named(readme_backend):
    with pytest.raises(BackendError, match="ort-basic backend takes level = one of basic, extended, not 'fast'"):
        backend_options("ort-basic", {"level": "fast"})
    assert backend_options("ort-basic", {"level": None, "precision": "fp16"}).level == "basic"  # others' flags ignored


def test_an_unknown_backend_and_a_bad_registration_are_refused():
    with pytest.raises(BackendError, match="Unknown backend 'tvn'.*Did you mean 'tvm'"):
        get_backend("tvn")
    with pytest.raises(BackendError, match="needs a docstring"):
        @register_backend("test-undocumented")
        class Undocumented(Backend):
            pass
    assert "test-undocumented" not in BACKENDS


def test_every_backend_option_is_a_compile_flag(capsys):
    from yolograph.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["compile", "--help"])
    text = capsys.readouterr().out
    for flag in ("--tune-trials", "--tuning-db", "--precision", "--workspace-mb", "--timing-cache"):
        assert flag in text
