"""Target profiles: the data that decides where Q/DQ goes and how tensors are quantized.

A profile is plain data read by `placement.plan_qdq`, so a new backend is a new table entry, not new
graph code. The built-in profiles (``ort-cpu`` and ``openvino`` pick 7- or 8-bit weights by the host's CPU: see
``host_profile`` below; ``openvino`` is described above its entry):

- ``ort-cpu``: U8 asymmetric activations, S8 symmetric per-channel weights (axis 0), Q/DQ around every
  quantizable op (Conv, Add, Concat, MaxPool, Resize, Split) so ONNX Runtime's QDQ transformer turns them
  into QLinear* kernels and keeps the tensors between convs in uint8. SiLU is first rewritten as one
  com.microsoft QuickGelu(alpha=1) between a Q/DQ pair: ORT runs DQ->QuickGelu->Q as one pass over
  NHWC data, measured faster than QLinearSigmoid + QLinearMul (and it rounds once instead of twice). Ops that
  only move data (MaxPool, Resize, Split) share one scale between input and outputs, as ORT needs to
  drop their Q/DQ, and Concat inputs share the output's scale, so QLinearConcat copies bytes instead of
  requantizing each input (measured: QLinearConcat 3.5 ms -> 0.9 ms per yolov8n run, SQNR unchanged). Biases become int32 with scale = input scale x weight scale (what QLinearConv takes).
- ``trt``: TensorRT explicit quantization. S8 symmetric activations (zero point 0), per-channel weights
  on axis 0, Q/DQ only on Conv inputs, the residual-Add rule (the Add input produced by a Conv (+SiLU)
  fuses into that Conv's epilogue and gets no Q/DQ; the other input does), and data-movement ops
  (MaxPool, Resize, Split, Concat) kept in the quantized domain: their inputs and outputs share one scale,
  so TensorRT never requantizes. Biases stay float (TensorRT quantizes them itself).
- ``tvm``: what the TVM backend can lower to integer kernels; until it lowers more, the same rules as
  ``ort-cpu`` without the ORT-only QuickGelu (SiLU stays Sigmoid+Mul, each Q/DQ-wrapped).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace

from yolograph.errors import PipelineError
from yolograph.runtime.host import cpu_flags

# Ops through which values pass unchanged (or are only selected): no requantization is needed.
DATA_MOVEMENT_OPS = frozenset({"MaxPool", "Resize", "Split", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})


@dataclass(frozen=True)
class QdqProfile:
    """How one target wants a model quantized (see the module docstring)."""

    name: str
    activation_signed: bool  # int8 (True) or uint8 (False) activations
    activation_symmetric: bool  # zero point fixed at 0
    # Ops whose float activation inputs get Q/DQ.
    input_ops: frozenset[str]
    # Ops whose outputs get Q/DQ (so the backend can fuse a quantized op with a Q after it).
    output_ops: frozenset[str]
    # Ops whose inputs and outputs share one scale (no requantization inside them).
    shared_scale_ops: frozenset[str]
    # Concat inputs and output share one scale (TensorRT) instead of being requantized (ORT QLinearConcat).
    concat_shared_scale: bool = False
    # Inputs of data-movement/concat ops are quantized when their output is (TensorRT's propagation).
    propagate_through_shared: bool = False
    residual_add_rule: bool = False
    quantize_bias: bool = True  # int32 bias with scale in_scale*w_scale (ORT QLinearConv); TensorRT: float
    weight_axis: int = 0
    weight_bits: int = 8
    weight_narrow_range: bool = True  # symmetric weights in [-127, 127]
    # Rewrite SiLU (Sigmoid+Mul) as this single op first (ORT: com.microsoft QuickGelu with alpha=1).
    silu_as: str | None = None

    @property
    def activation_qmin(self) -> int:
        return -128 if self.activation_signed else 0

    @property
    def activation_qmax(self) -> int:
        return 127 if self.activation_signed else 255

    @property
    def weight_qmax(self) -> int:
        return 2 ** (self.weight_bits - 1) - 1

    @property
    def quantized_ops(self) -> frozenset[str]:
        return self.input_ops | self.output_ops | self.shared_scale_ops


_ORT_OPS = frozenset({"Conv", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "Split"})

PROFILES: dict[str, QdqProfile] = {
    "ort-cpu": QdqProfile(
        name="ort-cpu",
        activation_signed=False,
        activation_symmetric=False,
        input_ops=_ORT_OPS,
        output_ops=_ORT_OPS,
        shared_scale_ops=frozenset({"MaxPool", "Resize", "Split", "Concat"}),
        concat_shared_scale=True,
        silu_as="QuickGelu",
    ),
    "trt": QdqProfile(
        name="trt",
        activation_signed=True,
        activation_symmetric=True,
        input_ops=frozenset({"Conv"}),
        output_ops=frozenset(),
        shared_scale_ops=frozenset({"MaxPool", "Resize", "Split", "Concat"}),
        concat_shared_scale=True,
        propagate_through_shared=True,
        residual_add_rule=True,
        quantize_bias=False,
    ),
}
PROFILES["tvm"] = replace(PROFILES["ort-cpu"], name="tvm", silu_as=None)

# ``openvino``: where OpenVINO's CPU plugin runs integer kernels. Its ONNX reader turns each Q/DQ pair
# into a FakeQuantize, and the low-precision transformations fuse a FakeQuantize on a Conv (MatMul)
# input into the producing Conv as an output post-op, after the bias and SiLU (Swish) post-ops. So
# Q/DQ goes only on Conv/MatMul inputs: SiLU stays float and costs nothing, Conv outputs (head logits
# included) leave the Conv in float, and data-movement ops and Concat share their inputs' scale so
# MaxPool/Resize/Split/Concat run on int8. S8 symmetric activations: a non-zero zero point makes the
# CPU plugin add zero-point compensation to every Conv. Measured on yolov8n (1-thread CPU ms per run,
# OpenVINO 2026.4 on an AMX Xeon, calibrated on coco128 0-31, mAP50-95 on 32-127): S8 symmetric 31.3
# ms / 0.4344, U8 asymmetric 35.8 ms / 0.4355, NNCF's placement (asymmetric) 35.9 ms. With one
# placeholder scale everywhere: this placement 27.8 ms, ort-cpu's 29.0, tvm's 31.1. Quantizing both
# Add inputs too (NNCF's rule) was slower in every run: a float residual Add fuses into the Conv before it.
PROFILES["openvino"] = QdqProfile(
    name="openvino",
    activation_signed=True,
    activation_symmetric=True,
    input_ops=frozenset({"Conv", "MatMul"}),
    output_ops=frozenset(),
    shared_scale_ops=frozenset({"MaxPool", "Resize", "Split", "Concat"}),
    concat_shared_scale=True,
    propagate_through_shared=True,
    quantize_bias=False,
)


# ``ort-cpu`` on x86 without VNNI. ONNX Runtime's u8s8 kernels there multiply with vpmaddubsw, which adds
# two u8*s8 products into a saturating int16: 2*255*127 overflows it, 2*255*63 does not. So weights get 7
# bits ([-63, 63]), ORT's own reduce_range fix. Measured on yolov8n (coco128, calibrated on 0-31, mAP50-95
# on 32-127, AMD EPYC Zen 3, AVX2 only): 8-bit weights 0.4126 (0.4344 on an AVX-512 VNNI host), 7-bit
# 0.4247, 7-bit + adaptive-rounding 0.4314. VNNI (vpdpbusd) and ARM dot-product kernels accumulate in
# int32 and keep 8 bits. The host decides only what plain ``ort-cpu`` means when insert-qdq runs; the
# model records the explicit name (``ort-cpu-w8`` / ``ort-cpu-w7``), which later passes read back, and a
# model built for another machine names it directly (profile=ort-cpu-w8 for a VNNI server).
PROFILES["ort-cpu-w8"] = replace(PROFILES["ort-cpu"], name="ort-cpu-w8")
PROFILES["ort-cpu-w7"] = replace(PROFILES["ort-cpu"], name="ort-cpu-w7", weight_bits=7)
# Names that stand for a host-dependent choice (see host_profile); never recorded in a model.
# ``openvino`` follows the same rule: without VNNI, OpenVINO's CPU plugin (oneDNN) also runs u8s8 convs on
# vpmaddubsw (measured with ONEDNN_MAX_CPU_ISA=AVX2 on an AMX Xeon: the yolov8n INT8 IR drifted 4.4x as
# far from the float model as ONNX Runtime's unsaturated run of the same graph; with 7-bit weights it does not).
PROFILES["openvino-w8"] = replace(PROFILES["openvino"], name="openvino-w8")
PROFILES["openvino-w7"] = replace(PROFILES["openvino"], name="openvino-w7", weight_bits=7)

HOST_DEPENDENT = {"ort-cpu": ("ort-cpu-w8", "ort-cpu-w7"), "openvino": ("openvino-w8", "openvino-w7")}


def get_profile(name: str) -> QdqProfile:
    """The profile called `name`; ``ort-cpu`` is resolved for this host (host_profile)."""
    if name not in PROFILES:
        raise PipelineError(f"Unknown quantization profile {name!r}; use one of {', '.join(PROFILES)}.")
    if name in HOST_DEPENDENT:
        return PROFILES[host_profile(name, platform.machine(), cpu_flags())]
    return PROFILES[name]


def host_profile(name: str, machine: str, flags: frozenset[str] | None) -> str:
    """The explicit profile `name` means on a CPU of this architecture and these flags (None: unknown).

    Rule: x86 without any VNNI flag (avx512_vnni, avx_vnni, amx_int8) -> 7-bit weights; anything else
    (VNNI x86, ARM, flags unknown) -> 8-bit weights, the previous default."""
    eight, seven = HOST_DEPENDENT[name]
    x86 = machine.lower() in ("x86_64", "amd64", "i686", "x86")
    vnni = flags is not None and bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return seven if x86 and flags is not None and not vnni else eight
