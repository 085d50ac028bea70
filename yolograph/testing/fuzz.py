"""Fuzzing passes: random graphs through exact and tolerance-contract pipelines, verified on ONNX Runtime.

`fuzz_one(seed, pipeline)` builds `random_model(seed)`, runs the pipeline with verify=True and
classifies what happened:

- ok: every contract held, the result passes the ONNX checker, keeps the output names and the
  input model is unchanged;
- violation: a ContractViolation, changed output names, or a modified input model;
- refused: a pass declined the graph with its own clear error (a YoloGraphError not caused by
  another exception), e.g. to-nhwc{channels=bgr} on a 1-channel input; counted, not a failure;
- crash: any other exception, including a PassError the pass manager made from a foreign one;
- invalid: the generated graph itself does not run on ONNX Runtime (a generator bug).

Only passes whose contract is exact or a tolerance (or an SQNR floor, for to-fp16) are fuzzed:
their promise does not depend on weights being trained.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from yolograph.errors import ContractViolation, YoloGraphError
from yolograph.ir.model import Model

BASE_PASSES = ("fold-bn", "cleanup", "fast-dfl", "to-nhwc")
TO_NHWC_VARIANTS = ("to-nhwc", "to-nhwc{io=false}", "to-nhwc{input=uint8,channels=bgr}",
                    "to-nhwc{nchw_ops=Resize}", "to-nhwc{internal=false}")
OPTIONAL_PASSES = ("to-fp16",)  # fuzzed when registered
LAST_PASSES = ("to-nhwc", "to-fp16")


@dataclass(frozen=True)
class FuzzOutcome:
    """What one (graph seed, pipeline) run did."""

    seed: int
    pipeline: str
    status: str  # ok | violation | refused | crash | invalid
    message: str = ""
    nodes: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def fuzzed_passes() -> list[str]:
    """The registered passes the fuzzer runs: the base ones plus any optional one present."""
    from yolograph.pipeline import registered_passes

    names = registered_passes()
    return [p for p in BASE_PASSES if p in names] + [p for p in OPTIONAL_PASSES if p in names]


def pipelines_for(seed: int, passes: list[str], *, every_pass: bool) -> list[str]:
    """The pipelines graph `seed` runs through.

    every_pass: each pass alone, then all of them in the usual order (fold-bn,cleanup,...), with a
    seeded to-nhwc variant. Else one seeded random pipeline of 1-4 passes in random order.
    """
    rng = np.random.default_rng(seed + 7919)

    def variant(name: str) -> str:
        return str(rng.choice(TO_NHWC_VARIANTS)) if name == "to-nhwc" else name

    if every_pass:
        return [variant(p) for p in passes] + [",".join(variant(p) for p in passes)]
    count = int(rng.integers(1, min(4, len(passes)) + 1))
    chosen = [passes[int(i)] for i in rng.choice(len(passes), size=count, replace=False)]
    # to-nhwc runs once and leaves an NHWC model; to-fp16 leaves float16 arithmetic, where the float32
    # tolerances of the other passes do not apply: both go last, in the order a real pipeline has them.
    chosen = [p for p in chosen if p not in LAST_PASSES] + [p for p in LAST_PASSES if p in chosen]
    return [",".join(variant(p) for p in chosen)]


def fuzz_one(seed: int, pipeline: str, model: Model | None = None) -> FuzzOutcome:
    """Run `pipeline` with verification on the random graph of `seed` and classify the outcome."""
    from yolograph.pipeline import PassManager
    from yolograph.pipeline.verify import verification_inputs
    from yolograph.runtime.ort import OrtRunner
    from yolograph.testing.random_graphs import random_model

    model = model if model is not None else random_model(seed)
    nodes = len(model.graph.nodes)
    before = model.serialize()
    try:
        OrtRunner(model).run(verification_inputs(model)[0])
    except Exception as exc:  # noqa: BLE001 - classified, not hidden
        return FuzzOutcome(seed, pipeline, "invalid", _describe(exc), nodes)
    try:
        result, _ = PassManager(pipeline, verify=True).run(model)
        onnx.checker.check_model(result.to_onnx())
    except ContractViolation as exc:
        return FuzzOutcome(seed, pipeline, "violation", _describe(exc), nodes)
    except YoloGraphError as exc:
        if exc.__cause__ is None or isinstance(exc.__cause__, YoloGraphError):
            return FuzzOutcome(seed, pipeline, "refused", _describe(exc), nodes)
        return FuzzOutcome(seed, pipeline, "crash", _describe(exc, with_trace=True), nodes)
    except Exception as exc:  # noqa: BLE001 - every other failure is a crash to report
        return FuzzOutcome(seed, pipeline, "crash", _describe(exc, with_trace=True), nodes)
    if model.serialize() != before:
        return FuzzOutcome(seed, pipeline, "violation", "the input model was modified", nodes)
    names_before = [t.name for t in model.graph.outputs]
    names_after = [t.name for t in result.graph.outputs]
    if names_after != names_before:
        return FuzzOutcome(seed, pipeline, "violation", f"output names changed from {names_before} to {names_after}",
                           nodes)
    return FuzzOutcome(seed, pipeline, "ok", "", nodes)


def fuzz(seeds: Iterable[int], *, every_pass: bool = False, passes: list[str] | None = None) -> Iterator[FuzzOutcome]:
    """fuzz_one for every seed and each of its pipelines (see pipelines_for)."""
    from yolograph.testing.random_graphs import random_model

    passes = passes or fuzzed_passes()
    for seed in seeds:
        model = random_model(seed)
        for pipeline in pipelines_for(seed, passes, every_pass=every_pass):
            yield fuzz_one(seed, pipeline, model)


def _describe(exc: BaseException, with_trace: bool = False) -> str:
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    cause = exc.__cause__ or exc
    if with_trace and cause.__traceback__ is not None:
        frames = traceback.extract_tb(cause.__traceback__)
        ours = [f for f in frames if "/yolograph/" in f.filename or "/passes/" in f.filename]
        frame = (ours or frames)[-1]
        text += f" (at {frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} in {frame.name})"
    return text
