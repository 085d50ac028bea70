"""x86 integer dot-product tensor intrinsics for the packed INT8 conv (backends/tvm/int8_schedules.py).

Every intrinsic computes, for one output-channel vector of `lanes` int32 accumulators,

    C[i] += int32(A[k]) * int32(B[i, k])      i < lanes, k < group

with A the `group` activations of one input pixel (uint8, broadcast to every lane) and B the
pre-packed weights of those input channels for the `lanes` output channels, contiguous.

- VNNI (AVX-512 VNNI: `vpdpbusd`): TVM's 16x4 u8 x s8 intrinsic (tvm.s_tir.tensor_intrin.x86),
  registered again with the accumulators in "local" scope (the register tile's cache_write; TVM's
  desc binds global buffers only). vpdpbusd sums the four u8*s8 products into int32 without
  intermediate saturation: exact.
- int16 pairs (`vpmaddwd`, AVX2: 8 lanes, AVX-512BW: 16 lanes): ours. The two activations are
  zero-extended to int16 and the weights are stored as int16 at compile time; vpmaddwd multiplies
  int16 pairs and adds each pair into int32: exact for any 8-bit operands.
  Why not `vpmaddubsw` (u8 x s8 pairs, twice the products per instruction, TVM's AVX512_DOT_16x4):
  it adds each pair into a *saturating* int16, and 255*127*2 = 64770 overflows it unless the
  weights are 7-bit; exactness would need re-quantized weights. It also needs a second multiply
  (vpmaddwd by ones) to widen to int32, so it issues as many multiplies per product as the exact
  int16 path: on Zen 3 both are bound by the two vector-multiply pipes.
"""

from __future__ import annotations

from dataclasses import dataclass

VNNI = "vnni"
AVX512_INT16 = "avx512-int16"
AVX2_INT16 = "avx2-int16"


@dataclass(frozen=True)
class DotKernel:
    """One intrinsic: `lanes` output channels x `group` input channels per call."""

    path: str
    intrin: str  # the TensorIntrin name
    lanes: int
    group: int
    weight_dtype: str  # packed weights: int8 (VNNI) or int16 (vpmaddwd pairs)
    data_dtypes: tuple[str, ...]  # activation dtypes the intrinsic reads


def _int16_pair_intrin(lanes: int, data_dtype: str):
    """(desc, impl) of the exact vpmaddwd dot product: `lanes` x 2, activations `data_dtype`."""
    from tvm.script import tirx as T

    llvm_name = "llvm.x86.avx2.pmadd.wd" if lanes == 8 else "llvm.x86.avx512.pmaddw.d.512"
    pair = f"{data_dtype}x2"
    wide = f"int16x{2 * lanes}"
    acc = f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((2,), data_dtype, offset_factor=1), B: T.Buffer((lanes, 2), "int16", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((2,), data_dtype, offset_factor=1), B: T.Buffer((lanes, 2), "int16", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            # Two activations widened to an int16 pair = one int32, broadcast to every lane.
            a_pair = T.reinterpret(T.Cast("int16x2", A.vload([0], pair)), dtype="int32")
            a_wide = T.reinterpret(T.broadcast(a_pair, lanes), dtype=wide)
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=acc) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), a_wide, B.vload([0, 0], dtype=wide), dtype=acc)

    return desc, impl


_REGISTERED: set[str] = set()


def _register(name: str, make) -> None:
    """Register the intrinsic `make()` builds, once per process."""
    from tvm.s_tir import TensorIntrin

    if name in _REGISTERED:
        return
    try:
        TensorIntrin.register(name, *make())
    except Exception:  # noqa: BLE001 - already registered (this module was reloaded)
        pass
    _REGISTERED.add(name)


def _int16_kernel(path: str, lanes: int) -> DotKernel:
    template = f"yolograph_dot_{lanes}x2_{{dtype}}_i16_pmaddwd"
    for dtype in ("uint8", "int8"):
        _register(template.format(dtype=dtype), lambda dtype=dtype: _int16_pair_intrin(lanes, dtype))
    return DotKernel(path, template, lanes, 2, "int16", ("uint8", "int8"))


def _vnni_operand_type() -> str:
    """vpdpbusd's operand type: <64 x i8> since LLVM 18 (TVM's own intrinsic still passes <16 x i32>)."""
    from tvm.target import codegen

    return "int8x64" if codegen.llvm_version_major() >= 18 else "int32x16"


def _vnni_intrin():
    """(desc, impl) of the 16x4 u8 x s8 vpdpbusd dot product, accumulators in local scope."""
    from tvm.script import tirx as T

    operand = _vnni_operand_type()

    def _vnni_operand(value):
        return T.reinterpret(value, dtype=operand)

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), C.vload([0], dtype="int32x16"),
                _vnni_operand(T.broadcast(a_i32, 16)), _vnni_operand(B.vload([0, 0], dtype="int8x64")),
                dtype="int32x16")

    return desc, impl


VNNI_INTRIN = "yolograph_dot_16x4_uint8_i8_vnni"


def _vnni_kernel() -> DotKernel:
    _register(VNNI_INTRIN, _vnni_intrin)
    return DotKernel(VNNI, VNNI_INTRIN, 16, 4, "int8", ("uint8",))


def intrin_name(kernel: DotKernel, data_dtype: str) -> str:
    """The registered intrinsic for activations of `data_dtype` (the int16 ones exist per dtype)."""
    return kernel.intrin.format(dtype=data_dtype)


def dot_kernels(target) -> list[DotKernel]:
    """The intrinsics the target can run, fastest first ([]: no integer kernel, today's path)."""
    from tvm.target import codegen

    if target.kind.name != "llvm":
        return []
    kernels = []
    if codegen.target_has_features("avx512vnni", target):
        kernels.append(_vnni_kernel())
    if codegen.target_has_features("avx512bw", target):
        kernels.append(_int16_kernel(AVX512_INT16, 16))
    if codegen.target_has_features("avx2", target):
        kernels.append(_int16_kernel(AVX2_INT16, 8))  # also the narrow-width fallback on AVX-512
    return kernels
