"""The pass context: what a running pipeline gives its passes besides the model.

Like TVM's `PassContext`, it is entered around a pipeline (the pass manager does so) and read with
`PassContext.current()` inside a pass. It holds the ONNX Runtime thread count data-driven passes run
the float model with, the seed of anything random, progress reporting, and a cache of letterboxed
calibration images so calibrate, bias-correction, mixed-precision and prune in one pipeline read and
letterbox the same images once.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.progress import track
from yolograph.runtime.ort import PASS_THREADS, OrtOptions, OrtRunner

T = TypeVar("T")

# Images beyond this many are streamed rather than cached (~5 MB each at 640x640).
_CACHE_LIMIT = 128

_CURRENT: contextvars.ContextVar[PassContext | None] = contextvars.ContextVar("yolograph_pass_context", default=None)


@dataclass
class PassContext:
    threads: int = PASS_THREADS  # ONNX Runtime intra-op threads for the runs passes make
    seed: int = 0
    progress: bool = True
    # The model the pipeline started from (never modified): what `distill` learns from by default, the
    # float model as it was before any lossy pass. The pass manager sets it.
    input_model: Any = None
    _images: dict[tuple[Any, ...], list[np.ndarray]] = field(default_factory=dict, repr=False)
    _tokens: list[contextvars.Token] = field(default_factory=list, repr=False)

    @staticmethod
    def current() -> PassContext:
        """The context of the running pipeline, or a default one outside any."""
        context = _CURRENT.get()
        return context if context is not None else PassContext()

    def __enter__(self) -> PassContext:
        self._tokens.append(_CURRENT.set(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._tokens.pop())

    def runner(self, model: Any, *, spin: bool = True) -> OrtRunner:
        """The reference runner for `model` (a Model, ONNX bytes or a path) with this context's threads."""
        return OrtRunner(model, OrtOptions(threads=self.threads, spin=spin))

    def track(self, items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
        """Progress over `items` when this context shows progress (see yolograph.progress)."""
        return track(items, label, total) if self.progress else iter(items)

    def calibration_tensors(self, source: CalibrationSource, imgsz: tuple[int, int]) -> Iterator[np.ndarray]:
        """The `[1,3,H,W]` tensors of `source`, letterboxed once per pipeline (streamed when many)."""
        key = (source.images, source.count, source.range, source.npy, tuple(imgsz))
        if key in self._images:
            return iter(self._images[key])
        if source.size() > _CACHE_LIMIT:
            return source.tensors(imgsz)
        tensors = list(source.tensors(imgsz))
        self._images[key] = tensors
        return iter(tensors)
