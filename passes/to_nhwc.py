"""to-nhwc: run the model in NHWC, with transposes only around the NCHW-only ops, and NHWC I/O.

internal: every layout-agnostic op (elementwise, SiLU's Sigmoid*Mul, Add, Concat/Split with the
axis remapped, Resize with permuted scales, the head's Reshape/Transpose/Softmax, Q/DQ) works on
NHWC tensors; the ops ONNX defines only in NCHW (Conv, MaxPool, ...) read and write NCHW through
Transposes directly around them. The transpose optimizer (yolograph.layout.propagate) merges,
cancels and folds transposes into constants while it assigns layouts, so no transpose is left
between two layout-agnostic ops except the one restoring a graph output's original layout (the
YOLO output [1, 84, 8400] keeps its layout). On quantized graphs transposes go outside the Q/DQ
pairs (DQ->Conv->Q stays fusable) and per-channel axes follow the layout.

io: the image input becomes NHWC [N, H, W, C]. With input=uint8 the /255 is in the graph
(Cast + Div, after the uint8 Transpose so the transpose moves 1-byte pixels), and channels=bgr
adds the BGR->RGB flip: a camera frame goes in untouched.

Who benefits: backends with native NHWC kernels absorb the Transpose->Conv->Transpose pattern:
TVM (relax ConvertLayout to NHWC conv2d, tensor-core schedules), TensorRT (channels-last I/O from
camera frames), NPU and TFLite-style converters. ONNX Runtime's CPU provider does not: it runs Conv
in its own blocked NCHWc layout and keeps the transposes as real copies, so expect no gain there
(benchmarks/layout.py measures it). input=uint8 saves the host-side /255 and HWC->CHW on any backend.

Preserves: numerically equal within 1e-4 relative (float: same arithmetic, different memory order;
a uint8 input is verified on pixels quantized to k/255, see `restrict_inputs`). Q/DQ scales are
untouched. Output names, shapes and layout are unchanged; the input keeps its name.

Metadata written (for evaluation and backends to feed the model; yolograph.layout.io.input_from_nchw /
input_from_frame turn evaluation's NCHW float tensor or a letterboxed BGR frame into the model's input):
  yolograph.layout          "NHWC" when internal=true (the 'nhwc' property)
  yolograph.input_layout    "NHWC" | "NCHW"
  yolograph.input_dtype     "uint8" | "float32"
  yolograph.input_channels  "RGB" | "BGR"
  yolograph.input_range     "0-255" (uint8: raw pixels) | "0-1" (float: pixels / 255)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.errors import PassError
from yolograph.ir.metadata import LAYOUT as LAYOUT_KEY
from yolograph.ir.model import Model
from yolograph.layout.census import transpose_census
from yolograph.layout.io import (
    INPUT_CHANNELS_KEY,
    INPUT_DTYPE_KEY,
    INPUT_LAYOUT_KEY,
    INPUT_RANGE_KEY,
    input_from_nchw,
)
from yolograph.layout.perm import NCHW_TO_NHWC, invert
from yolograph.layout.propagate import LayoutPropagation
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass


@dataclass(frozen=True)
class ToNhwcOptions:
    io: bool = True  # the image input becomes NHWC
    internal: bool = True  # layout-agnostic ops run in NHWC
    input: Literal["float", "uint8"] = "float"  # uint8: raw 0-255 pixels, /255 done in the graph
    channels: Literal["rgb", "bgr"] = "rgb"  # bgr: the graph flips BGR frames to RGB
    # Extra op types kept in NCHW and wrapped like Conv. TVM's Relax ONNX importer reads every Resize
    # as NCHW (it takes the sizes of axes 2 and 3), so a model for TVM needs nchw_ops=Resize.
    nchw_ops: tuple[str, ...] = ()


@register_pass("to-nhwc")
class ToNhwc(Pass):
    """Convert to NHWC: agnostic ops in NHWC, transposes only around Conv/MaxPool, NHWC (uint8) input."""

    Options = ToNhwcOptions
    contract = Contract.tolerance(1e-4, "uint8 input: verified on pixels k/255")

    @property
    def establishes(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"nhwc"}) if self.options.internal else frozenset()

    def run(self, model: Model) -> PassResult:
        options = self.options
        _check(model, options)
        extra = frozenset(options.nchw_ops)
        before = transpose_census(model.graph, extra)
        propagation = LayoutPropagation(model, internal=options.internal, nchw_ops=extra)
        images = _image_inputs(model) if options.io else []
        stored = [propagation.set_input_layout(t, NCHW_TO_NHWC, preferred=options.internal) for t in images]
        stats = propagation.run()
        for tensor in stored:
            _insert_preprocessing(model.graph, tensor, options)
        model.graph.cleanup(remove_unused_graph_inputs=False)
        model.graph.toposort()
        after = transpose_census(model.graph, extra)
        _write_metadata(model, options)
        # A naive conversion wraps every NCHW op as T(NCHW) -> [T(NHWC) -> op -> T(NCHW)] -> T(NHWC)
        # and transposes each converted input; the optimizer's job is to remove what is not needed.
        inserted = 4 * before.nchw_ops + len(images)
        return PassResult(
            changed=True,
            stats={
                "transposes_before": before.total,
                "transposes_after": after.total,
                "inserted": inserted,
                "emitted": stats.transposes_emitted,  # the ones the optimizer actually created
                "removed": inserted + before.total - after.total,
                "around_nchw_ops": after.around_nchw_ops,
                "io_transposes": after.io,
                "elsewhere": after.elsewhere,
                "nchw_ops": after.nchw_ops,
                "layout_reshapes": stats.reshapes_emitted,
                "absorbed": stats.transposes_absorbed,
                "constants_permuted": stats.constants_permuted,
                "qdq_cloned": stats.qdq_cloned,
                "nhwc_ops": stats.nhwc_ops,
            },
        )

    def restrict_inputs(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """uint8 input: round float pixels to k/255, the only values a uint8 frame can carry."""
        if not (self.options.io and self.options.input == "uint8"):
            return feed
        return {name: _quantize_pixels(x) / np.float32(255) if _is_image(x) else x for name, x in feed.items()}

    def adapt_inputs(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """An NCHW float feed as this model takes it: NHWC, channel order and dtype per the options."""
        if not self.options.io:
            return feed
        return {name: nchw_to_frame(x, self.options) if _is_image(x) else x for name, x in feed.items()}


def nchw_to_frame(images: np.ndarray, options: ToNhwcOptions) -> np.ndarray:
    """An NCHW float image batch in [0,1] as the converted model's input (NHWC, uint8/bgr per options)."""
    metadata: dict[str, str] = {}
    _write_metadata_into(metadata, options)
    return input_from_nchw(metadata, images)


def _quantize_pixels(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float32) * 255), 0, 255).astype(np.float32)


def _is_image(array: np.ndarray) -> bool:
    return array.ndim == 4 and np.issubdtype(array.dtype, np.floating)


def _check(model: Model, options: ToNhwcOptions) -> None:
    if model.metadata.get(LAYOUT_KEY) == "NHWC" or model.metadata.get(INPUT_LAYOUT_KEY) == "NHWC":
        raise PassError("The model is already NHWC (metadata yolograph.layout/input_layout); run to-nhwc once.")
    if not options.io and (options.input != "float" or options.channels != "rgb"):
        raise PassError("to-nhwc options input=uint8 and channels=bgr describe camera frames and need io=true.")
    if options.io and not _image_inputs(model):
        raise PassError("to-nhwc{io=true} needs a 4-D float image input [N,C,H,W]; use io=false for this model.")
    passed_through = [t.name for t in _image_inputs(model) if t in model.graph.outputs] if options.io else []
    if passed_through:
        raise PassError(f"Input(s) {passed_through} are also graph outputs, so to-nhwc{{io=true}} cannot store them "
                        "NHWC and still return them NCHW under the same name; use io=false for this model.")
    not_rgb = [t.name for t in _image_inputs(model) if int(t.shape[1]) != 3] if options.io else []
    if options.channels == "bgr" and not_rgb:
        raise PassError(f"to-nhwc{{channels=bgr}} flips 3 colour channels, but input(s) {not_rgb} do not have 3; "
                        "leave channels=rgb for this model.")


def _image_inputs(model: Model) -> list[gs.Variable]:
    return [t for t in model.graph.inputs if t.shape is not None and len(t.shape) == 4
            and np.issubdtype(np.dtype(t.dtype or np.float32), np.floating)]


def _insert_preprocessing(graph: gs.Graph, stored: gs.Variable, options: ToNhwcOptions) -> None:
    """Make the NHWC float input a raw frame: uint8 -> (Transpose) -> Cast -> /255 -> (BGR flip)."""
    if options.input == "float" and options.channels == "rgb":
        return
    name, consumers = stored.name, list(stored.outputs)
    perms = {tuple(c.attrs["perm"]) for c in consumers if c.op == "Transpose"}
    transpose_first = (len(perms) == 1 and all(c.op == "Transpose" for c in consumers) and stored not in graph.outputs
                       and not any(c.outputs[0] in graph.outputs for c in consumers))  # those keep their producer
    frame = gs.Variable(name, dtype=np.uint8 if options.input == "uint8" else stored.dtype, shape=list(stored.shape))
    stored.name = f"{name}/float"
    graph.inputs[graph.inputs.index(stored)] = frame
    tensor, layout, nodes = frame, NCHW_TO_NHWC, []
    if transpose_first:
        perm = perms.pop()
        layout = tuple(NCHW_TO_NHWC[axis] for axis in perm)
        tensor = _add(nodes, "Transpose", f"{name}/to_nchw", [tensor], {"perm": list(perm)}, frame.dtype)
    if options.input == "uint8":
        tensor = _add(nodes, "Cast", f"{name}/cast", [tensor], {"to": 1}, np.float32)
        tensor = _add(nodes, "Div", f"{name}/div255", [tensor, gs.Constant(f"{name}/255", np.array(255, np.float32))],
                      {}, np.float32)
    if options.channels == "bgr":
        channel_axis = invert(layout)[1]
        tensor = _add(nodes, "Gather", f"{name}/bgr_to_rgb",
                      [tensor, gs.Constant(f"{name}/rgb_order", np.array([2, 1, 0], np.int64))], {"axis": channel_axis},
                      np.float32)
    graph.nodes.extend(nodes)
    targets = [c.outputs[0] for c in consumers] if transpose_first else [stored]
    for old in targets:
        for consumer in list(old.outputs):
            for index, input_tensor in enumerate(consumer.inputs):
                if input_tensor is old:
                    consumer.inputs[index] = tensor
    if transpose_first:
        for consumer in consumers:
            consumer.outputs.clear()


def _add(nodes: list[gs.Node], op: str, name: str, inputs: list, attrs: dict, dtype) -> gs.Variable:
    output = gs.Variable(f"{name}_output", dtype=dtype)
    nodes.append(gs.Node(op, name, attrs=attrs, inputs=inputs, outputs=[output]))
    return output


def _write_metadata(model: Model, options: ToNhwcOptions) -> None:
    if options.internal:
        model.metadata[LAYOUT_KEY] = "NHWC"
    _write_metadata_into(model.metadata, options)


def _write_metadata_into(metadata: dict[str, str], options: ToNhwcOptions) -> None:
    """The input keys read by yolograph.layout.io (evaluation and backends feed the model by them)."""
    metadata[INPUT_LAYOUT_KEY] = "NHWC" if options.io else "NCHW"
    uint8 = options.io and options.input == "uint8"
    metadata[INPUT_DTYPE_KEY] = "uint8" if uint8 else "float32"
    metadata[INPUT_CHANNELS_KEY] = "BGR" if options.channels == "bgr" else "RGB"
    metadata[INPUT_RANGE_KEY] = "0-255" if uint8 else "0-1"
