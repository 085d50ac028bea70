"""Per-layer error of an optimized model against its float source: the SQNR at every Conv's output.

Both models run on the same images with each Conv's output exposed as an extra graph output (a
copy of each model; the inputs are never modified); a Conv present in both (same node name, same
output shape) gets the SQNR of the optimized output against the float one. The error accumulates
along the network, so this shows where a quantized (or otherwise approximated) model drifts, while
`yolograph.quantization.sensitivity` measures each layer alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from yolograph.ir.model import Model
from yolograph.pipeline.passes import sqnr_db
from yolograph.runtime.ort import PASS_THREADS, OrtOptions, OrtRunner


@dataclass(frozen=True)
class LayerError:
    name: str
    sqnr_db: float  # higher is better; inf where the outputs are identical

    def to_json(self) -> dict:
        return asdict(self)


def conv_outputs(model: Model) -> dict[str, str]:
    """Conv node name -> its output tensor name, in graph order."""
    return {node.name: node.outputs[0].name for node in model.graph.nodes if node.op == "Conv"}


def layer_errors(reference: Model, candidate: Model, inputs: Sequence[np.ndarray],
                 threads: int = PASS_THREADS) -> list[LayerError]:
    """SQNR of every shared Conv's output of `candidate` against `reference` over `inputs` (NCHW tensors)."""
    ref_convs, new_convs = conv_outputs(reference), conv_outputs(candidate)
    shared = [name for name in ref_convs if name in new_convs]
    if not shared or not inputs:
        return []
    ref_values = _run_exposed(reference, [ref_convs[n] for n in shared], inputs, threads)
    new_values = _run_exposed(candidate, [new_convs[n] for n in shared], inputs, threads)
    rows = []
    for index, name in enumerate(shared):
        a = np.concatenate([values[index].ravel() for values in ref_values])
        b = np.concatenate([values[index].ravel() for values in new_values])
        if a.shape == b.shape:
            rows.append(LayerError(name, float(sqnr_db(a, b))))
    return rows


def _run_exposed(model: Model, tensors: Sequence[str], inputs: Sequence[np.ndarray], threads: int) -> list[list[np.ndarray]]:
    work = model.copy()
    graph = work.graph
    by_name = graph.tensors()
    for name in tensors:
        tensor = by_name[name]
        if tensor not in graph.outputs:
            tensor.dtype = tensor.dtype or np.float32
            graph.outputs.append(tensor)
    work.invalidate()
    runner = OrtRunner(work, OrtOptions(threads=threads))
    input_name = runner.input_names[0]
    dtype = model.inputs[0].dtype or np.float32
    return [runner.session.run(list(tensors), {input_name: x.astype(dtype)}) for x in inputs]
