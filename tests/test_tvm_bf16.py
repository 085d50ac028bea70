"""TVM --precision bf16 and the AVX-512 float schedules: numerics, the float32 decode, refusal, build-only checks.

The test host may lack AVX-512 and AVX512_BF16: bf16 numerics run emulated (bf16 roundings, float32
arithmetic), and what needs the instructions is checked in the generated assembly; where the host has
AVX512_BF16, the vdpbf16ps kernel also runs and must equal the emulated compile.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from graphs import make_model
from yolograph.errors import BackendError
from yolograph.runtime.host import cpu_flags
from yolograph.runtime import OrtOptions, OrtRunner

pytest.importorskip("tvm", reason="the tvm extra is not installed")

from test_tvm_cpu_schedules import conv_chain_model  # noqa: E402
from yolograph.backends import tvm as ytvm  # noqa: E402
from yolograph.backends.tvm import cpu_schedules  # noqa: E402
from yolograph.backends.tvm.compile import lower_to_relax, resolve_options  # noqa: E402
from yolograph.backends.tvm.coverage import fused_module  # noqa: E402
from yolograph.backends.tvm.target import validate_target  # noqa: E402

AVX512 = ("znver4", "skylake-avx512", "sapphirerapids")
AVX2 = ("znver3", "haswell")


@pytest.fixture(autouse=True)
def no_records(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOGRAPH_TVM_TUNING_DB", str(tmp_path / "db"))
    monkeypatch.setenv("YOLOGRAPH_TVM_SHIPPED_RECORDS", "0")


def options_for(model, target: str, **kwargs):
    return resolve_options(model, target=target, tune_trials=0, tune_seconds=None, tuning_db=None, rpc=None,
                           layout=None, int8=None, **kwargs)


def detect_head_model():
    """A two-branch YOLO-style head: feature conv -> final box/class convs -> reshape, DFL softmax + conv, sigmoid."""
    rng = np.random.default_rng(7)
    bins, anchors = 8, 16  # 4 sides x 8 bins; 4x4 feature map
    inits = {
        "wf": rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "bf": rng.normal(0, 0.2, 16).astype(np.float32),
        "wb": rng.normal(0, 0.2, (4 * bins, 16, 1, 1)).astype(np.float32),
        "wc": rng.normal(0, 0.2, (8, 16, 1, 1)).astype(np.float32),
        "wd": np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1),  # the DFL's expectation conv
        "s_flat": np.array([1, 4 * bins, anchors], np.int64), "s_box": np.array([1, 4, bins, anchors], np.int64),
        "s_dfl": np.array([1, 4, anchors], np.int64),
        "s_cls": np.array([1, 8, anchors], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wf", "bf"], ["f"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["f"], ["fs"]), helper.make_node("Mul", ["f", "fs"], ["fa"]),
        helper.make_node("Conv", ["fa", "wb"], ["box"]), helper.make_node("Conv", ["fa", "wc"], ["cls"]),
        helper.make_node("Reshape", ["box", "s_flat"], ["box3"]),  # [N, C, anchors], as Ultralytics flattens
        helper.make_node("Reshape", ["box3", "s_box"], ["box4"]),
        helper.make_node("Transpose", ["box4"], ["boxt"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["boxt"], ["prob"], axis=1),
        helper.make_node("Conv", ["prob", "wd"], ["dist"]),
        helper.make_node("Reshape", ["dist", "s_dfl"], ["dist3"]),
        helper.make_node("Reshape", ["cls", "s_cls"], ["cls3"]), helper.make_node("Sigmoid", ["cls3"], ["score"]),
        helper.make_node("Concat", ["dist3", "score"], ["y"], axis=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, anchors])], inits)


def fma_registers(target: str) -> tuple[list[str], set[str]]:
    """(FMA instructions, the vector registers they use) of the analytic schedule of a 3x3 conv, 64 channels."""
    import tvm

    model = conv_chain_model(8, 64, 24, residual=False)
    target_obj = validate_target(options_for(model, f"llvm -mcpu={target} -num-cores=2").target)
    mod = fused_module(lower_to_relax(model, options_for(model, f"llvm -mcpu={target} -num-cores=2"))[0], target_obj)
    conv = next(gv for gv in mod.get_global_vars() if gv.name_hint.startswith("fused_conv2d1_"))
    scheduled = cpu_schedules.schedule_conv2d_nhwc(mod[conv].with_attr("global_symbol", "main"), target_obj)
    asm = tvm.compile(scheduled.mod, target=target_obj).mod.inspect_source("asm")
    fmas = re.findall(r"vfmadd\w+\s+[^\n]*", asm)
    return fmas, {r for line in fmas for r in re.findall(r"%([xyz]mm\d+)", line)}


# -- bf16 ------------------------------------------------------------------------------------------------


def test_bf16_conv_chain_is_within_bf16_tolerance_of_float32(tmp_path, capsys):
    model = conv_chain_model(16, 32, 16)
    path = ytvm.compile_model(model, tmp_path / "b.so", target="llvm -mcpu=znver3 -num-cores=2", precision="bf16",
                              bf16_emulate=True)
    precision = json.loads((tmp_path / "b.so.json").read_text())["precision"]
    assert precision["mode"] == "bf16" and precision["kernels"] == "emulated" and precision["conv2d_bf16"] == 3
    assert precision["accumulation"] == "float32" and "not their speed" in capsys.readouterr().err
    x = np.random.default_rng(0).normal(0, 1, (1, 16, 16, 16)).astype(np.float32)
    expected = OrtRunner(model, OrtOptions(threads=2)).run(x)[0]
    error = np.abs(ytvm.load_runner(path).run(x)[0] - expected).max() / np.abs(expected).max()
    # bf16 keeps 8 significant bits (relative rounding 2^-9); three convs deep stays within 2%. Above 1e-5: the
    # operands really were rounded (a float32 compile is at 1e-7 here).
    assert 1e-5 < error < 2e-2


def test_decode_stays_float32():
    """Final convs in bf16 with float32 outputs; the DFL conv and everything after the reshape stay float32."""
    from tvm import relax

    from yolograph.backends.tvm.bf16 import rewrite_bf16

    model = detect_head_model()
    mod, stats = rewrite_bf16(lower_to_relax(model, options_for(model, "llvm -num-cores=2"))[0], "emulated")
    assert (stats["conv2d_bf16"], stats["float32_in_decode"]) == (3, 1)
    convs = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.nn.conv2d":
                convs.append([str(a.ty.dtype) for a in value.args] + [str(binding.var.ty.dtype)])
            elif str(getattr(binding.var.ty, "dtype", "float32")) == "bfloat16":  # only casts feeding convs
                assert getattr(value.op, "name", "") == "relax.astype"
    assert convs[:3] == [["bfloat16", "bfloat16", "float32"]] * 3  # feature, box and class convs
    assert convs[3] == ["float32", "float32", "float32"]  # the DFL conv, inside the decode
    assert all(str(b.var.ty.dtype) == "float32" for blk in mod["main"].body.blocks for b in blk.bindings
               if getattr(b.var.ty, "ndim", 4) != 4)  # every reshaped (decode) tensor


def test_bf16_is_refused_without_bf16_instructions():
    model = conv_chain_model(8, 16, 8)
    with pytest.raises(BackendError, match=r"no bfloat16 dot product .*--bf16-emulate true") as error:
        options_for(model, "llvm -mcpu=znver3 -num-cores=2", precision="bf16")
    assert "\n" not in str(error.value)
    with pytest.raises(BackendError, match="only applies to --precision bf16"):
        options_for(model, "llvm -mcpu=znver3", bf16_emulate=True)
    with pytest.raises(BackendError, match="not 'fp16'"):
        options_for(model, "llvm -mcpu=znver3", precision="fp16")
    for cpu in ("sapphirerapids", "znver4"):  # AVX512_BF16 (and AMX-BF16): native, no flag needed
        assert options_for(model, f"llvm -mcpu={cpu} -num-cores=2", precision="bf16").bf16_kernels == "native"


def test_precision_is_a_backend_flag():
    from yolograph.runtime.backend import backend_options

    options = backend_options("tvm", {"precision": "bf16", "bf16_emulate": True})
    assert (options.precision, options.bf16_emulate) == ("bf16", True)
    with pytest.raises(BackendError, match="one of fp32, bf16"):
        backend_options("tvm", {"precision": "int8"})


# -- AVX-512 float schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cpu,lanes,budget", [*((c, 16, 20) for c in AVX512), *((c, 8, 12) for c in AVX2)])
def test_float_schedule_uses_the_full_vector_width(cpu, lanes, budget):
    """16 float lanes and 20 accumulators of AVX-512's 32 registers; 8 lanes and 12 of AVX2's 16."""
    import tvm

    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    assert cpu_schedules.vector_lanes(target) == lanes
    tiles = cpu_schedules.conv_tiles(80, 96, lanes)
    assert all(t.lanes == lanes and t.width * t.vectors <= budget for t in tiles)
    assert tiles[0].width * tiles[0].vectors == budget  # the default tile fills the budget when it can


@pytest.mark.parametrize("cpu", [AVX512[0], AVX2[0]])
def test_generated_conv_kernel_uses_the_register_file(cpu):
    """Build-only: AVX-512 kernels run their FMAs on zmm registers, past zmm15 (32-register file); AVX2 on ymm0-15."""
    fmas, registers = fma_registers(cpu)
    assert fmas
    if cpu in AVX512:
        assert all("zmm" in line for line in fmas)
        assert len(registers) > 20 and any(int(r[3:]) >= 16 for r in registers)
    else:
        assert all("ymm" in line and "zmm" not in line for line in fmas)
        assert all(int(r[3:]) < 16 for r in registers)


# -- the AVX512_BF16 kernel ------------------------------------------------------------------------------------


def bf16_module(model, target: str, mode: str):
    from yolograph.backends.tvm.bf16 import rewrite_bf16

    options = options_for(model, target)
    return rewrite_bf16(lower_to_relax(model, options)[0], mode), validate_target(options.target)


def test_vdpbf16ps_kernel_is_built_for_bf16_targets():
    """Build-only: on an AVX512_BF16 target the convs become the packed kernel and the library holds vdpbf16ps."""
    from yolograph.backends.tvm.compile import build

    model = conv_chain_model(16, 32, 16)
    (mod, stats), target = bf16_module(model, "llvm -mcpu=sapphirerapids -num-cores=2", "native")
    assert stats["conv2d_vdpbf16ps"] == 3  # 16 and 32 input channels (pairs), 32 outputs (two 16-lane vectors)
    library = build(mod, target, None).mod.imports[0]
    assert library.inspect_source("asm").count("vdpbf16ps") >= 3


def test_vdpbf16ps_kernel_schedule_computes_the_bf16_conv():
    """The packed kernel's schedule, with the dot product as plain loops (this host may lack the instruction),
    equals the emulated bf16 compile within float32 rounding: same bf16 products, float32 sums."""
    import tvm
    from tvm import relax

    from yolograph.backends.tvm.compile import build
    from yolograph.backends.tvm.coverage import coverage_of

    model = conv_chain_model(16, 32, 16)
    x = np.random.default_rng(5).normal(0, 1, (1, 16, 16, 16)).astype(np.float32)
    outputs = []
    for mode in ("native", "emulated"):
        (mod, stats), target = bf16_module(model, "llvm -mcpu=znver3 -num-cores=2", mode)
        assert stats["conv2d_vdpbf16ps"] == (3 if mode == "native" else 0)
        assert coverage_of(mod, target, None).analytic == 3  # the packed kernels get the tensorized schedule
        vm = relax.VirtualMachine(build(mod, target, None), tvm.cpu())
        outputs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    assert np.abs(outputs[0] - outputs[1]).max() <= 1e-5 * np.abs(outputs[1]).max()


@pytest.mark.skipif("avx512_bf16" not in (cpu_flags() or ()), reason="runs vdpbf16ps: the host has no AVX512_BF16")
def test_vdpbf16ps_kernel_runs_on_this_host_and_equals_the_emulated_compile(tmp_path):
    """The instruction itself, for the host target (padded 3x3 stride 2, 3x3, 1x1; a residual Add): a bf16
    padding buffer that TVM stored as float32 once made every output of this kernel wrong."""
    model = conv_chain_model(16, 32, 16)
    x = np.random.default_rng(3).normal(0, 1, (1, 16, 16, 16)).astype(np.float32)
    native = ytvm.compile_model(model, tmp_path / "native.so", precision="bf16")
    assert json.loads((tmp_path / "native.so.json").read_text())["precision"]["conv2d_vdpbf16ps"] == 3
    emulated = ytvm.compile_model(model, tmp_path / "emulated.so", target="llvm -mcpu=znver3 -num-cores=2",
                                  precision="bf16", bf16_emulate=True)
    actual, expected = ytvm.load_runner(native).run(x)[0], ytvm.load_runner(emulated).run(x)[0]
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
