"""The bf16 conv2d kernel for AVX512_BF16 targets: `vdpbf16ps` on channel pairs, float32 accumulators.

`vdpbf16ps acc, a, b` adds a[2i] * b[2i] + a[2i+1] * b[2i+1] to the float32 lane acc[i], i < 16. The
direct NHWC convolution maps onto it with input channels taken in pairs:

    out[n, y, x, f] = sum_{rh, rw, p, k<2} f32(pad[n, y*s + rh, x*s + rw, 2p + k]) * f32(W[rh, rw, p, f, k])

- the input pair (2p, 2p+1) is adjacent in NHWC memory: one 64-bit load of two float32 values that
  hold bf16-exact numbers (the padding stage rounds them), narrowed to a bf16 pair (exact) and
  broadcast to the 16 lanes. The padded input is float32 on purpose: TVM's bf16 legalization stores
  every intermediate bf16 buffer as float32, so a bf16 padding buffer was float32 in memory by the
  time the instruction read it as bf16 pairs (measured on an AMX Xeon: the output was off by 100%);
  a float32 buffer means the same bytes before and after legalization;
- the weights are packed at compile time as [kh, kw, Cin/2, Cout, 2] (`pack_weight`), so the 16 output
  channels x 2 input channels one instruction reads are 64 contiguous bytes;
- the register tile, loop order, parallel rows and fused epilogue are the float32 conv rule's
  (cpu_schedules.schedule_conv2d_nhwc), with the (16 lanes x 2) innermost pair tensorized.

TVM legalizes every bf16 value to float32 arithmetic before LLVM sees it, so the instruction is
reached through a small LLVM function imported into the module (`pragma_import_llvm`), which takes
the operands' addresses and calls `llvm.x86.avx512bf16.dpbf16ps.512`; LLVM inlines it. The padding
is a separate, parallel stage (the intrinsic reads the padded input directly), not inlined as in the
float32 kernel. Contract: the float32 sum of the bf16 products (exact in float32: 8-bit mantissas),
as the emulated compile computes it from the same bf16 operands, within float32 rounding of the
sum's order; the instruction also flushes denormals to zero. Checked here with the dot product as
plain loops (tests/test_tvm_bf16.py); the instruction itself runs only on an AVX512_BF16 CPU.
"""

from __future__ import annotations

import numpy as np

BLOCK = "conv2d_nhwc_bf16"
LANES = 16  # float32 accumulators per vdpbf16ps (512-bit)
NATIVE_INTRIN = "yolograph_dot_16x2_bf16_avx512bf16"
EMULATED_INTRIN = "yolograph_dot_16x2_bf16_emulated"  # the same dot product as plain loops (tests on any host)
_HELPER = "yolograph_dpbf16ps"
_LLVM_HELPER = f"""
define linkonce_odr <16 x float> @{_HELPER}(<16 x float> %acc, ptr %a, ptr %b) alwaysinline {{
  %wide = load <2 x float>, ptr %a, align 4
  %narrow = fptrunc <2 x float> %wide to <2 x bfloat>
  %pair = bitcast <2 x bfloat> %narrow to i32
  %one = insertelement <16 x i32> poison, i32 %pair, i64 0
  %all = shufflevector <16 x i32> %one, <16 x i32> poison, <16 x i32> zeroinitializer
  %va = bitcast <16 x i32> %all to <32 x bfloat>
  %vb = load <32 x bfloat>, ptr %b, align 2
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %va, <32 x bfloat> %vb)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
"""


def eligible(data_shape, weight_shape, groups: int) -> bool:
    """NHWC data and HWIO weights the kernel takes: no groups, even input channels, 16-multiple outputs."""
    kh, kw, cin, cout = (int(d) for d in weight_shape)
    return groups == 1 and cin % 2 == 0 and cout % LANES == 0 and int(data_shape[-1]) == cin


def pack_weight(hwio: np.ndarray) -> np.ndarray:
    """[kh, kw, Cin, Cout] -> [kh, kw, Cin/2, Cout, 2]: each output channel's input-channel pair adjacent."""
    kh, kw, cin, cout = hwio.shape
    return np.ascontiguousarray(hwio.reshape(kh, kw, cin // 2, 2, cout).transpose(0, 1, 2, 4, 3))


def conv2d_nhwc_bf16(data, weight, strides, padding, dilation):
    """TE: NHWC bf16 data x packed bf16 weight [kh, kw, Cin/2, Cout, 2] -> float32 NHWC (float32 sums)."""
    from tvm import te, tirx

    n, height, width, channels = (int(d) for d in data.shape)
    kh, kw, pairs, cout, _ = (int(d) for d in weight.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding

    def pad_value(b, y, x, c):  # float32 holding the bf16 value (see the module docstring)
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        return tirx.if_then_else(inside, data[b, y - top, x - left, c].astype("float32"), tirx.const(0.0, "float32"))

    padded = te.compute((n, height + top + bottom, width + left + right, channels), pad_value, name="bf16_pad")
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    rc, rk = te.reduce_axis((0, pairs), "rc"), te.reduce_axis((0, 2), "rk")
    return te.compute(
        (n, out_h, out_w, cout),
        lambda b, y, x, f: te.sum(
            padded[b, y * sh + rh * dh, x * sw + rw * dw, rc * 2 + rk]
            * weight[rh, rw, rc, f, rk].astype("float32"), axis=[rh, rw, rc, rk]),
        name=BLOCK)


def register_intrinsics() -> None:
    """The 16x2 bf16 dot product: its description, the vdpbf16ps implementation and a plain-loop one."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if TensorIntrin.get(NATIVE_INTRIN, allow_missing=True) is not None:
        return

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((2,), "float32", offset_factor=2), B: T.Buffer((16, 2), "bfloat16", offset_factor=2),
             C: T.Buffer((16,), "float32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            for i, k in T.grid(16, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + A[vk] * T.cast(B[vi, vk], "float32")

    @T.prim_func(s_tir=True)
    def native(A: T.Buffer((2,), "float32", offset_factor=2), B: T.Buffer((16, 2), "bfloat16", offset_factor=2),
               C: T.Buffer((16,), "float32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            C[T.ramp(0, 1, 16)] = T.call_extern("float32x16", _HELPER, C.vload([0], "float32x16"),
                                                T.address_of(A[0]), T.address_of(B[0, 0]))

    TensorIntrin.register(NATIVE_INTRIN, desc, native)
    TensorIntrin.register(EMULATED_INTRIN, desc, desc)


def bf16_conv_block(sch):
    """(root, conv block, padding block) of a kernel built from conv2d_nhwc_bf16, else None."""
    root = sch.get_sblock("root")
    convs = [b for b in sch.get_child_blocks(root) if sch.get(b).name_hint == BLOCK]
    if len(convs) != 1:
        return None
    producers = [b for b in sch.get_producers(convs[0]) if sch.get(b).name_hint.startswith("bf16_pad")]
    return root, convs[0], (producers[0] if producers else None)


def candidate_tiles(func, target) -> list:
    """The float32 rule's register tiles of full 16-lane vectors for a conv2d_nhwc_bf16 kernel ([] if not one)."""
    from tvm import s_tir

    from yolograph.backends.tvm.cpu_schedules import conv_tiles

    sch = s_tir.Schedule(func)
    found = bf16_conv_block(sch)
    if found is None:
        return []
    loops = sch.get_loops(found[1])
    width, channels = int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)
    return [t for t in conv_tiles(width, channels, LANES) if t.lanes == LANES]


def schedule_conv2d_bf16(func, target, tile=None, native: bool | None = None):
    """The tensorized schedule of a conv2d_nhwc_bf16 kernel, or None if `func` is not one.

    tile None: the first candidate. native None: vdpbf16ps when the target has AVX512_BF16, else the same
    dot product as plain loops (what tests run on hosts without the instruction).
    """
    from tvm import s_tir

    from yolograph.backends.tvm.bf16 import bf16_features
    from yolograph.backends.tvm.cpu_schedules import _inline_intermediates

    sch = s_tir.Schedule(func)
    found = bf16_conv_block(sch)
    if found is None:
        return None
    if tile is None:
        tiles = candidate_tiles(func, target)
        if not tiles:
            return None
        tile = tiles[0]
    if native is None:
        native = "avx512bf16" in bf16_features(target)
    root, conv, pad = found
    n, h, w, co, rh, rw, rc, rk = sch.get_loops(conv)
    width, channels = int(sch.get(w).extent), int(sch.get(co).extent)
    if tile.lanes != LANES or width % tile.width or channels % tile.channels:
        return None
    register_intrinsics()
    keep = [conv] + ([pad] if pad is not None else [])
    _inline_intermediates(sch, root, keep=keep)  # the input cast into the padding, the epilogue chain
    epilogue = [b for b in sch.get_child_blocks(root) if not any(sch.get(b).same_as(sch.get(k)) for k in keep)]
    w_outer, w_inner = sch.split(w, [None, tile.width])
    co_outer, co_vector, co_lane = sch.split(co, [None, tile.vectors, LANES])
    accumulators = sch.cache_write(conv, 0, "local")
    sch.reorder(n, h, w_outer, co_outer, rh, rw, rc, w_inner, co_vector, co_lane, rk)
    sch.reverse_compute_at(accumulators, co_outer)
    for block in epilogue:
        sch.reverse_compute_at(block, co_outer)
    rows = sch.fuse(n, h)
    sch.parallel(rows)
    sch.unroll(w_inner)
    sch.unroll(co_vector)
    init = sch.decompose_reduction(conv, rh)
    sch.tensorize(co_lane, NATIVE_INTRIN if native else EMULATED_INTRIN)
    if native:
        sch.annotate(rows, "pragma_import_llvm", _LLVM_HELPER)
    for block in (init, accumulators, *epilogue):
        pixel, channel = sch.get_loops(block)[-2:]
        vector, lane = sch.split(channel, [None, LANES])
        sch.unroll(pixel)
        sch.unroll(vector)
        sch.vectorize(lane)
    if pad is not None:
        pad_loops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*pad_loops[:2]))
    return sch
