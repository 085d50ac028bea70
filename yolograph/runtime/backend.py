"""The backend interface and registry, mirroring `register_pass`.

A backend turns an optimized Model into something that runs (an ONNX file, a TVM library, a TensorRT
engine, an OpenVINO IR) and loads such an artifact into a `Runner`. It is one package under
`backends/`, registered with a name and an options dataclass whose fields are its CLI flags:

    @dataclass(frozen=True)
    class MyOptions:
        device: str = field(default="CPU", metadata={"help": "device to compile for"})

    @register_backend("mine")
    class MyBackend(Backend):
        \"\"\"One line: what the backend targets.\"\"\"
        Options = MyOptions
        artifact_suffixes = (".mine",)
        def compile(self, model, output, options): ...
        def load_runner(self, path, *, threads=0): ...

The core (this module included) never imports a backend: the built-in ones and any installed plugin are
found through the `yolograph.backends` entry point group when the registry is first read.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from yolograph.errors import BackendError
from yolograph.plugins import load_plugins
from yolograph.runtime.timing import LatencyStats


@runtime_checkable
class Runner(Protocol):
    """What every backend's loaded artifact offers."""

    backend: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feed: Any) -> list[np.ndarray]: ...

    def predict(self, images: np.ndarray) -> np.ndarray: ...

    def benchmark(self, runs: int = 50, warmup: int = 5, seed: int = 0) -> LatencyStats: ...


@dataclasses.dataclass(frozen=True)
class NoBackendOptions:
    """Options of a backend that takes none."""


class Backend:
    """Base class of every backend. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoBackendOptions
    extra: ClassVar[str] = ""  # the pip extra that installs what it needs: pip install 'yolograph[extra]'
    artifact_suffixes: ClassVar[tuple[str, ...]] = ()

    def compile(self, model: Any, output: Path, options: Any) -> Path:
        raise NotImplementedError

    def load_runner(self, path: Path, *, threads: int = 0) -> Runner:
        raise NotImplementedError

    def is_artifact(self, path: Path) -> bool:
        """True when `path` is this backend's compiled artifact (default: by file suffix)."""
        return Path(path).suffix in self.artifact_suffixes

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(name: str):
    """Class decorator: register a Backend subclass under `name` (idempotent for the same class)."""

    def decorate(cls: type[Backend]) -> type[Backend]:
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise BackendError(f"register_backend({name!r}) decorates a Backend subclass, not {cls!r}.")
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise BackendError(f"A backend named {name!r} is already registered ({known.__module__}).")
        if "__doc__" not in cls.__dict__ or not cls.__doc__:
            raise BackendError(f"Backend {name!r} needs a docstring that says what it targets.")
        if not dataclasses.is_dataclass(cls.Options):
            raise BackendError(f"Backend {name!r}: Options must be a dataclass.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered_backends() -> dict[str, type[Backend]]:
    """Name -> backend class for every registered backend (built-ins and plugins loaded first)."""
    load_plugins("yolograph.backends")
    return dict(_REGISTRY)


def get_backend(name: str) -> Backend:
    backends = registered_backends()
    if name not in backends:
        close = difflib.get_close_matches(name, backends, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BackendError(f"Unknown backend {name!r}; use one of {', '.join(sorted(backends))}.{hint}")
    return backends[name]()


def backend_options(name: str, values: dict[str, Any] | None = None) -> Any:
    """The backend's Options built from `values` (None entries keep the defaults; unknown names ignored).

    The CLI passes all its backend flags; each backend takes the fields it declares.
    """
    options_type = get_backend(name).Options
    fields = {f.name for f in dataclasses.fields(options_type)}
    given = {k: v for k, v in (values or {}).items() if k in fields and v is not None}
    hints = typing.get_type_hints(options_type)
    for key, value in given.items():
        allowed = _literal_values(hints[key])
        if allowed and value not in allowed:
            raise BackendError(f"The {name} backend takes {key} = one of {', '.join(map(str, allowed))}, "
                               f"not {value!r}.")
    try:
        return options_type(**given)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"Invalid {name} backend options: {exc}.") from exc


def _literal_values(hint: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal (or Literal | None) type hint; () for any other type."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return tuple(v for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal for v in typing.get_args(a))


def compile_for_backend(name: str, model: Any, output: Path, options: Any = None) -> Path:
    """Write `model` for backend `name`; `options` is its Options (default: the defaults)."""
    backend = get_backend(name)
    return backend.compile(model, Path(output), options if options is not None else backend.Options())


def detect_backend(path: Path) -> str | None:
    """The backend whose artifact `path` is, None for a model file (.onnx, .pt) or built-in name."""
    if path.suffix in (".onnx", ".pt"):
        return None
    for name, cls in sorted(registered_backends().items()):
        if name != "ort" and cls().is_artifact(path):
            return name
    return None


def open_runner(reference: str | None, *, backend: str | None = None, threads: int = 0,
                input_shape: Sequence[int] | None = None) -> tuple[Runner, tuple[int, int]]:
    """A runner for a model file, built-in name or compiled artifact, and its image size.

    `backend` None: found from the artifact (see detect_backend); a model file runs on ONNX Runtime.
    input_shape: the static shape a dynamic-shape .onnx is fixed to (see load_model).
    """
    path = Path(reference) if reference else None
    name = backend or (detect_backend(path) if path is not None else None)
    if name in (None, "ort"):
        from yolograph.frontends import load_model
        from yolograph.runtime.ort import OrtOptions, OrtRunner

        model = load_model(reference, input_shape=input_shape)
        runner = OrtRunner(model, OrtOptions(threads=threads))
        return runner, tuple(runner.imgsz)
    if path is None:
        raise BackendError(f"The {name} backend runs a compiled artifact; name its path.")
    runner = get_backend(name).load_runner(path, threads=threads)
    imgsz = getattr(runner, "imgsz", None)
    return runner, (tuple(imgsz) if imgsz else (640, 640))


def option_fields(names: Sequence[str] | None = None) -> list[tuple[str, dataclasses.Field, type[Backend]]]:
    """(backend name, field, backend class) for every option of the named (default: all) backends."""
    backends = registered_backends()
    rows = []
    for name in names or sorted(backends):
        for field in dataclasses.fields(backends[name].Options):
            rows.append((name, field, backends[name]))
    return rows
