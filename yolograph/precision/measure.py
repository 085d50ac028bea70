"""Measurements the float16 conversion decides with: tensor magnitudes and per-group SQNR.

Both run the model on ONNX Runtime (CPU) on a handful of probe inputs: seeded random images, or
letterboxed calibration images when the pass is given some.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from yolograph.ir.model import Model
from yolograph.pipeline.passes import sqnr_db
from yolograph.pipeline.verify import Feed, output_groups
from yolograph.runtime.ort import OrtOptions, OrtRunner


def tensor_magnitudes(model: Model, feeds: Sequence[Feed], threads: int = 0) -> dict[str, float]:
    """max |value| of every float32 tensor of `model` over `feeds` (graph outputs included)."""
    proto = model.to_onnx()
    inferred = onnx.shape_inference.infer_shapes(proto)
    present = {o.name for o in proto.graph.output}
    for value in inferred.graph.value_info:
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and value.name not in present:
            proto.graph.output.append(value)
            present.add(value.name)
    runner = OrtRunner(proto.SerializeToString(), OrtOptions(threads=threads))
    largest: dict[str, float] = {}
    for feed in feeds:
        for name, value in zip(runner.output_names, runner.run(feed)):
            array = np.asarray(value)
            if array.dtype.kind == "f" and array.size:
                largest[name] = max(largest.get(name, 0.0), float(np.max(np.abs(array))))
    return largest


def group_sqnr(original: Model, reference: Sequence[np.ndarray], candidate: Model, feeds: Sequence[Feed],
               threads: int = 0) -> list[float]:
    """SQNR (dB) of each output group of `candidate` against `reference` = run_groups(original, feeds).

    The candidate's outputs are split into groups by the `original` model's facts: the conversion keeps
    every output's name and shape, so the groups are the same rows.
    """
    runner = OrtRunner(candidate, OrtOptions(threads=threads))
    per_feed = [output_groups(original, runner.run(feed)) for feed in feeds]
    groups = [np.stack([item[i] for item in per_feed]) for i in range(len(per_feed[0]))]
    return [sqnr_db(ref, new) for ref, new in zip(reference, groups)]
