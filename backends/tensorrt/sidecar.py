"""The small JSON file beside every engine: what goes in and out, and how it was built.

`model.engine` gets `model.engine.json`. A TensorRT engine only runs with the TensorRT version
and GPU that built it (and TensorRT 11 engines are strongly typed), and says nothing about YOLO (image size, class names); the sidecar records
those, the build settings and plan, the TensorRT major and precision mode, the INT8 layer report, and the engine's sha256 so a sidecar
never describes a different engine than the one beside it. Written atomically (temp + rename).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yolograph.errors import BackendError
from yolograph.ir.serialization import write_bytes_atomic

FORMAT = "yolograph.tensorrt-engine"
VERSION = 2  # 2 added tensorrt_major and precision_mode; version 1 sidecars still read
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # -1 for the batch dimension of a batch-profile engine
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> TensorSpec:
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


@dataclass(frozen=True)
class EngineSidecar:
    engine_sha256: str
    engine_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch_sizes: tuple[int, ...]
    precision: str
    build: dict[str, Any]  # BuildSettings.to_json() and BuildPlan.to_json()
    tensorrt_version: str
    device: str
    model: dict[str, Any] = field(default_factory=dict)  # source, imgsz, task, names, stride
    int8_report: dict[str, Any] | None = None
    created: str = ""
    tensorrt_major: int = 10
    precision_mode: str = "builder flags"  # or "strongly typed (precision from the graph)"

    def to_json(self) -> dict:
        data = asdict(self)
        data["inputs"] = [t.to_json() for t in self.inputs]
        data["outputs"] = [t.to_json() for t in self.outputs]
        data["batch_sizes"] = list(self.batch_sizes)
        return {"format": FORMAT, "version": VERSION, **data}

    @classmethod
    def from_json(cls, data: dict, source: str = "the sidecar") -> EngineSidecar:
        if data.get("format") != FORMAT:
            raise BackendError(f"{source} is not a yolograph TensorRT sidecar (format {data.get('format')!r}).")
        if data.get("version") not in READABLE_VERSIONS:
            raise BackendError(f"{source} has sidecar version {data.get('version')}; this yolograph reads "
                               f"version {VERSION}: rebuild the engine.")
        try:
            return cls(
                engine_sha256=str(data["engine_sha256"]),
                engine_bytes=int(data["engine_bytes"]),
                inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
                outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
                batch_sizes=tuple(int(b) for b in data["batch_sizes"]),
                precision=str(data["precision"]),
                build=dict(data["build"]),
                tensorrt_version=str(data["tensorrt_version"]),
                device=str(data["device"]),
                model=dict(data.get("model") or {}),
                int8_report=data.get("int8_report"),
                created=str(data.get("created", "")),
                tensorrt_major=int(data.get("tensorrt_major") or str(data["tensorrt_version"]).split(".")[0]),
                precision_mode=str(data.get("precision_mode", "builder flags")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"{source} is missing or has a malformed field ({exc}); rebuild the engine.") from exc

    @property
    def imgsz(self) -> tuple[int, int] | None:
        size = self.model.get("imgsz")
        if size:
            return (int(size[0]), int(size[1]))
        shape = self.inputs[0].shape if self.inputs else ()
        return (shape[2], shape[3]) if len(shape) == 4 else None


def sidecar_path(engine: str | Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(engine: str | Path, sidecar: EngineSidecar) -> Path:
    """Write `<engine>.json` atomically and return its path."""
    path = sidecar_path(engine)
    write_bytes_atomic(path, (json.dumps(sidecar.to_json(), indent=2) + "\n").encode())
    return path


def read_sidecar(engine: str | Path, *, verify: bool = True) -> EngineSidecar:
    """Read `<engine>.json`; with `verify`, check it describes the engine file beside it."""
    path = sidecar_path(engine)
    if not path.exists():
        raise BackendError(f"{path} is missing; an engine built by yolograph has a sidecar beside it: rebuild "
                           "with `yolograph compile --backend tensorrt`.")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BackendError(f"{path} is not readable JSON ({exc}); rebuild the engine.") from exc
    sidecar = EngineSidecar.from_json(data, source=str(path))
    if verify:
        engine = Path(engine)
        if not engine.exists():
            raise BackendError(f"The engine {engine} is missing beside its sidecar {path.name}.")
        if engine.stat().st_size != sidecar.engine_bytes or sha256_file(engine) != sidecar.engine_sha256:
            raise BackendError(f"{path.name} describes a different engine than {engine.name} (sha256 differs); "
                               "rebuild the engine so the two match.")
    return sidecar


def is_sidecar_engine(path: str | Path) -> bool:
    """True when `path` has a yolograph sidecar beside it (no hashing)."""
    side = sidecar_path(path)
    if not side.exists():
        return False
    try:
        return json.loads(side.read_text()).get("format") == FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
