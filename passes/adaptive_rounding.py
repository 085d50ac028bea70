"""adaptive-rounding: choose each int8 weight's rounding direction against calibration data (GPTQ/OBQ).

Nearest rounding minimizes each weight's own error, not the layer's output error. AdaRound's objective
is the output error ||W x - W_q x||^2 over calibration inputs x; this pass minimizes it layer by layer
with the closed-form Optimal Brain Quantization update used by GPTQ: weights (input columns of the
im2col matrix) are rounded one at a time and the rounding error of each is spread over the columns not
yet rounded, weighted by the inverse of H = E[x x^T] (x: im2col patches of the Conv's float input,
sampled at fixed positions per image, so the result is deterministic). Per-channel scales are kept,
so the rounded weights land exactly on calibrate's int8 grid. With `bias=true` the remaining mean
output shift (W_q - W) . E[x] is subtracted from the bias, as bias-correction does.

Runs between insert-qdq and calibrate. Changes accuracy on purpose: deferred contract, judged with
calibrate's SQNR floor at the next checked pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import zlib

import numpy as np

from yolograph.errors import PassError
from yolograph.ir.model import Model
from yolograph.passes.bias_correction import conv_input_source
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.progress import track
from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.pipeline.context import PassContext
from yolograph.quantization.collect import model_input_size, stream_tensors
from yolograph.quantization.profiles import get_profile
from yolograph.quantization.qdq import PROFILE_KEY, quantized_convs, strip_activation_qdq


@dataclass(frozen=True)
class AdaptiveRoundingOptions(CalibrationSource):
    samples: int = 256  # im2col positions sampled per image and Conv
    damping: float = 0.01  # added to H's diagonal, relative to its mean (keeps H invertible)
    bias: bool = True  # also correct the remaining mean shift in the bias
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 1:
            raise ValueError(f"samples={self.samples} is not positive; use e.g. 256")
        if self.damping < 0:
            raise ValueError(f"damping={self.damping} is negative; use e.g. 0.01")


@dataclass
class _ConvStats:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    hessian: np.ndarray | None = None
    mean: np.ndarray | None = None
    rows: int = 0


@register_pass("adaptive-rounding")
class AdaptiveRounding(Pass):
    """Round Conv weights to int8 by minimizing the layer output error on calibration data (GPTQ-style)."""

    Options = AdaptiveRoundingOptions
    contract = Contract.deferred("accuracy technique; checked with calibrate's SQNR floor")
    requires = frozenset({"qdq"})

    def validate(self) -> None:
        self.options.require("adaptive-rounding")

    def run(self, model: Model) -> PassResult:
        options = self.options
        convs = [c for c in quantized_convs(model) if c.weight_q is not None and int(c.conv.attrs.get("group", 1)) == 1]
        if not convs:
            raise PassError("adaptive-rounding needs float weights behind Q/DQ: run it after insert-qdq and before calibrate.")
        profile = get_profile(model.metadata.get(PROFILE_KEY, "ort-cpu"))
        source = options.require("adaptive-rounding")
        stats = self._collect(model, convs, source)
        improved = []
        for item in track(convs, "adaptive-rounding"):
            st = stats[item.conv.name]
            weight = item.float_weight()
            flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
            rounded = gptq_round(flat, item.scales.astype(np.float64), st.hessian / st.rows, profile.weight_qmax,
                                 options.damping)
            improved.append(_output_error_ratio(flat, rounded, item.scales, st.hessian, profile.weight_qmax))
            item.set_float_weight(rounded.reshape(weight.shape).astype(np.float32))
            if options.bias:
                shift = (rounded - flat) @ (st.mean / st.rows)
                bias = item.bias()
                base = np.zeros(weight.shape[0], np.float32) if bias is None else bias
                item.set_bias((base - shift).astype(np.float32))
        model.graph.cleanup()
        return PassResult(changed=True, stats={
            "convs": len(convs),
            # Output error of adaptive rounding relative to nearest rounding, on the calibration data.
            "median_error_ratio": float(np.median(improved)),
        })

    def _collect(self, model: Model, convs, source) -> dict[str, _ConvStats]:
        options = self.options
        by_input: dict[str, list[str]] = {}
        stats: dict[str, _ConvStats] = {}
        for item in convs:
            conv = item.conv
            kernel = tuple(int(k) for k in item.float_weight().shape[2:])
            stats[conv.name] = _ConvStats(kernel, tuple(int(s) for s in conv.attrs.get("strides", (1, 1))),
                                          tuple(int(p) for p in conv.attrs.get("pads", (0, 0, 0, 0))))
            if any(int(d) != 1 for d in conv.attrs.get("dilations", (1, 1))):
                raise PassError(f"adaptive-rounding does not handle dilated Conv {conv.name!r}; exclude it from insert-qdq.")
            by_input.setdefault(conv_input_source(conv), []).append(conv.name)
        tensors = sorted(by_input)
        seen = [0]

        def visit(name: str, value: np.ndarray) -> None:
            for conv_name in by_input[name]:
                st = stats[conv_name]
                rng = np.random.default_rng([options.seed, seen[0], zlib.crc32(conv_name.encode())])
                patches = sample_patches(value[0], st.kernel, st.stride, st.pads, options.samples, rng)
                gram = (patches.T @ patches).astype(np.float64)  # float32 GEMM, float64 accumulation
                st.hessian = gram if st.hessian is None else st.hessian + gram
                total = patches.sum(axis=0, dtype=np.float64)
                st.mean = total if st.mean is None else st.mean + total
                st.rows += patches.shape[0]
            if name == tensors[-1]:
                seen[0] += 1

        stats_model = strip_activation_qdq(model, keep_outputs=tensors)
        context = PassContext.current()
        stream_tensors(stats_model, tensors, context.calibration_tensors(source, model_input_size(model)), visit,
                       label="adaptive-rounding data", threads=context.threads)
        return stats


def sample_patches(x: np.ndarray, kernel, stride, pads, samples: int, rng: np.random.Generator) -> np.ndarray:
    """`samples` im2col rows (C*kh*kw, in weight order) of a [C,H,W] input at random output positions."""
    channels, height, width = x.shape
    kh, kw = kernel
    top, left, bottom, right = pads
    out_h = (height + top + bottom - kh) // stride[0] + 1
    out_w = (width + left + right - kw) // stride[1] + 1
    count = min(samples, out_h * out_w)
    positions = rng.choice(out_h * out_w, size=count, replace=False)
    oy, ox = positions // out_w, positions % out_w
    iy = oy[:, None] * stride[0] + np.arange(kh)[None, :] - top  # [P, kh] rows in the unpadded input
    ix = ox[:, None] * stride[1] + np.arange(kw)[None, :] - left
    patches = x[:, np.clip(iy, 0, height - 1)[:, :, None], np.clip(ix, 0, width - 1)[:, None, :]]  # [C,P,kh,kw]
    inside = ((iy >= 0) & (iy < height))[:, :, None] & ((ix >= 0) & (ix < width))[:, None, :]
    patches = patches * inside[None]  # zero padding
    return patches.transpose(1, 0, 2, 3).reshape(count, channels * kh * kw)


def gptq_round(weight: np.ndarray, scales: np.ndarray, hessian: np.ndarray, qmax: int, damping: float) -> np.ndarray:
    """Quantize rows of `weight` [O, K] on per-row grids `scales` minimizing (W-Q) H (W-Q)^T (OBQ update)."""
    w = weight.copy()
    h = hessian.copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += damping * float(np.mean(np.diag(h)))
    # Upper Cholesky factor U of H^-1 (H^-1 = U^T U): row i says how the not-yet-rounded columns absorb
    # column i's error. With J the order reversal, chol(J H J) = M gives H = R R^T for the upper R = J M J,
    # so U = R^-1: one Cholesky and one (float32) inverse of a triangular matrix.
    flip = np.linalg.cholesky(h[::-1, ::-1])
    upper_r = flip[::-1, ::-1]
    upper = np.linalg.inv(upper_r.astype(np.float32)).astype(np.float64)
    upper = np.triu(upper)
    q = np.zeros_like(w)
    block = 128  # GPTQ's lazy batch update: rank-1 updates inside a block, one matrix product after it
    for start in range(0, w.shape[1], block):
        stop = min(start + block, w.shape[1])
        part = w[:, start:stop].copy()
        errors = np.zeros_like(part)
        for i in range(stop - start):
            column = part[:, i]
            rounded = np.clip(np.round(column / scales), -qmax, qmax) * scales
            q[:, start + i] = rounded
            error = (column - rounded) / upper[start + i, start + i]
            part[:, i + 1 :] -= np.outer(error, upper[start + i, start + i + 1 : stop])
            errors[:, i] = error
        w[:, stop:] -= errors @ upper[start:stop, stop:]
    return q


def _output_error_ratio(weight, rounded, scales, hessian, qmax) -> float:
    nearest = np.clip(np.round(weight / scales[:, None]), -qmax, qmax) * scales[:, None]

    def error(q):
        d = (weight - q).astype(np.float32)
        return float(np.sum((d @ hessian.astype(np.float32)) * d))

    base = error(nearest)
    return error(rounded) / base if base > 0 else 1.0
