"""bfloat16 precision for TVM CPU targets: conv2d and matmul on bf16 operands, float32 accumulation.

Rewrite (Relax, `main`, after the NHWC rewrite so the weights are already in their final layout):

    y = conv2d(x, W)    ->    y = conv2d(astype(x, "bfloat16"), W_bf16, out_dtype="float32")

- weights are rounded to bf16 at compile time (round to nearest even, ml_dtypes), one constant each;
- activations are rounded where a conv or matmul reads them: one cast per activation tensor, shared
  by all its readers. FuseOps puts a cast whose tensor has no other reader into the producing
  kernel's epilogue, so that tensor is stored as bf16;
- products and sums are float32: TOPI's conv2d computes astype(out_dtype) * astype(out_dtype) summed
  in out_dtype, which is what `vdpbf16ps` does (bf16 pairs multiplied, accumulated in float32);
- bias, SiLU, residual adds, concat, pools and resizes read the float32 conv outputs and stay float32.

The decode stays float32: an Ultralytics head ends the 4-D feature maps at its final convs (their
outputs are reshaped to [N, C, anchors]); every value computed from a tensor that is not 4-D is the
decode (DFL softmax and its conv, box decode, class sigmoid), and a conv or matmul there is left as
it was. The final convs themselves run in bf16 with float32 outputs, so everything after them is
float32. A classifier's matmul (on a flattened, 2-D tensor) therefore stays float32 too.

Targets: bf16 kernels need AVX512_BF16 or AMX-BF16 ('native'). There, every conv the
`vdpbf16ps` kernel takes (backends/tvm/bf16_conv.py: no groups, even input channels, output channels
a multiple of 16; yolov8n: all but the 3-channel stem) becomes that kernel, with its weights packed
in channel pairs at compile time; the others keep the TOPI conv above (bf16 operands, float32
arithmetic). Elsewhere the rewrite is refused unless the user asks for emulation ('emulated'): the
TOPI conv everywhere, which TVM's BF16 legalization lowers to bf16 storage and float32 arithmetic:
the accuracy of a bf16 CPU (the same roundings of the same operands) but not its speed. The mode
and the kernel counts are recorded in the sidecar; an emulated compile says so on stderr.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from yolograph.errors import BackendError

PRECISIONS = ("fp32", "bf16")
BF16_FEATURES = ("avx512bf16", "amx-bf16")  # LLVM feature names of the bf16 dot products on x86


def bf16_features(target) -> list[str]:
    """The bf16 dot-product features of an llvm `target` (tvm.target.Target); [] when it has none."""
    from tvm.target import codegen

    return [feature for feature in BF16_FEATURES if codegen.target_has_features(feature, target)]


def resolve_precision(precision: str, spec: dict[str, Any], target, *, emulate: bool, int8: bool) -> str | None:
    """The bf16 kernel mode a compile gets ('native', 'emulated'; None for fp32), or BackendError."""
    if precision not in PRECISIONS:
        raise BackendError(f"TVM compiles --precision {' or '.join(PRECISIONS)}, not {precision!r}.")
    if precision == "fp32":
        if emulate:
            raise BackendError("--bf16-emulate only applies to --precision bf16; add --precision bf16 or drop it.")
        return None
    if int8:
        raise BackendError("--precision bf16 is for float models, and this one has Q/DQ nodes (INT8); compile the "
                           "float model with bf16, or the Q/DQ model without --precision.")
    return bf16_mode(spec, target, emulate)


def bf16_mode(spec: dict[str, Any], target, emulate: bool) -> str:
    """'native' (the target has bf16 dot products) or 'emulated' (asked for); else BackendError."""
    if spec["kind"] != "llvm":
        raise BackendError(f"--precision bf16 is for TVM CPU (llvm) targets, not {spec['kind']}; "
                           "compile GPU targets in fp32 or use the TensorRT backend's fp16.")
    if bf16_features(target):
        return "native"
    if emulate:
        return "emulated"
    cpu = spec.get("mcpu", "this CPU")
    raise BackendError(f"The TVM target {cpu} has no bfloat16 dot product (AVX512_BF16 or AMX-BF16), so bf16 "
                       "kernels cannot run on it; compile for such a CPU (--tvm-target 'llvm -mcpu=sapphirerapids' "
                       "or -mcpu=znver4) or add --bf16-emulate true to measure bf16 accuracy on this CPU (not "
                       "bf16 speed).")


def rewrite_bf16(mod, mode: str) -> tuple[Any, dict[str, Any]]:
    """(module with bf16 conv2d/matmul outside the decode, stats for the sidecar)."""
    from tvm import relax

    rewriter = _rewriter_class()(mod, packed=mode == "native")
    new_mod = relax.transform.DeadCodeElimination()(rewriter.transform())
    stats = {
        "mode": "bf16",
        "kernels": mode,
        "conv2d_bf16": rewriter.counts["conv2d"],
        "conv2d_vdpbf16ps": rewriter.counts["packed"],  # of those: the AVX512_BF16 kernel (bf16_conv.py)
        "matmul_bf16": rewriter.counts["matmul"],
        "float32_in_decode": rewriter.counts["decode"],
        "activation_casts": len(rewriter.casts),
        "accumulation": "float32",
        "decode": "float32",
    }
    if mode == "emulated":
        stats["note"] = ("bf16 storage, float32 arithmetic (the target has no AVX512_BF16/AMX-BF16): the accuracy "
                         "of bf16 kernels, not their speed")
    elif stats["conv2d_vdpbf16ps"] < stats["conv2d_bf16"]:
        stats["note"] = (f"{stats['conv2d_vdpbf16ps']} of {stats['conv2d_bf16']} bf16 convs run on vdpbf16ps; the "
                         "others (odd input channels, groups, outputs not a multiple of 16) in float32 arithmetic")
    return new_mod, stats


def bf16_constant(value: np.ndarray):
    """A Relax constant holding `value` rounded to bfloat16 (nearest even)."""
    import ml_dtypes
    import tvm
    from tvm import relax

    return relax.const(tvm.runtime.tensor(np.ascontiguousarray(value.astype(ml_dtypes.bfloat16))))


def decode_values(function) -> set:
    """Vars of `function` computed (transitively) from a tensor that is not 4-D: the head's decode."""
    from tvm import relax

    decode: set = set()
    for block in function.body.blocks:
        for binding in block.bindings:
            info = binding.var.ty
            own = isinstance(info, relax.TensorType) and info.ndim not in (4, -1)
            if own or any(var in decode for var in _vars_in(binding.value)):
                decode.add(binding.var)
    return decode


def _vars_in(expr) -> list:
    from tvm import relax

    found: list = []
    relax.analysis.post_order_visit(expr, lambda e: found.append(e) if isinstance(e, relax.Var) else None)
    return found


def _dtype(expr) -> str:
    return str(getattr(getattr(expr, "ty", None), "dtype", ""))


def _rewriter_class():
    from tvm import relax
    from tvm.ir.expr import GenericConst
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from yolograph.backends.tvm import bf16_conv

    @mutator
    class Bf16Rewriter(PyExprMutator):
        def __init__(self, mod, packed: bool) -> None:
            super().__init__(mod)
            self.mod_ = mod
            self.packed = packed  # eligible convs become bf16_conv's kernel (vdpbf16ps on channel pairs)
            self.decode: set = set()
            self.casts: dict = {}  # activation var (rewritten module) -> its bf16 cast
            self.counts = {"conv2d": 0, "matmul": 0, "decode": 0, "packed": 0}

        def transform(self):
            function = self.mod_["main"]
            self.decode = decode_values(function)
            updated = self.visit_expr(function)
            self.builder_.update_func(self.mod_.get_global_var("main"), updated)
            return self.builder_.get()

        def visit_call_(self, call):
            name = getattr(call.op, "name", "")
            if name not in ("relax.nn.conv2d", "relax.matmul"):
                return super().visit_call_(call)
            if any(_dtype(arg) != "float32" for arg in call.args[:2]):
                return super().visit_call_(call)  # integer (INT8) or already reduced: not ours
            if any(var in self.decode for var in _vars_in(call.args[0])):
                self.counts["decode"] += 1
                return super().visit_call_(call)
            data, weight = (self._as_bf16(arg) for arg in call.args[:2])
            if name == "relax.matmul":
                self.counts["matmul"] += 1
                return relax.op.matmul(data, weight, out_dtype="float32")
            self.counts["conv2d"] += 1
            attrs = call.attrs
            if self.packed and self._packable(call):
                self.counts["packed"] += 1
                return self.builder_.call_te(
                    bf16_conv.conv2d_nhwc_bf16, data, bf16_constant(bf16_conv.pack_weight(call.args[1].value.numpy())),
                    strides=[int(s) for s in attrs.strides], padding=[int(p) for p in attrs.padding],
                    dilation=[int(d) for d in attrs.dilation], primfunc_name_hint="conv2d_nhwc_bf16")
            return relax.op.nn.conv2d(
                data, weight, strides=[int(s) for s in attrs.strides], padding=[int(p) for p in attrs.padding],
                dilation=[int(d) for d in attrs.dilation], groups=int(attrs.groups),
                data_layout=str(attrs.data_layout), kernel_layout=str(attrs.kernel_layout),
                out_layout=str(attrs.out_layout), out_dtype="float32")

        def _packable(self, call) -> bool:
            attrs = call.attrs
            return (str(attrs.data_layout) == "NHWC" and str(attrs.kernel_layout) == "HWIO"
                    and str(attrs.out_layout) == "NHWC" and isinstance(call.args[1], GenericConst)
                    and bf16_conv.eligible(call.args[0].ty.shape, call.args[1].value.shape, int(attrs.groups)))

        def _as_bf16(self, arg):
            if isinstance(arg, GenericConst):
                return bf16_constant(arg.value.numpy())
            value = self.visit_expr(arg)
            if value not in self.casts:
                self.casts[value] = self.builder_.emit(relax.op.astype(value, "bfloat16"))
            return self.casts[value]

    return Bf16Rewriter
