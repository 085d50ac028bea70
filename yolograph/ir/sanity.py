"""Sanity checks of a freshly loaded model: what would otherwise fail late, silently or confusingly.

- `check_model` (run by `yolograph.frontends.load_model` on every model it returns) refuses weights
  with NaN, or with Inf where they feed a Conv/Gemm/MatMul/BatchNormalization (a corrupt checkpoint or
  diverged training: every output would be NaN, and quantization would write NaN scales), and an
  image input that is not a 4-D batch [N, C, H, W] (or NHWC [N, H, W, C] after to-nhwc).
- `pipeline_warnings` names the passes asked for that treat the YOLO head specially when the model
  has no YOLO head they can find: the passes still run, so this is a warning, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.errors import ModelError
from yolograph.ir.model import Model

# Ops whose constant inputs are weights: an Inf there is corruption, not a deliberate bound.
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
                        "QuantizeLinear", "DequantizeLinear"})
# Passes that find the YOLO head (keep its decode in float, judge box error) and what they do without one.
HEAD_AWARE_PASSES = {
    "insert-qdq": "quantizes every op up to the outputs (the decode normally stays in float)",
    "calibrate": "calibrates every output alike",
    "mixed-precision": "ranks every layer without the head's output groups",
    "prune": "cannot keep the head's channels or measure box error",
    "fast-dfl": "finds no DFL decode to rewrite and changes nothing",
}


def check_model(model: Model, name: str | None = None) -> None:
    """Raise ModelError when the model's weights are not finite or its image input is not a 4-D batch."""
    name = name or model.source or "The model"
    _check_finite_weights(model, name)
    _check_image_input(model, name)


def non_finite_weights(model: Model) -> list[tuple[str, int, int, int]]:
    """(tensor, NaN count, Inf count, size) for each float constant that is corrupt (see WEIGHT_OPS)."""
    found = []
    for tensor in _constants(model.graph):
        values = _values(tensor)
        if values is None or not np.issubdtype(values.dtype, np.floating) or values.size == 0:
            continue
        nan = int(np.count_nonzero(np.isnan(values)))
        inf = int(np.count_nonzero(np.isinf(values)))
        feeds_weights = any(consumer.op in WEIGHT_OPS for consumer in tensor.outputs)
        if nan or (inf and feeds_weights):
            found.append((tensor.name, nan, inf if feeds_weights else 0, int(values.size)))
    return found


def check_pipeline(model: Model, passes: Iterable) -> list[str]:
    """Before a pipeline runs: raise ModelError for a pass the model cannot work with, return warnings.

    A pass given images (calibration, pruning data) feeds RGB pictures, so the model's image input
    must have 3 channels; head-aware passes on a model without a YOLO head only warn.
    """
    passes = list(passes)
    image = model.graph.inputs[0] if model.graph.inputs else None
    shape = list(image.shape or []) if image is not None else []
    fed = [p.spec() for p in passes if getattr(p.options, "images", None)]
    if fed and len(shape) == 4 and 3 not in (shape[1], shape[3]):
        raise ModelError(
            f"{fed[0]} feeds RGB images (3 channels), but the model's input {image.name!r} is {shape}; "
            "give an image model with a [N, 3, H, W] input, or calibrate with npy= tensors of the model's input shape."
        )
    return pipeline_warnings(model, [p.name for p in passes])


def pipeline_warnings(model: Model, pass_names: Iterable[str]) -> list[str]:
    """One sentence per head-aware pass in `pass_names` when the model has no YOLO head (else none)."""
    if model.facts.task is not None or model.facts.num_classes is not None:
        return []
    outputs = ", ".join(str(t) for t in model.outputs)
    return [
        f"{name} looks for a YOLO head, and this model has none it can find (outputs {outputs}); it {effect}. "
        "Use an ultralytics export (detect/segment/pose/obb/classify) if that is not what you want."
        for name in dict.fromkeys(pass_names) if name in HEAD_AWARE_PASSES
        for effect in [HEAD_AWARE_PASSES[name]]
    ]


def _check_finite_weights(model: Model, name: str) -> None:
    corrupt = non_finite_weights(model)
    if not corrupt:
        return
    tensor, nan, inf, size = max(corrupt, key=lambda row: row[1] + row[2])
    what = " and ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if part)
    more = f" (and {len(corrupt) - 1} more tensor{'s' if len(corrupt) > 2 else ''})" if len(corrupt) > 1 else ""
    raise ModelError(
        f"{name} has non-finite weights: {what} of {size} values in {tensor!r}{more}. The checkpoint is corrupt or "
        "its training diverged; every output would be NaN. Re-export it from a checkpoint with finite weights."
    )


def _check_image_input(model: Model, name: str) -> None:
    if not model.graph.inputs:
        raise ModelError(f"{name} has no inputs; a YOLO model takes an image batch [N, C, H, W].")
    image = model.graph.inputs[0]
    shape = list(image.shape or [])
    if len(shape) != 4:
        raise ModelError(
            f"{name}'s input {image.name!r} has shape {shape} (rank {len(shape)}); yolograph needs a 4-D image "
            "batch [N, C, H, W], e.g. [1, 3, 640, 640]. Re-export the model with a batch axis "
            "(ultralytics: export(format='onnx', imgsz=640))."
        )


def _constants(graph: gs.Graph) -> list[gs.Tensor]:
    tensors = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    tensors += [n.outputs[0] for n in graph.nodes if n.op == "Constant" and n.outputs]
    return tensors


def _values(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    value = tensor.inputs[0].attrs.get("value") if tensor.inputs else None
    if isinstance(value, gs.Constant):
        return np.asarray(value.values)
    return np.asarray(value) if isinstance(value, np.ndarray) else None
