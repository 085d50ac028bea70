"""Checking a pass's contract against ONNX Runtime.

The verifier runs the model before and after a pass on the same inputs (seeded random images in
[0,1) plus any the user gives) and applies the pass's Contract to the output groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yolograph.errors import DataError
from yolograph.ir.model import Model

Feed = dict[str, np.ndarray]


def verification_inputs(model: Model, given: Sequence[Feed] = (), random_count: int = 2, seed: int = 0) -> list[Feed]:
    """Seeded random inputs for every graph input, followed by the given ones (shape-checked)."""
    rng = np.random.default_rng(seed)
    feeds = [
        {t.name: _random_like(rng, t.shape, t.dtype) for t in model.inputs} for _ in range(random_count)
    ]
    for feed in given:
        for info in model.inputs:
            if info.name not in feed:
                raise DataError(f"Verification input lacks {info.name!r}; it must provide every model input.")
            if tuple(feed[info.name].shape) != info.shape:
                raise DataError(
                    f"Verification input {info.name!r} has shape {tuple(feed[info.name].shape)}, "
                    f"the model needs {info.shape}."
                )
        feeds.append(feed)
    return feeds


def _random_like(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 256, size=shape).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def output_groups(model: Model, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Split outputs into groups judged separately: a YOLO detect output's box and class rows."""
    groups = []
    for array in outputs:
        if model.facts.is_detect and array.ndim == 3 and array.shape[1] == 4 + model.facts.num_classes:
            groups += [array[:, :4], array[:, 4:]]
        else:
            groups.append(array)
    return groups


def run_groups(model: Model, feeds: Sequence[Feed]) -> list[np.ndarray]:
    """Output groups of `model` over all feeds, concatenated per group."""
    from yolograph.runtime import OrtRunner

    runner = OrtRunner(model)
    per_feed = [output_groups(model, runner.run(feed)) for feed in feeds]
    return [np.stack([groups[i] for groups in per_feed]) for i in range(len(per_feed[0]))]
