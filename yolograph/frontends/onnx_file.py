"""ONNX file frontend: reads an exported YOLO model (ultralytics exports at opsets 13-21) into a Model.

A dynamic-shape export (`export(dynamic=True)`) is read by fixing its input shape first: from the
`input_shape` the caller gives (the CLI's `--input-shape 1,3,640,640`), else from the export's metadata
(`imgsz`, `batch`; a batch the metadata leaves open becomes 1), said in one line on stderr. A model whose
spatial size is neither given nor in its metadata is refused, naming both fixes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from yolograph.errors import ModelError
from yolograph.ir.metadata import literal
from yolograph.ir.model import Model

MIN_OPSET, MAX_OPSET = 13, 21
# ONNX Runtime's contrib ops (e.g. QuickGelu from insert-qdq{profile=ort-cpu}) are ours to read back.
KNOWN_DOMAINS = ("", "ai.onnx", "com.microsoft")


def load_onnx(path: str | Path, input_shape: Sequence[int] | None = None) -> Model:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Model file {str(path)!r} does not exist; give the path to an .onnx or .pt file.")
    try:
        proto = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise ModelError(f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it.") from exc
    return model_from_proto(proto, source=str(path), input_shape=input_shape)


def model_from_proto(proto: onnx.ModelProto, source: str | None = None,
                     input_shape: Sequence[int] | None = None) -> Model:
    """A Model of `proto` (checked); dynamic input dims are fixed first (see the module docstring)."""
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
    note = fix_input_shape(proto, input_shape, name)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return Model.from_onnx(proto, source=source)


def fix_input_shape(proto: onnx.ModelProto, input_shape: Sequence[int] | None, name: str = "The model") -> str | None:
    """Give every graph input of `proto` a static shape, in place; a one-line note of what was fixed, or None.

    `input_shape` (all dims) wins; otherwise dynamic dims come from the metadata `batch` (default 1) and
    `imgsz` of an NCHW image input. Raises ModelError when a dim cannot be fixed, or when `input_shape`
    contradicts a static dim of the model.
    """
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        if len(inputs) != 1 or any(d <= 0 for d in input_shape):
            raise ModelError(
                f"input_shape {','.join(map(str, input_shape))} must be positive dims for a model with one input; "
                f"{name} has {len(inputs)} inputs."
            )
    fixed: list[str] = []
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        current = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if input_shape is None and all(d is not None for d in current) and current:
            continue
        wanted = _wanted_shape(proto, value.name, current, input_shape, name)
        if tuple(current) == wanted:
            continue
        for dim, size in zip(dims, wanted):
            dim.Clear()
            dim.dim_value = size
        fixed.append(f"{value.name!r} [{','.join(str(d) if d else '?' for d in current)}] -> {'x'.join(map(str, wanted))}")
    if not fixed:
        return None
    # Shapes recorded for the dynamic graph are stale now: shape inference recomputes them.
    del proto.graph.value_info[:]
    for output in proto.graph.output:
        output.type.tensor_type.ClearField("shape")
    origin = "as given" if input_shape is not None else "from the model's metadata (imgsz, batch)"
    return f"dynamic input {', '.join(fixed)} fixed {origin}; pass --input-shape N,C,H,W for another size."


def _wanted_shape(proto: onnx.ModelProto, input_name: str, current: list[int | None],
                  input_shape: tuple[int, ...] | None, name: str) -> tuple[int, ...]:
    if input_shape is not None:
        if len(input_shape) != len(current):
            raise ModelError(
                f"input_shape {','.join(map(str, input_shape))} has {len(input_shape)} dims; input {input_name!r} "
                f"of {name} has {len(current)}."
            )
        clash = [i for i, (have, want) in enumerate(zip(current, input_shape)) if have is not None and have != want]
        if clash:
            raise ModelError(
                f"input_shape {','.join(map(str, input_shape))} contradicts the static dims "
                f"[{','.join(str(d) if d else '?' for d in current)}] of input {input_name!r} of {name}; "
                "keep those dims."
            )
        return input_shape
    meta = {p.key: p.value for p in proto.metadata_props}
    imgsz = literal(meta.get("imgsz"))
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    batch = literal(meta.get("batch"))
    channels = literal(meta.get("channels"))
    if len(current) == 4:
        defaults = [batch if isinstance(batch, int) and batch > 0 else 1,
                    channels if isinstance(channels, int) and channels > 0 else 3,
                    *(imgsz if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 else (None, None))]
        wanted = [have if have is not None else default for have, default in zip(current, defaults)]
        if all(isinstance(d, int) and d > 0 for d in wanted):
            return tuple(int(d) for d in wanted)
    raise ModelError(
        f"Input {input_name!r} of {name} has a dynamic shape [{','.join(str(d) if d else '?' for d in current)}] "
        "and its metadata has no imgsz to fix it; give the shape (--input-shape 1,3,640,640, or "
        "load_model(path, input_shape=(1, 3, 640, 640))) or re-export with a fixed size "
        "(ultralytics: export(format='onnx', dynamic=False, imgsz=640))."
    )


def convert_opset(model: Model, target_opset: int) -> Model:
    """A copy of `model` converted to `target_opset` with onnx's version converter."""
    if model.opset == target_opset:
        return model.copy()
    try:
        converted = onnx.version_converter.convert_version(model.to_onnx(), target_opset)
    except Exception as exc:
        raise ModelError(f"Cannot convert the model from opset {model.opset} to {target_opset}: {exc}") from exc
    return Model.from_onnx(converted, source=model.source)
