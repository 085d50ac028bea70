"""ONNX IR -> Relax IRModule, with every shape static.

Relax's ONNX importer turns `Shape`-driven subgraphs (the YOLOv8 decode reads the anchor count
from a `Shape` op) into dynamic-shape tensors that the VM code generator cannot emit. The model
has static input shapes, so we let ONNX shape inference plus graphsurgeon constant folding fold
those subgraphs away first, on a copy: the caller's model is never modified.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from yolograph.errors import BackendError
from yolograph.ir.model import Model


def static_onnx(model: Model) -> onnx.ModelProto:
    """The model as ONNX with shape computations folded into constants (input model untouched).

    BatchNormalization is folded into its conv first with the fold-bn pass: Relax would otherwise
    decompose it and constant-fold each piece with a JIT build (about 12 s for a yolov8n).
    """
    model = model.copy()
    if any(node.op == "BatchNormalization" for node in model.graph.nodes):
        from yolograph.pipeline import run_pipeline

        model, _ = run_pipeline(model, "fold-bn", verify=False)
    proto = model.to_onnx()
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - ONNX raises several types; the graph is still usable
        raise BackendError(f"ONNX shape inference failed on the model ({exc}); TVM needs static shapes.") from exc
    graph = gs.import_onnx(proto)
    graph.fold_constants(fold_shapes=True, error_ok=True)
    graph.cleanup().toposort()
    folded = gs.export_onnx(graph, do_type_check=False)
    folded.ir_version = proto.ir_version
    return folded


def to_relax(model: Model):
    """Import `model` into a Relax IRModule whose `main` takes the graph inputs in order."""
    from tvm.relax.frontend.onnx import from_onnx

    proto = static_onnx(model)
    shapes = {info.name: list(info.shape) for info in model.inputs}
    dtypes = {info.name: np.dtype(info.dtype).name for info in model.inputs}
    try:
        mod = from_onnx(proto, shape_dict=shapes, dtype_dict=dtypes)
    except Exception as exc:  # noqa: BLE001 - the importer raises plain exceptions for unsupported ops
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if model.metadata.get("yolograph.layout") == "NHWC" and model.nodes_by_op("Resize"):
            hint = (" The importer reads every Resize as NCHW: for TVM run to-nhwc with nchw_ops=Resize, "
                    "or compile the NCHW model with --layout NHWC.")
        raise BackendError(f"TVM's Relax ONNX importer cannot read the model: {first}.{hint}") from exc
    ret = mod["main"].ret_ty
    if "ndim=" in str(ret) or "?" in str(ret):
        raise BackendError(f"The model's outputs have dynamic shapes in Relax ({ret}); "
                           "export the model with static shapes (dynamic=False).")
    return mod
