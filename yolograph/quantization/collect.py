"""Run a model on calibration tensors with ONNX Runtime and stream chosen intermediate tensors to
callbacks (observers), one image at a time, so memory does not depend on the number of images."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from yolograph.errors import DataError
from yolograph.ir.model import Model
from yolograph.progress import track
from yolograph.runtime.ort import PASS_THREADS, OrtOptions, OrtRunner

Visitor = Callable[[str, np.ndarray], None]


def model_input_size(model: Model) -> tuple[int, int]:
    """(H, W) of the image input, whatever its layout (to-nhwc may have made it NHWC uint8)."""
    shape = model.inputs[0].shape
    if len(shape) != 4 or model.facts.imgsz is None:
        raise DataError(f"Calibration feeds images, but the model input has shape {shape}; it needs [1,3,H,W].")
    return model.facts.imgsz


def stream_tensors(model: Model, tensor_names: list[str], inputs: Iterable[np.ndarray], visit: Visitor,
                   label: str = "calibrate", total: int | None = None, threads: int = PASS_THREADS) -> int:
    """Run `model` (which must expose `tensor_names` as outputs) on each input and call visit(name, value).

    Returns the number of inputs. Raises DataError when there are none.
    """
    from yolograph.layout.io import input_from_nchw

    runner = OrtRunner(model, OrtOptions(threads=threads))
    input_name = runner.input_names[0]
    # Calibration tensors are NCHW float RGB in [0,1], as evaluation makes them; the model's input
    # metadata says how to feed them (to-nhwc may have changed layout, dtype and channel order).
    expected = (1, 3, *model_input_size(model))
    count = 0
    for tensor in track(inputs, label, total):
        if tuple(tensor.shape) != expected:
            raise DataError(f"A calibration tensor has shape {tuple(tensor.shape)}; the model needs {expected}.")
        values = runner.session.run(tensor_names, {input_name: input_from_nchw(model.metadata, tensor)})
        for name, value in zip(tensor_names, values):
            visit(name, value)
        count += 1
    if count == 0:
        raise DataError("The calibration set is empty; give images=DIR with count>=1 or npy= tensors.")
    return count
