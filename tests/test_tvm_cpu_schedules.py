"""Analytic CPU schedules and fast exponentials of the TVM backend: correct, applied, and honest.

Speed is measured in benchmarks/tvm_backend.py; here: every tile the rule may pick computes the same
result as ONNX Runtime, the rule applies to the convs it claims (and reports the ones it does
not), and fast_exp stays within its stated error.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from graphs import make_model
from yolograph.runtime import OrtOptions, OrtRunner

pytest.importorskip("tvm", reason="the tvm extra is not installed")

from yolograph.backends import tvm as ytvm  # noqa: E402
from yolograph.backends.tvm import cpu_schedules  # noqa: E402
from yolograph.backends.tvm.cpu_schedules import ConvTile, conv_tiles  # noqa: E402
from yolograph.backends.tvm.target import parse_target, validate_target  # noqa: E402


@pytest.fixture(autouse=True)
def no_records(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOGRAPH_TVM_TUNING_DB", str(tmp_path / "db"))
    monkeypatch.setenv("YOLOGRAPH_TVM_SHIPPED_RECORDS", "0")


def conv_chain_model(cin: int, cout: int, size: int, residual: bool = True):
    """Conv3x3 stride 2 + SiLU -> Conv3x3 + SiLU (+ residual Add) -> Conv1x1 + bias: the yolov8 conv kinds."""
    rng = np.random.default_rng(cin + cout + size)
    inits = {
        "w1": rng.normal(0, 0.2, (cout, cin, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.2, cout).astype(np.float32),
        "w2": rng.normal(0, 0.1, (cout, cout, 3, 3)).astype(np.float32),
        "b2": rng.normal(0, 0.2, cout).astype(np.float32),
        "w3": rng.normal(0, 0.1, (cout, cout, 1, 1)).astype(np.float32),
        "b3": rng.normal(0, 0.2, cout).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]), helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["s2"]), helper.make_node("Mul", ["c2", "s2"], ["a2"]),
    ]
    last = "a2"
    if residual:
        nodes.append(helper.make_node("Add", ["a1", "a2"], ["r"]))
        last = "r"
    nodes.append(helper.make_node("Conv", [last, "w3", "b3"], ["y"], name="conv3"))
    half = size // 2
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, half, half])], inits)


def test_conv_tiles_divide_the_output_and_fit_the_registers():
    for width, channels, lanes in [(80, 64, 16), (20, 256, 16), (40, 80, 16), (160, 32, 8), (7, 48, 4), (40, 72, 16)]:
        tiles = conv_tiles(width, channels, lanes)
        assert tiles, (width, channels, lanes)
        for tile in tiles:
            assert width % tile.width == 0 and channels % tile.channels == 0
            assert tile.width * tile.vectors <= {16: 20, 8: 12, 4: 12}[lanes]
        best = tiles[0].width * tiles[0].vectors
        assert all(t.width * t.vectors <= best for t in tiles)
    assert conv_tiles(80, 80, 16)[0] == ConvTile(4, 5, 16)  # 80 channels = 5 AVX-512 vectors
    assert conv_tiles(40, 72, 16)[0].lanes == 8  # a pruned width (multiple of 8): half-width vectors
    assert conv_tiles(16, 6, 16) == []  # not a multiple of 4 lanes: no direct schedule


@pytest.mark.parametrize("cin,cout,size", [(3, 32, 32), (16, 80, 40), (32, 48, 24), (8, 24, 16)])
def test_analytic_schedule_matches_ort(tmp_path, cin, cout, size):
    model = conv_chain_model(cin, cout, size)
    path = ytvm.compile_model(model, tmp_path / "m.so", target="llvm -num-cores=2")
    sidecar = json.loads((tmp_path / "m.so.json").read_text())
    assert sidecar["layout"] == "NHWC" and sidecar["tuning"]["tuned_tasks"] == 0
    assert sidecar["tuning"]["analytic_conv_tasks"] == 3 and sidecar["tuning"]["naive_conv_tasks"] == 0
    assert sidecar["fast_exp"]["sigmoid"] == 2
    x = np.random.default_rng(1).normal(0, 1, (1, cin, size, size)).astype(np.float32)
    expected = OrtRunner(model, OrtOptions(threads=2)).run(x)[0]
    actual = ytvm.load_runner(path).run(x)[0]
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("tile", [ConvTile(1, 1, 16), ConvTile(2, 3, 16), ConvTile(4, 2, 8), ConvTile(12, 1, 8)])
def test_every_tile_computes_the_same_conv(tile):
    """The tile is a free choice (what a tuner varies); any valid one gives the reference result."""
    import tvm

    from yolograph.backends.tvm.compile import lower_to_relax, resolve_options
    from yolograph.backends.tvm.coverage import fused_module

    model = conv_chain_model(8, 48, 24, residual=False)
    options = resolve_options(model, target="llvm -num-cores=2", tune_trials=0, tune_seconds=None, tuning_db=None,
                              rpc=None, layout=None, int8=None)
    target = validate_target(options.target)
    mod = fused_module(lower_to_relax(model, options)[0], target)
    conv = next(gv for gv in mod.get_global_vars() if gv.name_hint.startswith("fused_conv2d1_"))  # 3x3, stride 1
    func = mod[conv].with_attr("global_symbol", "main")
    reference = tvm.compile(tvm.IRModule({"main": func}), target=target)
    scheduled = cpu_schedules.schedule_conv2d_nhwc(func, target, tile)
    assert scheduled is not None
    library = tvm.compile(scheduled.mod, target=target)
    rng = np.random.default_rng(0)
    args = [rng.normal(0, 1, [int(d) for d in p.shape]).astype("float32") for p in func.params]
    outputs = []
    for lib in (reference, library):
        tensors = [tvm.runtime.tensor(a) for a in args]
        (lib.jit() if hasattr(lib, "jit") else lib)["main"](*tensors)
        outputs.append(tensors[-1].numpy())
    assert np.abs(outputs[1] - outputs[0]).max() <= 1e-5 * np.abs(outputs[0]).max()
    assert cpu_schedules.schedule_conv2d_nhwc(func, target, ConvTile(5, 1, 16)) is None  # 5 does not divide 24


def test_convs_the_rule_cannot_take_are_reported(tmp_path, capsys):
    model = conv_chain_model(3, 6, 16)  # 6 output channels: not a multiple of 4 vector lanes
    path = ytvm.compile_model(model, tmp_path / "m.so", target="llvm -num-cores=2")
    sidecar = json.loads((tmp_path / "m.so.json").read_text())["tuning"]
    assert sidecar["naive_conv_tasks"] == 3 and sidecar["analytic_conv_tasks"] == 0
    assert sidecar["naive_conv_flop_share"] > 0.5 and "naive loops" in capsys.readouterr().err
    x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    expected = OrtRunner(model, OrtOptions(threads=2)).run(x)[0]
    assert np.abs(ytvm.load_runner(path).run(x)[0] - expected).max() <= 1e-4 * np.abs(expected).max()


def test_fast_exp_sigmoid_and_softmax_error():
    """fast_exp's stated bound: sigmoid and softmax (values in [0, 1]) within 1e-6 absolute, inputs -90..90."""
    import tvm
    from tvm import relax

    from yolograph.backends.tvm.fast_math import rewrite_fast_exp

    x = np.concatenate([np.linspace(-90, 90, 4001), np.random.default_rng(0).normal(0, 8, 4191)]).astype(np.float32)
    x = x.reshape(1, 16, 512)
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Softmax", ["x"], ["m"], axis=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 512])],
                       [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 16, 512]),
                        helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 16, 512])], {})
    from yolograph.backends.tvm.relax_import import to_relax

    mod, counts = rewrite_fast_exp(to_relax(model))
    assert counts == {"sigmoid": 1, "softmax": 1}
    target = validate_target(parse_target("llvm -num-cores=2"))
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    sigmoid, softmax = (t.numpy() for t in vm["main"](tvm.runtime.tensor(x)))
    x64 = x.astype(np.float64)
    exact_sigmoid = 1 / (1 + np.exp(-x64))
    shifted = np.exp(x64 - x64.max(axis=1, keepdims=True))
    exact_softmax = shifted / shifted.sum(axis=1, keepdims=True)
    assert np.abs(sigmoid - exact_sigmoid).max() <= 1e-6
    assert np.abs(softmax - exact_softmax).max() <= 1e-6


def test_tuning_measures_the_analytic_schedules_and_compiles_use_them(tmp_path):
    """tune: every conv tile candidate and the fallbacks become records; a later compile applies them."""
    model = conv_chain_model(16, 32, 32)
    db = tmp_path / "tuned"
    path = ytvm.compile_model(model, tmp_path / "t.so", target="llvm -num-cores=2", tune_trials=2, tuning_db=db)
    tuning = json.loads((tmp_path / "t.so.json").read_text())["tuning"]
    analytic = tuning["analytic"]
    assert analytic["failed"] == 0 and analytic["kernels"] >= 3  # 3 convs (+ the layout transposes)
    assert analytic["candidates"] > analytic["kernels"]  # several register tiles per conv
    assert len(analytic["speedup_over_default"]) == 3  # each conv kernel: first tile vs the best measured
    assert tuning["tuned_tasks"] == tuning["tasks"]
    warm = ytvm.compile_model(model, tmp_path / "w.so", target="llvm -num-cores=2", tuning_db=db)
    warm_tuning = json.loads((tmp_path / "w.so.json").read_text())["tuning"]
    assert warm_tuning["tuned_tasks"] == warm_tuning["tasks"] and warm_tuning["analytic_conv_tasks"] == 0
    x = np.random.default_rng(3).normal(0, 1, (1, 16, 32, 32)).astype(np.float32)
    expected = OrtRunner(model, OrtOptions(threads=2)).run(x)[0]
    for artifact in (path, warm):
        assert np.abs(ytvm.load_runner(artifact).run(x)[0] - expected).max() <= 1e-4 * np.abs(expected).max()


def test_arm_targets_get_neon_tiles_and_build():
    """An AArch64 cross target: 4-lane (NEON) conv tiles, and the module builds (running it needs an Arm host)."""
    from yolograph.backends.tvm.compile import build, lower_to_relax, resolve_options
    from yolograph.backends.tvm.coverage import fused_module

    model = conv_chain_model(16, 32, 32, residual=False)
    options = resolve_options(model, target="llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a76 -num-cores=4",
                              tune_trials=0, tune_seconds=None, tuning_db=None, rpc=None, layout=None, int8=None)
    target = validate_target(options.target)
    assert cpu_schedules.vector_lanes(target) == 4 and options.layout == "NHWC"
    mod = lower_to_relax(model, options)[0]
    fused = fused_module(mod, target)
    convs = [gv for gv in fused.get_global_vars() if "conv2d" in gv.name_hint]
    assert len(convs) == 3
    assert all(cpu_schedules.candidate_tiles(fused[gv], target)[0].lanes == 4 for gv in convs)
    assert build(mod, target, None) is not None
