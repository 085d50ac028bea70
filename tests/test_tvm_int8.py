"""INT8 on TVM: the Relax rewrite makes the convs of a tvm-profile QDQ model integer, with ORT's numerics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_tvm import conv_silu_concat_model
from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.pipeline import run_pipeline

pytest.importorskip("tvm", reason="the tvm extra is not installed")

from yolograph.backends import tvm as ytvm  # noqa: E402
from yolograph.backends.tvm.compile import lower_to_relax, resolve_options  # noqa: E402
from yolograph.backends.tvm.int8 import integer_conv_count  # noqa: E402


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    """The small Conv/SiLU/Conv/MaxPool/Concat graph through insert-qdq{profile=tvm} + calibrate."""
    folder = tmp_path_factory.mktemp("calib")
    np.save(folder / "calib.npy", np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    model, _ = run_pipeline(conv_silu_concat_model(),
                            f"insert-qdq{{profile=tvm,head_aware=false}},calibrate{{npy={folder / 'calib.npy'},method=minmax}}",
                            verify=False)
    return model


def output_step(model) -> float:
    """The largest activation quantization step: an upper bound of one step on any output value."""
    from yolograph.ir.graph_view import constant_value

    return max(float(np.max(constant_value(n.inputs[1]))) for n in model.nodes_by_op("DequantizeLinear")
               if constant_value(n.inputs[0]) is None)  # activations, not weights/biases


def test_rewrite_makes_every_quantized_conv_integer(qdq_model, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOGRAPH_TVM_TUNING_DB", str(tmp_path))
    options = resolve_options(qdq_model, target="llvm", tune_trials=0, tune_seconds=None, tuning_db=None,
                              rpc=None, layout=None, int8=None)
    assert options.int8, "QDQ models compile to integer convs by default"
    mod, facts = lower_to_relax(qdq_model, options)
    assert facts["int8"]["integer_conv2d"] == 2 and facts["int8"]["float_conv2d"] == 0
    assert integer_conv_count(mod) == 2
    text = mod.script(show_meta=False)
    assert "R.nn.pad" in text and "R.quantize" not in text and "R.dequantize" not in text
    # On an x86 host with AVX2 every conv gets a tensorized integer kernel, else the int32 conv2d.
    kernels = facts["int8"]["kernels"]
    assert sum(v for k, v in kernels.items() if k != "fallback_reasons") == 2
    assert ("qconv2d_packed" in text) == (kernels["fallback"] < 2)

    float_options = resolve_options(qdq_model, target="llvm", tune_trials=0, tune_seconds=None, tuning_db=None,
                                    rpc=None, layout=None, int8=False)
    float_mod, _ = lower_to_relax(qdq_model, float_options)
    assert integer_conv_count(float_mod) == 0


def test_integer_model_matches_ort_qdq(qdq_model, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOGRAPH_TVM_TUNING_DB", str(tmp_path / "db"))
    path = ytvm.compile_model(qdq_model, tmp_path / "int8.so")
    sidecar = json.loads((tmp_path / "int8.so.json").read_text())
    assert sidecar["int8"]["integer_conv2d"] == 2
    runner = ytvm.load_runner(path)
    step = output_step(qdq_model)
    for seed in (1, 2):
        x = np.random.default_rng(seed).random((1, 3, 16, 16), dtype=np.float32)
        # The reference is ORT running the Q/DQ graph as written (no QLinearConv fusion): on AVX2 hosts
        # without VNNI ORT's QLinearConv multiplies u8 x s8 with vpmaddubsw, whose int16 pair sums
        # saturate for 8-bit weights (this graph: 0.34 off, 15 steps), while TVM's kernels are exact.
        reference = OrtRunner(qdq_model, OrtOptions(threads=2, optimization="disable")).run(x)[0]
        actual = runner.run(x)[0]
        # Integer sums are exact; a rounding tie may move one value by one quantization step.
        assert np.abs(actual - reference).max() <= step * 1.001
        assert np.mean(np.abs(actual - reference) > 1e-6) < 0.01
