"""Lower a safely read ultralytics checkpoint to the IR: the YOLOv8 detect builder or the record walker.

A stock YOLOv8 detect checkpoint is only *checked*, never run: its model yaml must be the standard
yolov8.yaml detect topology, every module in the tree one of the YOLOv8 detect modules, and the
hyper-parameters the builder bakes in (BN eps, SiLU, nearest x2 upsampling, reg_max) must match.
The weights (ultralytics state_dict names, cast to float32) then go to the built-in builder, which
emits the same unfused graph it builds for `yolov8n` ... `yolov8x` (Conv -> BatchNormalization ->
SiLU), so `fold-bn` applies.

Every other checkpoint (YOLO11, YOLO26, the Segment / Pose / OBB / Classify heads, edited yamls)
goes to `walker.lower_tree`, which lowers each layer from its own record; a module it does not
know is refused with "unsupported: <module>. ..." naming what is supported: no guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from yolograph.errors import ModelError
from yolograph.frontends.pt.checkpoint import Checkpoint, ModuleRecord, state_dict
from yolograph.frontends.yolov8_arch import BN_EPSILON, YOLOV8_LAYERS, YOLOV8_SCALES, YoloV8Spec
from yolograph.ir.model import Model

YAML_MODULES = frozenset({"Conv", "C2f", "SPPF", "nn.Upsample", "Concat", "Detect"})

# Every class a YOLOv8 detect module tree is made of (short names of the pickled classes).
TREE_MODULES = frozenset(
    {
        "DetectionModel", "Sequential", "ModuleList", "Conv", "Conv2d", "BatchNorm2d", "SiLU",
        "C2f", "Bottleneck", "SPPF", "MaxPool2d", "Upsample", "Concat", "Detect", "DFL",
    }
)  # fmt: skip
DEFAULT_IMGSZ = 640


@dataclass(frozen=True)
class Architecture:
    """What the checkpoint's yaml says: scale name, multipliers and class count."""

    scale: str
    depth: float
    width: float
    max_channels: int
    num_classes: int
    reg_max: int


def lower_checkpoint(checkpoint: Checkpoint) -> Model:
    """Build the IR Model of an ultralytics checkpoint (unfused BN, export names and metadata).

    A stock YOLOv8 detect model goes through the built-in builder (the graph of the unfused
    ultralytics export, node for node); every other model (YOLO11, YOLO26, the segment, pose, obb
    and classify heads, custom yamls) through the record walker (`walker.py`).
    """
    record = select_model_record(checkpoint)
    try:
        arch = check_architecture(record)
    except ModelError:
        return lower_other(checkpoint, record)
    return lower_yolov8_detect(checkpoint, record, arch)


def lower_other(checkpoint: Checkpoint, record: ModuleRecord) -> Model:
    """Any supported model tree, by walking its layer records (`walker.lower_tree`)."""
    from yolograph.frontends.pt.walker import lower_tree

    imgsz = training_imgsz(record, checkpoint.contents)
    try:
        model = lower_tree(
            checkpoint, record, imgsz=imgsz, names_for=lambda num_classes: class_names(record, num_classes)
        )
    except ModelError as exc:
        message = str(exc)
        raise ModelError(message if message.startswith("unsupported:") else f"{checkpoint.path}: {message}") from exc
    return model


def lower_yolov8_detect(checkpoint: Checkpoint, record: ModuleRecord, arch: Architecture) -> Model:
    """A stock YOLOv8 detect checkpoint through the built-in builder."""
    names = class_names(record, arch.num_classes)
    imgsz = training_imgsz(record, checkpoint.contents)
    stride = max_stride(record)
    if imgsz[0] % stride or imgsz[1] % stride:
        raise ModelError(f"{checkpoint.path}: image size {imgsz} is not a multiple of the stride {stride}.")
    spec = YoloV8Spec(
        scale=arch.scale,
        depth=arch.depth,
        width=arch.width,
        max_channels=arch.max_channels,
        num_classes=arch.num_classes,
        imgsz=imgsz,
        reg_max=arch.reg_max,
        names=names,
    )
    weights = float32_weights(state_dict(record))
    metadata = checkpoint_metadata(checkpoint, record, names=names, imgsz=imgsz, stride=stride)
    from yolograph.frontends.builder import build_yolov8

    try:
        model = build_yolov8(spec, weights, metadata=metadata)
    except ModelError as exc:
        raise ModelError(f"{checkpoint.path}: {exc}") from exc
    model.source = str(checkpoint.path)
    return model


# -- which record ---------------------------------------------------------------------------------


def select_model_record(checkpoint: Checkpoint) -> ModuleRecord:
    """The checkpoint's model: `model`, else `ema` (a mid-training checkpoint), else the top object."""
    contents = checkpoint.contents
    if isinstance(contents, ModuleRecord):
        return contents
    if isinstance(contents, Mapping):
        for key in ("model", "ema"):
            if isinstance(contents.get(key), ModuleRecord):
                return contents[key]
    raise ModelError(
        f"{checkpoint.path} holds no pickled model (no 'model' or 'ema' module); "
        "give an ultralytics training checkpoint such as best.pt."
    )


# -- architecture checks ----------------------------------------------------------------------


def check_architecture(record: ModuleRecord) -> Architecture:
    """Check the record is a standard YOLOv8 detect model and read its scale; else ModelError."""
    unsupported = sorted(set(_tree_types(record)) - TREE_MODULES)
    yaml = record.get("yaml")
    if not isinstance(yaml, Mapping):
        raise ModelError("The checkpoint's model has no yaml dict; it is not an ultralytics model.")
    layers = [*(yaml.get("backbone") or []), *(yaml.get("head") or [])]
    unsupported += sorted({str(layer[2]) for layer in layers if _is_layer(layer)} - YAML_MODULES - set(unsupported))
    if unsupported:
        raise ModelError(
            f"unsupported: {', '.join(unsupported)}. yolograph lowers YOLOv8 detect checkpoints only "
            "(Conv, C2f, SPPF, Upsample, Concat, Detect); export this model to ONNX with ultralytics instead."
        )
    task = record.get("task") or _get(record.get("args"), "task") or "detect"
    if task != "detect":
        raise ModelError(f"unsupported: task {task!r}. yolograph lowers YOLOv8 detect checkpoints only.")
    _check_topology(layers)
    if yaml.get("activation") not in (None, "nn.SiLU()"):
        raise ModelError(f"unsupported: activation {yaml['activation']}. YOLOv8 detect uses SiLU.")
    if yaml.get("channels", 3) != 3:
        raise ModelError(f"unsupported: {yaml['channels']} input channels. yolograph lowers 3-channel models.")
    _check_modules(record, len(layers))
    depth, width, max_channels, scale = _multipliers(yaml)
    detect = _detect_record(record)
    num_classes = _consistent_class_count(record, yaml, detect)
    reg_max = detect.get("reg_max", 16)
    if not isinstance(reg_max, int) or reg_max < 1:
        raise ModelError(f"The checkpoint's Detect head has reg_max {reg_max!r}; it is malformed.")
    return Architecture(scale, depth, width, max_channels, num_classes, reg_max)


def _tree_types(record: ModuleRecord) -> Iterator[str]:
    yield record.type_name
    for child in record.children.values():
        if isinstance(child, ModuleRecord):
            yield from _tree_types(child)


def _is_layer(layer: Any) -> bool:
    return isinstance(layer, (list, tuple)) and len(layer) == 4


def _normalize(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_normalize(v) for v in value)
    return None if value == "None" else value


def _check_topology(layers: list[Any]) -> None:
    if len(layers) != len(YOLOV8_LAYERS) or not all(_is_layer(layer) for layer in layers):
        raise ModelError(
            f"unsupported: a custom model yaml with {len(layers)} layers. yolograph lowers the standard "
            f"yolov8.yaml detect topology ({len(YOLOV8_LAYERS)} layers)."
        )
    for index, (layer, expected) in enumerate(zip(layers, YOLOV8_LAYERS)):
        source, repeats, module, args = (_normalize(part) for part in layer)
        if (source, repeats, *_arch_spelling(module, args)) != expected:
            raise ModelError(
                f"unsupported: layer {index} is {module} from {source} x{repeats} with args {list(args)}; "
                f"yolov8.yaml has {expected[2]} from {expected[0]} x{expected[1]} with args {list(expected[3])}. "
                "yolograph lowers the standard YOLOv8 detect topology only."
            )


def _arch_spelling(module: str, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """A yaml layer's module and args as yolov8_arch.YOLOV8_LAYERS spells them."""
    if module == "nn.Upsample" and len(args) == 3 and args[0] is None and args[2] == "nearest":
        return "Upsample", (args[1],)
    if module == "C2f" and len(args) == 1:
        return module, (*args, False)  # shortcut defaults to False
    if module == "Detect" and len(args) == 1:
        return module, ()  # 'nc' or the class count, checked against Detect.nc later
    return module, args


def _check_modules(record: ModuleRecord, layer_count: int) -> None:
    """The instantiated modules agree with the yaml and with what the builder emits."""
    layers = _sequential(record)
    modules = [layers.get(str(i)) for i in range(layer_count)]
    types = [m.type_name if isinstance(m, ModuleRecord) else None for m in modules]
    expected = [layer[2] for layer in YOLOV8_LAYERS]
    if len(layers) != layer_count or types != expected:
        raise ModelError(
            f"unsupported: the checkpoint's module list {types} does not match its yaml {expected}; "
            "the checkpoint was modified after training."
        )
    for name, module in _named_modules(record):
        kind = module.type_name
        if kind == "BatchNorm2d" and not np.isclose(module.get("eps", BN_EPSILON), BN_EPSILON, rtol=1e-6, atol=0):
            raise ModelError(
                f"unsupported: BatchNorm2d eps {module.get('eps')} at {name}; YOLOv8 uses eps={BN_EPSILON}."
            )
        if kind == "Conv":
            act = module.children.get("act")
            if not isinstance(act, ModuleRecord) or act.type_name != "SiLU":
                found = act.type_name if isinstance(act, ModuleRecord) else "no activation"
                raise ModelError(f"unsupported: Conv at {name} with {found}; YOLOv8 detect Convs use SiLU.")
            if not isinstance(module.children.get("bn"), ModuleRecord):
                raise ModelError(
                    f"unsupported: fused Conv at {name} (no BatchNorm2d). Lower the unfused training checkpoint "
                    "(best.pt/last.pt) instead of a fused model."
                )
        if kind == "Upsample" and (module.get("mode") != "nearest" or module.get("scale_factor") not in (2, 2.0)):
            raise ModelError(
                f"unsupported: Upsample at {name} with mode {module.get('mode')!r} x{module.get('scale_factor')}; "
                "YOLOv8 upsamples nearest x2."
            )
        if kind == "Detect" and (module.get("end2end") or module.get("nl", 3) != 3):
            raise ModelError(f"unsupported: Detect at {name} with end2end/extra levels; YOLOv8 Detect has 3 levels.")


def _sequential(record: ModuleRecord) -> Mapping[str, Any]:
    layers = record.children.get("model")
    if not isinstance(layers, ModuleRecord):
        raise ModelError("The checkpoint's model has no 'model' layer list; it is not an ultralytics model.")
    return layers.children


def _named_modules(record: ModuleRecord, prefix: str = "") -> Iterator[tuple[str, ModuleRecord]]:
    yield prefix.rstrip(".") or "model", record
    for name, child in record.children.items():
        if isinstance(child, ModuleRecord):
            yield from _named_modules(child, f"{prefix}{name}.")


def _detect_record(record: ModuleRecord) -> ModuleRecord:
    return _sequential(record)[str(len(YOLOV8_LAYERS) - 1)]


def _multipliers(yaml: Mapping[str, Any]) -> tuple[float, float, int, str]:
    scales = yaml.get("scales")
    if scales:
        scale = yaml.get("scale") or _scale_from_yaml_file(yaml.get("yaml_file"), scales)
        if scale not in scales:
            raise ModelError(
                f"The checkpoint's yaml has scale {scale!r} but defines scales {sorted(scales)}; it is malformed."
            )
        depth, width, max_channels = (float(scales[scale][0]), float(scales[scale][1]), int(scales[scale][2]))
    elif "depth_multiple" in yaml and "width_multiple" in yaml:
        # Pre-'scales' yaml: ultralytics then caps no channel count (its max_channels is infinite).
        depth, width, max_channels = float(yaml["depth_multiple"]), float(yaml["width_multiple"]), 1 << 30
        scale = yaml.get("scale")
    else:
        raise ModelError("The checkpoint's yaml has neither 'scales' nor depth/width multiples; it is malformed.")
    # A stock scale keeps its name; edited multipliers make a 'custom' model.
    stock = YOLOV8_SCALES.get(str(scale))
    return depth, width, max_channels, (str(scale) if stock == (depth, width, max_channels) else "custom")


def _scale_from_yaml_file(yaml_file: Any, scales: Mapping[str, Any]) -> str | None:
    """The scale letter of 'yolov8n.yaml'-style names, else the yaml's first scale (what ultralytics falls back to)."""
    match = re.search(r"yolov8([nslmx])", str(yaml_file or ""))
    if match and match.group(1) in scales:
        return match.group(1)
    return next(iter(scales), None)


def _consistent_class_count(record: ModuleRecord, yaml: Mapping[str, Any], detect: ModuleRecord) -> int:
    counts = {"model.nc": record.get("nc"), "yaml nc": yaml.get("nc"), "Detect.nc": detect.get("nc")}
    known = {k: v for k, v in counts.items() if v is not None}
    values = set(known.values())
    if len(values) != 1 or not all(isinstance(v, int) and v > 0 for v in values):
        raise ModelError(f"The checkpoint's class counts disagree or are invalid ({known}); it is malformed.")
    return values.pop()


# -- metadata -------------------------------------------------------------------------------------


def class_names(record: ModuleRecord, num_classes: int) -> dict[int, str]:
    """`model.names` as {index: name}; numbered names when the checkpoint has none."""
    names = record.get("names")
    if names is None:
        return {i: f"class{i}" for i in range(num_classes)}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, Mapping) or sorted(names) != list(range(num_classes)):
        raise ModelError(
            f"The checkpoint's class names do not cover classes 0..{num_classes - 1} (nc={num_classes}); "
            "fix model.names in the checkpoint."
        )
    return {int(k): str(v) for k, v in sorted(names.items())}


def training_imgsz(record: ModuleRecord, contents: Any) -> tuple[int, int]:
    """The image size the model was trained at (model.args, else train_args), as (height, width)."""
    for args in (record.get("args"), contents.get("train_args") if isinstance(contents, Mapping) else None):
        value = _get(args, "imgsz")
        if isinstance(value, int) and value > 0:
            return (value, value)
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
            return (int(value[0]), int(value[1]))
    return (DEFAULT_IMGSZ, DEFAULT_IMGSZ)


def max_stride(record: ModuleRecord) -> int:
    stride = record.get("stride")
    values = np.asarray(stride, dtype=np.float64).ravel() if stride is not None else np.array([8.0, 16.0, 32.0])
    if values.size == 0 or not np.all(values > 0):
        raise ModelError(f"The checkpoint's model.stride {stride!r} is invalid; it is malformed.")
    return int(values.max())


def checkpoint_metadata(
    checkpoint: Checkpoint, record: ModuleRecord, *, names: dict[int, str], imgsz: tuple[int, int], stride: int
) -> dict[str, str]:
    """ONNX metadata_props in the ultralytics export's format, from the checkpoint."""
    contents = checkpoint.contents if isinstance(checkpoint.contents, Mapping) else {}
    yaml_file = str(record.get("yaml", {}).get("yaml_file", "yolov8.yaml"))
    metadata = {
        "description": f"YOLOv8 {yaml_file} lowered by yolograph from {checkpoint.path.name}",
        "task": "detect",
        "stride": str(stride),
        "imgsz": str(list(imgsz)),
        "names": str(names),
        "batch": "1",
        "channels": "3",
        "source_checkpoint": checkpoint.path.name,
    }
    for key in ("version", "license", "docs", "date"):
        if isinstance(contents.get(key), str):
            metadata[key] = contents[key]
    return metadata


def float32_weights(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Floating tensors as float32 (ultralytics saves float16); integer bookkeeping is dropped."""
    converted: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        if name.endswith("num_batches_tracked"):
            continue
        if not np.issubdtype(value.dtype, np.floating):
            raise ModelError(f"The checkpoint's {name} has dtype {value.dtype}; weights must be floating point.")
        if not np.all(np.isfinite(value)):
            raise ModelError(f"The checkpoint's {name} holds NaN or infinite values; the weights are broken.")
        converted[name] = value.astype(np.float32)
    return converted


def _get(args: Any, key: str) -> Any:
    if isinstance(args, Mapping):
        return args.get(key)
    if isinstance(args, ModuleRecord):  # a pickled (Iterable)SimpleNamespace
        return args.get(key)
    return None
