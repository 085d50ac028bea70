"""Integer conv2d kernels for x86: packed weights, tensorized dot products, fused requantize epilogue.

Two parts, one per compile stage:

1. `pack_integer_conv2d` (Relax, after the NHWC conversion): every integer conv2d the INT8
   rewrite (backends/tvm/int8.py) produced -- NHWC uint8/int8 activations (already padded with the
   zero point), HWIO int8 constant weights, int32 output -- becomes a call to the TE kernel
   `qconv2d_packed` whose weights are re-laid out in numpy at compile time as
   [OC/lanes, KH, KW, IC/group, lanes, group]: the `lanes x group` block one intrinsic call reads is
   contiguous. Input channels that are not a multiple of `group` are padded (activations with 0,
   weights with 0: the products vanish, the zero-point correction is unchanged). The intrinsic is
   the target's fastest (backends/tvm/x86_intrinsics.py: VNNI, AVX-512BW int16, AVX2 int16);
   output channels that no intrinsic's lanes divide keep today's path (conv2d, 32-bit multiplies).
2. `schedule_packed_conv` (a dlight-style rule, applied before the float conv rule): a register
   tile of `width` output pixels x `vectors` channel vectors of int32 accumulators (cache_write to
   local) over the whole reduction, the innermost `lanes x group` block tensorized with the
   intrinsic, and the fused epilogue (zero-point correction, scale, bias, SiLU, quantize to the next
   layer's uint8, residual Add: whatever FuseOps put after the conv) computed on the tile before it
   is stored. Rows are split between the cores. Producers fused in front (padding) stay separate
   loops, parallel: inlining them would put bounds checks inside the dot product.

Contract: the int32 accumulators equal the integer convolution exactly (every intrinsic is exact:
no saturating instruction), so the artifact computes what the conv2d it replaces computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from yolograph.backends.tvm.cpu_schedules import _inline_intermediates, _iter_types, conv_tiles
from yolograph.backends.tvm.x86_intrinsics import DotKernel, dot_kernels, intrin_name

BLOCK = "qconv2d_packed"
FALLBACK = "fallback"


def pack_weight(weight_hwio: np.ndarray, lanes: int, group: int, dtype: str) -> np.ndarray:
    """HWIO int8 weights -> [OC/lanes, KH, KW, IC/group, lanes, group] (IC zero-padded to a multiple of group)."""
    kh, kw, ic, oc = weight_hwio.shape
    padded_ic = -(-ic // group) * group
    w = np.zeros((kh, kw, padded_ic, oc), dtype=np.int8)
    w[:, :, :ic, :] = weight_hwio
    w = w.reshape(kh, kw, padded_ic // group, group, oc // lanes, lanes).transpose(4, 0, 1, 2, 5, 3)
    return np.ascontiguousarray(w).astype(dtype)


def choose_kernel(kernels: list[DotKernel], out_channels: int, data_dtype: str) -> DotKernel | None:
    """The first (fastest) intrinsic whose lanes divide the output channels and that reads `data_dtype`."""
    for kernel in kernels:
        if out_channels % kernel.lanes == 0 and data_dtype in kernel.data_dtypes:
            return kernel
    return None


def packed_conv_te(data, weight, strides: tuple[int, int], dilation: tuple[int, int]):
    """out[n, y, x, f] = sum data[n, y*s + ry*d, x*s + rx*d, c] * W[f // lanes, ry, rx, c // g, f % lanes, c % g]."""
    from tvm import te

    n, height, width, _ = data.shape
    oc_outer, kh, kw, ic_groups, lanes, group = weight.shape
    (sy, sx), (dy, dx) = strides, dilation
    out_h = (height - (kh - 1) * dy - 1) // sy + 1
    out_w = (width - (kw - 1) * dx - 1) // sx + 1
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rco = te.reduce_axis((0, ic_groups), "rco")
    rci = te.reduce_axis((0, group), "rci")
    return te.compute(
        (n, out_h, out_w, oc_outer * lanes),
        lambda b, y, x, f: te.sum(
            data[b, y * sy + ry * dy, x * sx + rx * dx, rco * group + rci].astype("int32")
            * weight[f // lanes, ry, rx, rco, f % lanes, rci].astype("int32"),
            axis=[ry, rx, rco, rci]),
        name=BLOCK)


def pack_integer_conv2d(mod, target) -> tuple[Any, dict[str, Any]]:
    """(module with packed integer convs, {path: conv count} incl. "fallback" and its reasons)."""
    from tvm import relax

    kernels = dot_kernels(target)
    rewriter = _packer_class()(mod, kernels)
    new_mod = relax.transform.DeadCodeElimination()(rewriter.transform())
    counts: dict[str, Any] = {k.path: 0 for k in kernels}
    for path in rewriter.paths:
        counts[path] = counts.get(path, 0) + 1
    counts[FALLBACK] = len(rewriter.fallback)
    counts["fallback_reasons"] = sorted(set(rewriter.fallback))
    return new_mod, counts


def _packer_class():
    from tvm import relax
    from tvm.ir.expr import GenericConst
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class IntegerConvPacker(PyExprMutator):
        def __init__(self, mod, kernels: list[DotKernel]) -> None:
            super().__init__(mod)
            self.mod_ = mod
            self.kernels = kernels
            self.paths: list[str] = []
            self.fallback: list[str] = []

        def transform(self):
            main = self.mod_.get_global_var("main")
            self.builder_.update_func(main, self.visit_expr(self.mod_["main"]))
            return self.builder_.get()

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", "") != "relax.nn.conv2d" or str(call.attrs.out_dtype) != "int32":
                return call
            plan = self._plan(call)
            if isinstance(plan, str):
                self.fallback.append(plan)
                return call
            kernel, weight = plan
            self.paths.append(kernel.path)
            data = call.args[0]
            ic = int(weight.shape[2])
            if ic % kernel.group:
                extra = kernel.group - ic % kernel.group
                data = self.builder_.emit(relax.op.nn.pad(data, [0, 0, 0, 0, 0, 0, 0, extra], pad_value=0.0))
            packed = relax.const(pack_weight(weight, kernel.lanes, kernel.group, kernel.weight_dtype))
            attrs = call.attrs
            return self.builder_.call_te(
                packed_conv_te, data, packed, tuple(int(s) for s in attrs.strides),
                tuple(int(d) for d in attrs.dilation), primfunc_name_hint=BLOCK)

        def _plan(self, call) -> tuple[DotKernel, np.ndarray] | str:
            attrs = call.attrs
            if not self.kernels:
                return "the target has no AVX2/AVX-512 integer dot product"
            if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout or "NHWC")) != ("NHWC", "HWIO", "NHWC"):
                return "layout is not NHWC/HWIO"
            if int(attrs.groups) != 1:
                return "grouped conv"
            if any(int(p) for p in attrs.padding):
                return "padding not folded into the input"
            if not isinstance(call.args[1], GenericConst):
                return "weight is not a constant"
            weight = call.args[1].value.numpy()
            if weight.dtype != np.int8:
                return "weight is not int8"
            data_dtype = str(call.args[0].ty.dtype)
            kernel = choose_kernel(self.kernels, int(weight.shape[3]), data_dtype)
            if kernel is None:
                return f"no intrinsic fits {weight.shape[3]} output channels of {data_dtype} activations"
            return kernel, weight

    return IntegerConvPacker


# -- the schedule -------------------------------------------------------------------------------------


def packed_conv_block(sch):
    """(root, conv block, kernel facts) when the function holds a `qconv2d_packed` block, else None."""
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        stmt = sch.get(block)
        if stmt.name_hint == BLOCK and _iter_types(sch, block) == "SSSSRRRR":
            data, weight = (r.source for r in stmt.reads)
            lanes, group = (int(d) for d in weight.shape[4:])
            return root, block, {"lanes": lanes, "group": group, "weight_dtype": str(weight.dtype),
                                 "data_dtype": str(data.dtype)}
    return None


def is_packed_conv(func) -> bool:
    """True when `func` is a packed integer conv kernel this module schedules (coverage counts it)."""
    from tvm import s_tir

    found = packed_conv_block(s_tir.Schedule(func))
    return found is not None and _intrin_for(found[2]) is not None


def _intrin_for(facts: dict[str, Any]) -> str | None:
    from yolograph.backends.tvm import x86_intrinsics

    if facts["weight_dtype"] == "int8" and facts["lanes"] == 16 and facts["group"] == 4:
        return x86_intrinsics._vnni_kernel().intrin
    if facts["weight_dtype"] == "int16" and facts["group"] == 2 and facts["lanes"] in (8, 16):
        path = x86_intrinsics.AVX2_INT16 if facts["lanes"] == 8 else x86_intrinsics.AVX512_INT16
        return intrin_name(x86_intrinsics._int16_kernel(path, facts["lanes"]), facts["data_dtype"])
    return None


def _parallel_producer(sch, block) -> None:
    """A fused producer (padding): outer loops split between the cores, the channel loop vectorized."""
    from tvm.s_tir.schedule import ScheduleError

    loops = sch.get_loops(block)
    try:
        sch.parallel(sch.fuse(*loops[:2]) if len(loops) > 2 else loops[0])
    except ScheduleError:
        pass


def schedule_packed_conv(func, target, tile=None):
    """The tensorized register-tile schedule of a packed integer conv kernel, or None if `func` has none."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    found = packed_conv_block(sch)
    if found is None:
        return None
    root, conv, facts = found
    intrin = _intrin_for(facts)
    if intrin is None:
        return None
    lanes = facts["lanes"]
    producers = list(sch.get_producers(conv))
    _inline_intermediates(sch, root, keep=[conv, *producers])
    producers = [p for p in sch.get_producers(conv)]
    epilogue = [b for b in sch.get_child_blocks(root)
                if not sch.get(b).same_as(sch.get(conv)) and not any(sch.get(b).same_as(sch.get(p)) for p in producers)]
    b, y, x, f, ry, rx, rco, rci = sch.get_loops(conv)
    width, channels = int(sch.get(x).extent), int(sch.get(f).extent)
    if tile is None:
        tiles = [t for t in conv_tiles(width, channels, lanes) if t.lanes == lanes]
        if not tiles:
            return None
        tile = tiles[0]
    x_outer, x_inner = sch.split(x, [None, tile.width])
    f_outer, f_vector, f_lane = sch.split(f, [None, tile.vectors, lanes])
    accumulators = sch.cache_write(conv, 0, "local")
    sch.reorder(b, y, x_outer, f_outer, ry, rx, rco, x_inner, f_vector, f_lane, rci)
    sch.reverse_compute_at(accumulators, f_outer)
    for block in epilogue:
        sch.reverse_compute_at(block, f_outer)
    sch.parallel(sch.fuse(b, y))
    sch.unroll(x_inner)
    sch.unroll(f_vector)
    init = sch.decompose_reduction(conv, ry)
    sch.tensorize(f_lane, intrin)
    for block in (init, accumulators, *epilogue):
        pixel, channel = sch.get_loops(block)[-2:]
        vector, lane = sch.split(channel, [None, lanes])
        sch.unroll(pixel)
        sch.unroll(vector)
        sch.vectorize(lane)
    for producer in producers:
        _parallel_producer(sch, producer)
    return sch


def packed_conv_rule():
    """The dlight rule that schedules packed integer conv kernels (before the float rules)."""
    from tvm.s_tir.dlight.base import ScheduleRule

    class PackedIntegerConv2d(ScheduleRule):
        """Tensorized integer conv2d (VNNI / AVX-512BW / AVX2 dot products) with a fused epilogue."""

        def apply(self, func, target, tunable):
            return schedule_packed_conv(func, target) if target.kind.name == "llvm" else None

    return PackedIntegerConv2d()
