"""Lower any supported ultralytics model tree by walking its layers the way `BaseModel.forward` runs them.

Every layer record carries its inputs (`f`: -1 for the previous layer, else absolute layer
indices) and its index (`i`); blocks are lowered by `blocks.py`, the last layer's head by
`heads.py`. Nothing is looked up in a table of architectures: widths, depths and flags come from
the records, so YOLOv8 / YOLO11 / YOLO26 of any scale and every task with a Detect, Segment,
Pose, OBB or Classify head lower the same way. Before anything is emitted the whole tree is
checked against the modules yolograph knows, and an unknown one is named in one sentence.

The graph keeps BatchNorm unfused (Conv -> BatchNormalization), so `fold-bn` applies, and gets
the input/output names, shapes and metadata_props of the ultralytics ONNX export (`images`,
`output0`, `output1` for Segment; task, head, stride, imgsz, names, kpt_shape, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.errors import ModelError
from yolograph.frontends.pt.blocks import BLOCKS, lower_block
from yolograph.frontends.pt.checkpoint import Checkpoint, ModuleRecord
from yolograph.frontends.pt.emitter import ACTIVATIONS, Emitter, Value, concat
from yolograph.frontends.pt.heads import HEAD_PARTS, HEADS
from yolograph.ir.model import Model

OPSET = 17
IR_VERSION = 8
MODEL_TYPES = frozenset({"DetectionModel", "SegmentationModel", "PoseModel", "OBBModel", "ClassificationModel"})
LAYER_ONLY = frozenset({"Concat", "BatchNorm2d"})
# Not named in the "what is supported" sentence: torch containers and primitives every block uses.
TORCH_CONTAINERS_AND_PRIMITIVES = frozenset(
    {"Sequential", "ModuleList", "Identity", "Conv2d", "ConvTranspose2d", "MaxPool2d"}
)
SUPPORTED_MODULES = (
    frozenset(BLOCKS) | frozenset(HEADS) | HEAD_PARTS | frozenset(ACTIVATIONS) | LAYER_ONLY | MODEL_TYPES
)


def unsupported_modules(record: ModuleRecord) -> list[str]:
    """Class names in the tree that yolograph cannot lower (sorted, each once)."""
    return sorted({kind for kind in _tree_types(record) if kind not in SUPPORTED_MODULES})


def check_supported(record: ModuleRecord) -> None:
    """ModelError naming every module of the tree yolograph cannot lower, and what it can."""
    unknown = unsupported_modules(record)
    if unknown:
        blocks = sorted((set(BLOCKS) - TORCH_CONTAINERS_AND_PRIMITIVES) | {"Concat"})
        heads = list(HEADS)
        raise ModelError(
            f"unsupported: {', '.join(unknown)}. yolograph lowers ultralytics YOLOv8 / YOLO11 / YOLO26 checkpoints "
            f"made of {', '.join(blocks)} with a {', '.join(heads[:-1])} or {heads[-1]} head; "
            "export this model to ONNX with ultralytics instead."
        )


def lower_tree(
    checkpoint: Checkpoint,
    record: ModuleRecord,
    *,
    imgsz: tuple[int, int],
    names_for: Callable[[int], dict[int, str]],
) -> Model:
    """The IR Model of `record` (unfused BN, export names and metadata); `names_for(nc)` gives the class names."""
    check_supported(record)
    layers = _layers(record)
    head = layers[-1][1]
    task, handler = HEADS.get(head.type_name, (None, None))
    if handler is None:
        raise ModelError(
            f"unsupported: {head.type_name} as the last layer. yolograph lowers models ending in a "
            f"{', '.join(HEADS)} head."
        )
    declared = record.get("task") or _get(record.get("args"), "task")
    if declared is not None and declared != task:
        raise ModelError(
            f"unsupported: task {declared!r} with a {head.type_name} head; the checkpoint is inconsistent."
        )
    channels = _channels(record)
    em = Emitter()
    images = gs.Variable("images", dtype=np.float32, shape=[1, channels, *imgsz])
    outputs: list[Value] = []
    for index, (position, layer) in enumerate(layers):
        inputs = _layer_inputs(layer, index, outputs, Value(images, (1, channels, *imgsz)))
        key, scope = f"model.{position}", f"/model.{position}"
        if index == len(layers) - 1:
            results = handler(em, layer, inputs, key, scope, imgsz)
            break
        if layer.type_name == "Concat":
            outputs.append(concat(em, inputs, f"{scope}/Concat", axis=int(layer.get("d", 1))))
        elif len(inputs) != 1:
            raise ModelError(f"unsupported: {layer.type_name} at {key} reads {len(inputs)} layers; only Concat does.")
        else:
            outputs.append(lower_block(em, layer, inputs[0], key, scope))
    graph_outputs = [value.var for value in results]
    graph = gs.Graph(nodes=em.nodes, inputs=[images], outputs=graph_outputs, opset=OPSET, name=_model_name(record))
    graph.cleanup()  # drops nothing of the lowered forward; removes initializers of unused branches, if any
    num_classes = int(head.get("nc") or results[0].shape[1])
    metadata = export_metadata(checkpoint, record, head, task=task, imgsz=imgsz, names=names_for(num_classes))
    return Model(graph, metadata=metadata, ir_version=IR_VERSION, source=str(checkpoint.path))


# -- layers ---------------------------------------------------------------------------------------


def _layers(record: ModuleRecord) -> list[tuple[int, ModuleRecord]]:
    sequential = record.children.get("model")
    if not isinstance(sequential, ModuleRecord):
        raise ModelError("The checkpoint's model has no 'model' layer list; it is not an ultralytics model.")
    layers = []
    for name, layer in sequential.children.items():
        if not isinstance(layer, ModuleRecord) or not str(name).isdigit():
            raise ModelError(f"The checkpoint's layer {name!r} is not a module; it is malformed.")
        position = int(name)
        if layer.get("i", position) != position or position != len(layers):
            raise ModelError(
                f"The checkpoint's layer {name} is out of order (index {layer.get('i')}); it is malformed."
            )
        layers.append((position, layer))
    if not layers:
        raise ModelError("The checkpoint's model has no layers; it is malformed.")
    return layers


def _layer_inputs(layer: ModuleRecord, index: int, outputs: list[Value], images: Value) -> list[Value]:
    """The values a layer reads: `f` is -1 (previous output), an absolute index, or a list of those."""
    source = layer.get("f", -1)
    sources = source if isinstance(source, (list, tuple)) else [source]
    values = []
    for item in sources:
        if not isinstance(item, int) or not (item == -1 or 0 <= item < index):
            raise ModelError(f"The checkpoint's layer {index} reads layer {item!r}, which does not precede it.")
        if item == -1:
            values.append(outputs[-1] if outputs else images)
        else:
            values.append(outputs[item])
    return values


def _channels(record: ModuleRecord) -> int:
    yaml = record.get("yaml")
    channels = yaml.get("channels", 3) if isinstance(yaml, Mapping) else 3
    if not isinstance(channels, int) or channels < 1:
        raise ModelError(f"The checkpoint's yaml has {channels!r} input channels; it is malformed.")
    return channels


def _tree_types(record: ModuleRecord) -> Iterator[str]:
    yield record.type_name
    for module in record.children.values():
        if isinstance(module, ModuleRecord):
            yield from _tree_types(module)


def _model_name(record: ModuleRecord) -> str:
    yaml = record.get("yaml")
    name = str(yaml.get("yaml_file", "model")) if isinstance(yaml, Mapping) else "model"
    return name.rsplit("/", 1)[-1].removesuffix(".yaml")


def _get(args: Any, key: str) -> Any:
    return args.get(key) if isinstance(args, (Mapping, ModuleRecord)) else None


# -- metadata -------------------------------------------------------------------------------------


def export_metadata(
    checkpoint: Checkpoint,
    record: ModuleRecord,
    head: ModuleRecord,
    *,
    task: str,
    imgsz: tuple[int, int],
    names: dict[int, str],
) -> dict[str, str]:
    """metadata_props as the ultralytics ONNX exporter writes them (stride, task, head, imgsz, names, ...)."""
    contents = checkpoint.contents if isinstance(checkpoint.contents, Mapping) else {}
    stride = record.get("stride")
    values = np.asarray(stride, dtype=np.float64).ravel() if stride is not None else np.array([32.0])
    metadata = {
        "description": f"{_model_name(record)} lowered by yolograph from {checkpoint.path.name}",
        "stride": str(int(values.max())),
        "task": task,
        "head": head.type_name,
        "batch": "1",
        "imgsz": str(list(imgsz)),
        "names": str(names),
        "channels": str(_channels(record)),
        "end2end": "False",
        "source_checkpoint": checkpoint.path.name,
    }
    if task == "pose":
        metadata["kpt_shape"] = str([int(v) for v in head.get("kpt_shape")])
    for key in ("version", "license", "docs", "date"):
        if isinstance(contents.get(key), str):
            metadata[key] = contents[key]
    return metadata
