"""ONNX file frontend: reads an exported YOLOv8 (ultralytics exports at opsets 13-21) into a Model."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from yolograph.errors import ModelError
from yolograph.ir.model import Model

MIN_OPSET, MAX_OPSET = 13, 21
# ONNX Runtime's contrib ops (e.g. QuickGelu from insert-qdq{profile=ort-cpu}) are ours to read back.
KNOWN_DOMAINS = ("", "ai.onnx", "com.microsoft")


def load_onnx(path: str | Path) -> Model:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Model file {str(path)!r} does not exist; give the path to an .onnx or .pt file.")
    try:
        proto = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise ModelError(f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it.") from exc
    return model_from_proto(proto, source=str(path))


def model_from_proto(proto: onnx.ModelProto, source: str | None = None) -> Model:
    name = source or "The model"
    if not proto.graph.node:
        raise ModelError(f"{name} has an empty graph; it is not a usable ONNX model.")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelError(f"{name} fails the ONNX checker: {first_line}") from exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(
            f"{name} uses opset {opset}; yolograph reads opsets {MIN_OPSET}-{MAX_OPSET}. "
            "Re-export with e.g. export(format='onnx', opset=17)."
        )
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in KNOWN_DOMAINS})
    if custom:
        raise ModelError(
            f"{name} uses custom operator domains {custom}; yolograph reads standard ONNX ops and "
            "ONNX Runtime's com.microsoft ops."
        )
    return Model.from_onnx(proto, source=source)


def convert_opset(model: Model, target_opset: int) -> Model:
    """A copy of `model` converted to `target_opset` with onnx's version converter."""
    if model.opset == target_opset:
        return model.copy()
    try:
        converted = onnx.version_converter.convert_version(model.to_onnx(), target_opset)
    except Exception as exc:
        raise ModelError(f"Cannot convert the model from opset {model.opset} to {target_opset}: {exc}") from exc
    return Model.from_onnx(converted, source=model.source)
