"""The JSON file beside every OpenVINO IR yolograph writes: how it was made and how to run it.

`model.xml` (+ `model.bin`) gets `model.xml.json`. The IR itself says nothing about YOLO (image size,
class names, the input layout to-nhwc chose) nor which device and precision it was compiled for; the
sidecar records those, the sha256 of the ONNX graph it was converted from, the pipeline and the OpenVINO
version, and the inference precision OpenVINO actually resolved (on an AVX512_BF16 CPU it picks bf16
unless told f32). Written last, atomically: a sidecar always describes a complete .xml/.bin pair.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yolograph.errors import BackendError
from yolograph.ir.serialization import write_bytes_atomic

FORMAT = "yolograph.openvino-ir"
VERSION = 1


def sidecar_path(xml: str | Path) -> Path:
    """`model.xml` -> `model.xml.json`."""
    xml = Path(xml)
    return xml.with_name(xml.name + ".json")


def xml_of(path: str | Path) -> Path:
    """The IR's .xml for the .xml itself or its sidecar."""
    path = Path(path)
    return path.with_name(path.name[: -len(".json")]) if path.name.endswith(".xml.json") else path


def write_sidecar(xml: Path, data: dict[str, Any]) -> Path:
    path = sidecar_path(xml)
    write_bytes_atomic(path, json.dumps({"format": FORMAT, "version": VERSION, **data}, indent=2).encode())
    return path


def read_sidecar(xml: str | Path) -> dict[str, Any] | None:
    """The sidecar of `xml`, or None when there is none (an IR yolograph did not write)."""
    path = sidecar_path(xml_of(xml))
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"Cannot read the OpenVINO sidecar {path}: {exc}; recompile the model.") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BackendError(f"{path} is not a yolograph OpenVINO sidecar; recompile the model or remove the file.")
    if data.get("version") != VERSION:
        raise BackendError(f"{path} has sidecar version {data.get('version')}; this yolograph reads version "
                           f"{VERSION}: recompile the model.")
    return data
