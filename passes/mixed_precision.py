"""mixed-precision: keep the most quantization-sensitive Convs in float until an error budget is met.

Placed between insert-qdq and calibrate. It calibrates a copy of the model (same options as calibrate),
measures each quantized Conv's sensitivity (model-output SQNR with only that layer quantized, see
yolograph.quantization.sensitivity) on `eval_range` images, then un-quantizes the most sensitive layers
one at a time (their weights back to float, their input/output Q/DQ removed; a layer is kept only if
that improves the whole model, since errors of different layers partly cancel) until the budget holds:
``budget=sqnr:DB`` (output SQNR of every output group >= DB) or ``budget=map:DROP`` (mAP50-95 drop
<= DROP on the labelled `eval_range` images), keeping at most `max_float` layers. The layers kept are
reported in the pass stats (and whether the budget was met). The model stays uncalibrated for the
calibrate pass that follows. Changes accuracy on purpose: deferred contract (checked at calibrate).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from yolograph.errors import PassError
from yolograph.evaluation.budget import labelled_map, parse_budget, require_labels
from yolograph.ir.model import Model
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.evaluation.calibration_data import CalibrationSource, load_calibration_tensors
from yolograph.quantization.qdq import dequantize_units, float_reference, quantized_convs
from yolograph.quantization.sensitivity import _run, group_sqnr, measure_units, quantization_units


@dataclass(frozen=True)
class MixedPrecisionOptions(CalibrationSource):
    budget: str = "sqnr:20"  # sqnr:DB (min output-group SQNR) or map:DROP (mAP50-95 drop)
    max_float: int = 3
    method: Literal["minmax", "percentile", "entropy", "mse"] = "percentile"  # as calibrate will use
    percentile: float = 99.99
    eval_range: str = "0:8"  # images of `images` used to measure (labelled ones for map:)
    candidates: tuple[str, ...] = ()  # fnmatch patterns of Conv names that may stay float (default: all)

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_budget(self.budget, owner="mixed-precision")
        if self.max_float < 0:
            raise ValueError(f"max_float={self.max_float} is negative; use 0 or more")


@register_pass("mixed-precision")
class MixedPrecision(Pass):
    """Keep the most sensitive Convs in float until an output-SQNR or mAP budget is met (at most max_float)."""

    Options = MixedPrecisionOptions
    contract = Contract.deferred("accuracy budget; checked with calibrate's SQNR floor")
    requires = frozenset({"qdq"})

    def validate(self) -> None:
        self.options.require("mixed-precision")

    def run(self, model: Model) -> PassResult:
        from yolograph.passes.calibrate import Calibrate, CalibrateOptions

        options = self.options
        kind, target = parse_budget(options.budget, owner="mixed-precision")
        if not any(c.weight_q is not None for c in quantized_convs(model)):
            raise PassError("mixed-precision needs an uncalibrated Q/DQ model: put it after insert-qdq, before calibrate.")
        options.require("mixed-precision")
        if options.images is None and kind == "map":
            raise PassError("budget=map: needs labelled images=DIR; use budget=sqnr:DB with npy= data.")
        if kind == "map":
            require_labels(options.images, options.eval_range)
        reference = float_reference(model)
        calibrated = model.copy()
        Calibrate(CalibrateOptions(method=options.method, images=options.images, count=options.count,
                                   range=options.range, npy=options.npy, percentile=options.percentile)).run(calibrated)
        shape = model.inputs[0].shape
        if options.images is not None:
            inputs = list(load_calibration_tensors(options.images, None, (shape[2], shape[3]), image_range=options.eval_range))
        else:
            inputs = list(load_calibration_tensors(None, 4, (shape[2], shape[3]), npy=options.npy))
        units = [u for u in quantization_units(calibrated)
                 if not options.candidates or any(fnmatch.fnmatchcase(u.name, p) for p in options.candidates)]
        if not units:
            raise PassError(f"No quantized Conv matches candidates={'|'.join(options.candidates)}; check the names.")
        rows = sorted(measure_units(reference, calibrated, units, inputs, label="mixed-precision"),
                      key=lambda r: r.output_sqnr_db)
        by_name = {u.name: u for u in units}
        float_ref_outputs = _run(reference, inputs)
        reference_map = labelled_map(reference, options.images, options.eval_range) if kind == "map" else 0.0

        def error_of(kept: list[str]) -> float:
            candidate = calibrated.copy()
            dequantize_units(candidate, set(kept), {t for k in kept for t in by_name[k].tensors}, reference)
            if kind == "sqnr":
                return min(group_sqnr(reference, float_ref_outputs, _run(candidate, inputs)))
            return reference_map - labelled_map(candidate, options.images, options.eval_range)

        def met(value: float) -> bool:
            return value >= target if kind == "sqnr" else value <= target

        kept: list[str] = []
        value = error_of(kept)
        trail = [round(value, 4)]
        tried = 0
        # Most sensitive first; a layer is kept float only if that actually improves the whole model
        # (quantization errors of different layers can partly cancel), trying at most 3 * max_float.
        for row in rows:
            if met(value) or len(kept) >= options.max_float or tried >= 3 * options.max_float:
                break
            tried += 1
            candidate = error_of([*kept, row.name])
            if (candidate > value) if kind == "sqnr" else (candidate < value):
                kept.append(row.name)
                value = candidate
                trail.append(round(value, 4))
        dequantize_units(model, set(kept), {t for k in kept for t in by_name[k].tensors})
        return PassResult(changed=bool(kept), stats={
            "kept_float": kept,
            "budget": options.budget,
            "budget_met": met(value),
            ("output_sqnr_db" if kind == "sqnr" else "map_drop"): trail,
        })
