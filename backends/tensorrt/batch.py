"""Make a static batch-N graph batch-dynamic, so one engine serves several batch sizes.

yolograph's IR is static (ultralytics exports batch 1). TensorRT optimization profiles need a
symbolic batch dimension, so before parsing the graph we: name the inputs' and outputs' first
dimension ``batch``; drop intermediate shape annotations (they are hints fixed to the old batch);
and write 0 ("copy this dimension from the input") as the first entry of each activation Reshape
whose constant target shape starts with the static batch. Any other op that bakes the batch in
would make the result wrong, so `check_batch_dynamic` runs both graphs on ONNX Runtime and compares
a batch of distinct samples against one-by-one results before the graph goes to TensorRT.

Contract: per-sample outputs equal to the static graph's within float rounding; the input model is
not modified.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from yolograph.errors import BackendError
from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model

BATCH_DIM = "batch"
_RTOL = 1e-3  # of the largest |output|, per output: batching changes float summation order only


def make_batch_dynamic(model: Model) -> onnx.ModelProto:
    """A copy of `model` whose batch dimension is symbolic; raises BackendError when it cannot be."""
    copy = model.copy()
    graph = copy.graph
    static = {int(t.shape[0]) for t in graph.inputs if t.shape}
    if len(static) != 1:
        raise BackendError(f"The model inputs disagree on the batch size ({sorted(static)}); batch profiles need "
                           "one batch dimension shared by all inputs.")
    batch = static.pop()
    for node in graph.nodes:
        if node.op == "Reshape":
            _make_reshape_batch_relative(model, node, batch)
    graph.cleanup()  # the replaced shape constants
    boundary = {id(t) for t in (*graph.inputs, *graph.outputs)}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and id(tensor) not in boundary:
            tensor.shape = None
    for tensor in (*graph.inputs, *graph.outputs):
        if tensor.shape:
            tensor.shape = [BATCH_DIM, *tensor.shape[1:]]
    proto = copy.to_onnx()
    del proto.graph.value_info[:]
    return proto


def _make_reshape_batch_relative(model: Model, node: gs.Node, batch: int) -> None:
    data, target = node.inputs[0], node.inputs[1]
    shape = constant_value(target)
    if shape is None or constant_value(data) is not None:
        return  # computed shapes follow the batch by themselves; constant data has no batch
    data_shape = model.shape_of(data.name)
    if not data_shape or data_shape[0] != batch:
        return
    values = np.asarray(shape, dtype=np.int64).copy()
    if values.size and values[0] in (-1, 0):
        return
    if not values.size or values[0] != batch or int(node.attrs.get("allowzero", 0)):
        raise BackendError(f"Reshape {node.name} folds the batch dimension into shape {values.tolist()}; the "
                           "engine can only be built for the model's batch size: use batch sizes "
                           f"({batch},).")
    values[0] = 0
    node.inputs[1] = gs.Constant(f"{node.name}/shape_batch_relative", values)


def check_batch_dynamic(model: Model, dynamic: onnx.ModelProto, batch: int = 2, seed: int = 0) -> None:
    """Run `dynamic` on `batch` distinct samples and compare each with `model` on that sample alone."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    try:
        static = ort.InferenceSession(model.serialize(), options, providers=["CPUExecutionProvider"])
        batched = ort.InferenceSession(dynamic.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types for graphs it cannot load
        raise BackendError(f"The batch-dynamic graph does not load ({str(exc).splitlines()[0]}); build with "
                           "batch sizes (1,).") from exc
    rng = np.random.default_rng(seed)
    feeds = [{i.name: _sample(rng, i) for i in static.get_inputs()} for _ in range(batch)]
    singles = [static.run(None, feed) for feed in feeds]
    stacked = {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}
    try:
        together = batched.run(None, stacked)
    except Exception as exc:
        raise BackendError(f"The batch-dynamic graph fails at batch {batch} ({str(exc).splitlines()[0]}); build "
                           "with batch sizes (1,).") from exc
    names = [o.name for o in static.get_outputs()]
    for index, name in enumerate(names):
        reference = np.concatenate([single[index] for single in singles])
        got = together[index]
        scale = float(np.max(np.abs(reference))) or 1.0
        if got.shape != reference.shape or float(np.max(np.abs(got - reference))) > _RTOL * scale:
            raise BackendError(f"Output {name} of the batch-dynamic graph differs from per-sample results, so an "
                               "op bakes in the batch size; build with batch sizes (1,).")


def _sample(rng: np.random.Generator, arg) -> np.ndarray:
    shape = [d if isinstance(d, int) else 1 for d in arg.shape]
    if "float16" in arg.type:
        return rng.random(shape, dtype=np.float32).astype(np.float16)
    if "float" in arg.type:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, 255, size=shape).astype(np.uint8)
