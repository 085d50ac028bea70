"""to-fp16: store weights and compute activations in float16, keeping measured-safe float32 islands.

Every node whose float tensors can be float16 becomes float16, except the float32 islands the rules
of yolograph.precision.islands choose: the YOLO decode's DFL softmax and box decode (pixel-scale
coordinates), nodes named with ``keep=`` (names as fnmatch patterns, or op types), nodes whose
outputs were measured near float16's range (``overflow=``) and Q/DQ scales float16 cannot hold.
Casts are placed wherever float16 and float32 tensors meet, so the graph is type-consistent (what
a strongly typed TensorRT network needs); graph inputs and outputs stay float32 unless ``io=float16``.

On a calibrated Q/DQ graph (insert-qdq{profile=trt} + calibrate) the Q/DQ nodes get float16 scales
(opset 19, converted when lower): INT8 convs with float16 everywhere else, TensorRT's "best"
precision expressed in the graph.

Then it measures: the output-group SQNR against the model before the pass on probe inputs (seeded
random images, or ``images=`` with ``count=``/``range=``); if a group is below the contract's floor,
the whole decode is kept in float32 and measured again (``widen=false`` turns that off); still below,
the pass fails naming the group. Preserves: graph inputs/outputs (names, shapes, float32 types),
the Q/DQ structure; changes accuracy on purpose within the SQNR floor (contract, per output group:
35 dB on a float graph, 10 dB against an INT8 Q/DQ graph; see the constants below).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from yolograph.errors import PassError
from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.ir.metadata import PRECISION as PRECISION_KEY
from yolograph.ir.model import Model
from yolograph.layout.io import input_from_nchw
from yolograph.pipeline.context import PassContext
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.pipeline.properties import UNCALIBRATED_KEY, register_property
from yolograph.pipeline.verify import Feed, run_groups, verification_inputs
from yolograph.precision.convert import convert_to_float16
from yolograph.precision.islands import DEFAULT_OVERFLOW, IslandRules, float32_islands
from yolograph.precision.measure import group_sqnr, tensor_magnitudes
from yolograph.precision.types import FLOAT16

# What the conversion aims for on every output group (the target), and the floor the contract
# checks. Measured on the verifier's inputs (two seeded random images), everything float16 but the
# decode islands (benchmarks/fp16.py): trained yolov8n boxes 70.3 / scores 41.7 dB (67 / 54 dB on coco128
# images); the random-weight fixtures' weakest groups 37.6 dB (seg prototypes), 39.9 / 40.0 (YOLO26n /
# YOLO11n scores), 44-65 dB for the others. The error is the float16 rounding of the backbone's convs
# (keeping the whole head in float32 changes YOLO11n's scores by < 0.1 dB). A broken conversion lands far
# below: a saturated tensor gives -inf dB, a lost Cast fails the type check.
FP16_TARGET_DB = 40.0
FP16_MIN_SQNR_DB = 35.0
# On a calibrated Q/DQ graph the reference is the INT8 model: float16 rounding moves some values across
# an int8 rounding step, and each such flip costs a whole quantization step, so the error against the
# INT8 model is of the order of INT8's own noise (trt-profile yolov8n: box 39.7 / scores 18.2 dB against
# the INT8 model; mAP50-95 0.25 points below float). Accuracy is judged by mAP there; the floor only
# catches a broken graph.
QDQ_MIN_SQNR_DB = 10.0


@dataclass(frozen=True)
class ToFp16Options(CalibrationSource):
    """images=/count=/range=/npy= probe data (default: seeded random images); keep= float32 nodes."""

    count: int = 2
    keep: tuple[str, ...] = ()  # node-name patterns (fnmatch) or op types kept in float32
    decode: bool = True  # the dfl-softmax and box-decode rules
    io: Literal["float32", "float16"] = "float32"
    overflow: float = DEFAULT_OVERFLOW  # keep producers of tensors measured above this in float32
    widen: bool = True  # below the floor: keep the whole decode in float32 and measure again

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.overflow <= 65504.0:
            raise ValueError(f"overflow={self.overflow} is outside (0, 65504]; use e.g. 16384")


@register_property("float16", "float16 tensors (to-fp16)")
def _is_float16(model: Model) -> bool:
    return model.metadata.get(PRECISION_KEY, "").startswith("fp16")


@register_pass("to-fp16")
class ToFp16(Pass):
    """Weights and activations to float16 with float32 I/O and float32 islands (decode, keep=); SQNR-checked."""

    Options = ToFp16Options
    contract = Contract.sqnr(FP16_MIN_SQNR_DB, f"vs the model before it, per output group; {QDQ_MIN_SQNR_DB:g} dB "
                                               "on an INT8 Q/DQ model")
    establishes = frozenset({"float16"})

    def adapt_inputs(self, feed: Feed) -> Feed:
        if self.options.io != "float16":
            return feed
        return {name: value.astype(FLOAT16) if value.dtype.kind == "f" else value for name, value in feed.items()}

    def run(self, model: Model) -> PassResult:
        options = self.options
        if model.metadata.get(UNCALIBRATED_KEY) == "1":
            raise PassError("to-fp16 needs calibrated Q/DQ scales: run calibrate before to-fp16.")
        if any(t.dtype is not None and t.dtype == FLOAT16 for t in model.graph.tensors().values()):
            raise PassError("The model already has float16 tensors; run to-fp16 on a float32 model.")
        context = PassContext.current()
        qdq = _has_qdq(model)
        floor = QDQ_MIN_SQNR_DB if qdq else FP16_MIN_SQNR_DB
        # The contract depends on the input: vs an INT8 model the error floor is INT8's (see above).
        self.contract = Contract.sqnr(floor, "vs the model before it, per output group" +
                                      ("; the model was INT8 Q/DQ" if qdq else ""))
        feeds = probe_feeds(model, options, context)
        reference = run_groups(model, feeds)
        magnitudes = tensor_magnitudes(model, feeds, threads=context.threads)
        rules = IslandRules(decode_rules=options.decode, keep=options.keep, overflow=options.overflow)
        candidate, kept, conversion, dbs = _convert(model, rules, magnitudes, options, reference, feeds)
        widened = False
        target = floor if qdq else FP16_TARGET_DB
        if min(dbs, default=float("inf")) < target and options.widen and model.facts.decode_nodes:
            rules = IslandRules(options.decode, options.keep, options.overflow, whole_decode=True)
            wide = _convert(model, rules, magnitudes, options, reference, feeds)
            if min(wide[3]) > min(dbs) + 0.5:  # only when float32 decode measurably helps
                candidate, kept, conversion, dbs = wide
                widened = True
        worst = min(range(len(dbs)), key=dbs.__getitem__) if dbs else None
        if worst is not None and dbs[worst] < floor:
            raise PassError(f"to-fp16 leaves output group {worst} at {dbs[worst]:.1f} dB, below the "
                            f"{floor:g} dB floor, even with float32 islands ({len(kept)} nodes); keep more "
                            "nodes in float32 with keep=PATTERN (node names or op types).")
        model.graph = candidate.graph
        model.metadata = dict(candidate.metadata)
        model.metadata[PRECISION_KEY] = "fp16+int8" if qdq else "fp16"
        model.invalidate()
        return PassResult(changed=True, stats={
            **conversion.to_json(),
            "float32_islands": dict(Counter(kept.values())),
            "widened_to_decode": widened,
            "group_sqnr_db": [round(d, 2) for d in dbs],
            "probe_inputs": len(feeds),
        })


def _convert(model: Model, rules: IslandRules, magnitudes, options: ToFp16Options, reference, feeds):
    kept = float32_islands(model, rules, magnitudes)
    candidate = model.copy()
    conversion = convert_to_float16(candidate, set(kept), io_float16=options.io == "float16")
    cast_feeds = [_cast_feed(candidate, feed) for feed in feeds]
    return candidate, kept, conversion, group_sqnr(model, reference, candidate, cast_feeds, PassContext.current().threads)


def probe_feeds(model: Model, options: ToFp16Options, context: PassContext) -> list[Feed]:
    """Seeded random inputs, or the letterboxed `images=` / `npy=` tensors when given."""
    if options.images is None and options.npy is None:
        return verification_inputs(model, random_count=options.count, seed=context.seed)
    name = model.inputs[0].name
    imgsz = model.facts.imgsz
    if imgsz is None:
        raise PassError("to-fp16 probes with images only on image models; drop images= to probe with random inputs.")
    return [{name: input_from_nchw(model.metadata, tensor)}
            for tensor in context.calibration_tensors(options.source(), imgsz)]


def _cast_feed(model: Model, feed: Feed) -> Feed:
    types = {t.name: t.dtype for t in model.inputs}
    return {name: value.astype(types.get(name, value.dtype)) for name, value in feed.items()}


def _has_qdq(model: Model) -> bool:
    return any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.nodes)
