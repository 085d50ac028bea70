"""INT8 on TVM: rewrite DQ -> conv2d patterns of a QDQ model into integer conv2d.

Relax imports QuantizeLinear/DequantizeLinear as float-simulated ops: a QDQ model otherwise runs
its convolutions in float on dequantized values. This rewrite finds, in `main`,

    x  = dequantize(q, s_x, zp_x)              q: uint8/int8 activations, per-tensor scale
    w  = dequantize(W, s_w, 0, axis=0)         W: int8 constant, per-output-channel scale
    y  = conv2d(x, w, padding=P, ...)

(the tvm QDQ profile's pattern: calibrate folds weights to int8 initializers) and replaces `y` by

    acc = conv2d(pad(q, P, value=zp_x), W, out_dtype="int32")     # int8 x int8 -> int32 accumulate
    y   = float(acc - zp_x * sum(W over in-channels, kh, kw)) * (s_x * s_w)     # requantize scale

The padding takes the value zp_x because a float zero is the quantized value zp_x; with that,
the zero-point correction is one int32 constant per output channel. The bias add and the
QuantizeLinear after the conv stay as they were, so the conv output is requantized to the
next layer's uint8 exactly where the QDQ graph says. Everything else (SiLU, Add, Concat, ...)
keeps running float-simulated between Q/DQ pairs.

Per-tensor quantize/dequantize (scalar scale and zero point) are then written as the elementwise
ops their legalization computes (quantize: max(min(round(x / s) + zp, max), min) cast; dequantize:
float(int32(q) - zp) * s), because Relax's ConvertLayout has no layout rule for R.quantize: left
as they are, they stay NCHW with a transpose on each side of every conv of the NHWC compile, and
FuseOps cannot fuse the requantize into the conv's epilogue. As elementwise ops they follow the
conv to NHWC and fuse onto its accumulator tile (backends/tvm/int8_schedules.py).

Contract: numerically equal to the float-simulated QDQ model within float rounding of the
accumulation (integer sums are exact; only the final scale multiply rounds), so outputs differ
from the float-simulated TVM model by float noise that a requantize step can turn into at most
one quantization step of the next tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rewrite_integer_conv2d(mod) -> tuple[Any, dict[str, Any]]:
    """(module with integer conv2d, stats: convs rewritten / left in float)."""
    from tvm import relax

    rewriter_cls = _rewriter_class()
    rewriter = rewriter_cls(mod)
    new_mod = rewriter.transform()
    new_mod = relax.transform.DeadCodeElimination()(new_mod)
    lowering = _qdq_lowering_class()(new_mod)
    new_mod = relax.transform.DeadCodeElimination()(lowering.transform())
    total = rewriter.rewritten + len(rewriter.skipped)
    stats = {
        "enabled": True,
        "conv2d": total,
        "integer_conv2d": rewriter.rewritten,
        "float_conv2d": len(rewriter.skipped),
        "float_reasons": sorted(set(rewriter.skipped)),
        "elementwise_qdq": lowering.lowered,
    }
    return new_mod, stats


def integer_conv_count(mod) -> int:
    """Integer convs in `main`: conv2d with int32 output (the rewrite) and packed integer kernels (int8_schedules)."""
    from tvm import relax

    count = 0
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call):
                continue
            name = getattr(value.op, "name", "")
            if name == "relax.nn.conv2d" and str(value.attrs.out_dtype) == "int32":
                count += 1
            elif name == "relax.call_tir" and value.args[0].name_hint.startswith("qconv2d_packed"):
                count += 1
    return count


def _const_value(expr) -> np.ndarray | None:
    from tvm.ir.expr import GenericConst

    if isinstance(expr, GenericConst):
        return expr.value.numpy()
    return None


def _rewriter_class():
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class IntegerConvRewriter(PyExprMutator):
        def __init__(self, mod) -> None:
            super().__init__(mod)
            self.mod_ = mod
            self.bound: dict[Any, Any] = {}
            self.rewritten = 0
            self.skipped: list[str] = []

        def transform(self):
            function = self.mod_["main"]
            for block in function.body.blocks:
                for binding in block.bindings:
                    self.bound[binding.var] = binding.value
            updated = self.visit_expr(function)
            self.builder_.update_func(self.mod_.get_global_var("main"), updated)
            return self.builder_.get()

        def _dequantize_of(self, expr):
            value = self.bound.get(expr)
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.dequantize":
                return value
            return None

        def visit_call_(self, call):
            if getattr(call.op, "name", "") != "relax.nn.conv2d":
                return super().visit_call_(call)
            plan = self._plan(call)
            if isinstance(plan, str):
                self.skipped.append(plan)
                return super().visit_call_(call)
            self.rewritten += 1
            return self._emit_integer_conv(call, **plan)

        def _plan(self, call) -> dict[str, Any] | str:
            """The integer operands of `call`, or a reason why it stays float."""
            attrs = call.attrs
            if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
                return "layout is not NCHW/OIHW"
            data_dq = self._dequantize_of(call.args[0])
            weight_dq = self._dequantize_of(call.args[1])
            if data_dq is None or weight_dq is None:
                return "input or weight is not dequantized"
            q_data = data_dq.args[0]
            data_dtype = str(q_data.ty.dtype) if hasattr(q_data, "ty") else ""
            if data_dtype not in ("uint8", "int8"):
                return "activation is not 8-bit"
            s_x, zp_x = _const_value(data_dq.args[1]), _const_value(data_dq.args[2])
            weight = _const_value(weight_dq.args[0])
            s_w, zp_w = _const_value(weight_dq.args[1]), _const_value(weight_dq.args[2])
            if s_x is None or zp_x is None or s_x.size != 1 or zp_x.size != 1:
                return "activation scale is not a per-tensor constant"
            if weight is None or weight.dtype != np.int8 or s_w is None or zp_w is None:
                return "weight is not a constant int8 tensor"
            if np.any(zp_w != 0) or int(weight_dq.attrs.axis) != 0 and s_w.size != 1:
                return "weight is not symmetric per-output-channel"
            out_channels = weight.shape[0]
            scale_w = np.broadcast_to(s_w.astype(np.float64).reshape(-1), (out_channels,))
            return {"q_data": q_data, "zero_point": int(zp_x.reshape(-1)[0]), "weight": weight,
                    "scale": (float(s_x.reshape(-1)[0]) * scale_w).astype(np.float32)}

        def _emit_integer_conv(self, call, *, q_data, zero_point: int, weight: np.ndarray, scale: np.ndarray):
            attrs = call.attrs
            data = self.visit_expr(q_data)
            top, left, bottom, right = (int(p) for p in attrs.padding)
            if top or left or bottom or right:
                data = self.builder_.emit(relax.op.nn.pad(
                    data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zero_point)))
            acc = self.builder_.emit(relax.op.nn.conv2d(
                data, relax.const(weight), strides=[int(s) for s in attrs.strides], padding=[0, 0, 0, 0],
                dilation=[int(d) for d in attrs.dilation], groups=int(attrs.groups), out_dtype="int32"))
            out_channels = weight.shape[0]
            if zero_point:
                correction = (zero_point * weight.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32)
                acc = self.builder_.emit(relax.op.subtract(acc, relax.const(correction.reshape(1, out_channels, 1, 1))))
            as_float = self.builder_.emit(relax.op.astype(acc, "float32"))
            return relax.op.multiply(as_float, relax.const(scale.reshape(1, out_channels, 1, 1)))

    return IntegerConvRewriter


def _scalar(expr) -> float | None:
    value = _const_value(expr)
    return None if value is None or value.size != 1 else float(value.reshape(-1)[0])


def _qdq_lowering_class():
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class PerTensorQdqLowering(PyExprMutator):
        """Per-tensor R.quantize / R.dequantize -> the elementwise ops of their legalization (same numerics)."""

        def __init__(self, mod) -> None:
            super().__init__(mod)
            self.mod_ = mod
            self.lowered = 0

        def transform(self):
            main = self.mod_.get_global_var("main")
            self.builder_.update_func(main, self.visit_expr(self.mod_["main"]))
            return self.builder_.get()

        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = getattr(call.op, "name", "")
            if name not in ("relax.quantize", "relax.dequantize"):
                return call
            scale, zero_point = _scalar(call.args[1]), _scalar(call.args[2])
            out_dtype = str(call.attrs.out_dtype)
            if scale is None or zero_point is None:
                return call
            data = call.args[0]
            if name == "relax.quantize":
                if out_dtype not in ("uint8", "int8") or str(data.ty.dtype) != "float32":
                    return call
                info = np.iinfo(out_dtype)
                scaled = self.builder_.emit(relax.op.divide(data, relax.const(np.float32(scale))))
                rounded = self.builder_.emit(relax.op.round(scaled))
                shifted = self.builder_.emit(relax.op.add(rounded, relax.const(np.float32(zero_point))))
                # max(min(.)) rather than R.clip: ConvertLayout has no layout rule for clip either.
                low = self.builder_.emit(relax.op.minimum(shifted, relax.const(np.float32(info.max))))
                clipped = self.builder_.emit(relax.op.maximum(low, relax.const(np.float32(info.min))))
                self.lowered += 1
                return relax.op.astype(clipped, out_dtype)
            if out_dtype != "float32" or str(data.ty.dtype) not in ("uint8", "int8"):
                return call
            wide = self.builder_.emit(relax.op.astype(data, "int32"))
            centered = self.builder_.emit(relax.op.subtract(wide, relax.const(np.int32(zero_point))))
            as_float = self.builder_.emit(relax.op.astype(centered, "float32"))
            self.lowered += 1
            return relax.op.multiply(as_float, relax.const(np.float32(scale)))

    return PerTensorQdqLowering
