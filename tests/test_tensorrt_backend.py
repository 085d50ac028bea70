"""TensorRT backend pieces that run without a GPU: build planning, batch-dynamic graphs, the engine
sidecar, engine-inspector parsing, the no-GPU errors. GPU tests at the end skip with the reason
`gpu_available()` gives when there is no GPU or no TensorRT."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from yolograph.backends.tensorrt import (
    NO_GPU_MESSAGE,
    BuildSettings,
    compile_model,
    gpu_available,
    int8_report,
    is_engine,
    load_runner,
    parse_engine_information,
    plan_build,
)
from yolograph.backends.tensorrt.batch import check_batch_dynamic, make_batch_dynamic
from yolograph.backends.tensorrt.build import apply_plan
from yolograph.backends.tensorrt.inspector import normalize_type, onnx_origins
from yolograph.backends.tensorrt.settings import default_timing_cache, precision_pipeline, slug
from yolograph.backends.tensorrt.sidecar import (
    EngineSidecar,
    TensorSpec,
    read_sidecar,
    sha256_file,
    sidecar_path,
    write_sidecar,
)
from yolograph.errors import BackendError
from yolograph.ir.model import TensorInfo

from graphs import make_model

GPU_OK, GPU_REASON = gpu_available()
IMAGES = [TensorInfo("images", (1, 3, 640, 640), np.dtype(np.float32))]


# -- build planning (settings -> flags, pools, profiles) ------------------------------------------


def _plan(tmp_path, **kwargs):
    has_qdq = kwargs.pop("has_qdq", kwargs.get("precision") in ("int8", "best"))
    has_fp16 = kwargs.pop("has_fp16", False)
    major = kwargs.pop("major", 10)
    return plan_build(BuildSettings(timing_cache=tmp_path / "t.cache", **kwargs), IMAGES, has_qdq=has_qdq,
                      has_fp16=has_fp16, tensorrt_major=major)


def test_strongly_typed_plans_take_precision_from_the_graph(tmp_path):
    for precision, qdq, fp16 in (("fp32", False, False), ("fp16", False, True), ("int8", True, False),
                                 ("best", True, True)):
        plan = _plan(tmp_path, precision=precision, has_qdq=qdq, has_fp16=fp16, major=11)
        assert plan.strongly_typed and plan.set_flags == () and plan.clear_flags == ()
        assert plan.network_flags == () and plan.to_json()["tensorrt_major"] == 11
    on_10 = _plan(tmp_path, precision="fp16", has_fp16=True, typing="strong")
    assert on_10.strongly_typed and on_10.network_flags == ("STRONGLY_TYPED",) and on_10.set_flags == ()
    weak = _plan(tmp_path, precision="best")  # TensorRT 10 default: builder flags, as before
    assert not weak.strongly_typed and weak.set_flags == ("INT8", "FP16") and weak.precision_mode == "builder flags"
    with pytest.raises(BackendError, match="graph, which is fp32, not fp16: add 'to-fp16'"):
        _plan(tmp_path, precision="fp16", major=11)
    with pytest.raises(BackendError, match="which is int8, not best: add 'to-fp16'"):
        _plan(tmp_path, precision="best", has_qdq=True, major=11)
    with pytest.raises(BackendError, match="no weakly typed networks"):
        _plan(tmp_path, precision="fp16", has_fp16=True, typing="weak", major=11)
    with pytest.raises(BackendError, match="TensorRT 12 is not supported"):
        _plan(tmp_path, major=12)
    with pytest.raises(BackendError, match="Unknown TensorRT typing"):
        _plan(tmp_path, typing="loose")


def test_precision_selects_the_passes():
    assert precision_pipeline("fp32") == ""
    assert precision_pipeline("fp16") == "to-fp16"
    assert precision_pipeline("fp16", has_fp16=True) == ""
    assert precision_pipeline("int8", images="D") == "cleanup,insert-qdq{profile=trt},calibrate{images=D,range=0:32}"
    assert precision_pipeline("best", images="D").endswith("range=0:32},to-fp16")
    assert precision_pipeline("best", has_qdq=True) == "to-fp16"  # Q/DQ already in: only float16 is added
    with pytest.raises(BackendError, match="--calibration-images"):
        precision_pipeline("int8")
    with pytest.raises(BackendError, match="before to-fp16"):
        precision_pipeline("best", has_fp16=True, images="D")
    with pytest.raises(BackendError, match="more reduced"):
        precision_pipeline("fp16", has_qdq=True)


def test_version_1_sidecars_still_read(tmp_path):
    engine = tmp_path / "old.engine"
    engine.write_bytes(b"engine")
    write_sidecar(engine, _sidecar(engine))
    data = json.loads(sidecar_path(engine).read_text())
    data["version"] = 1
    del data["tensorrt_major"], data["precision_mode"]
    sidecar_path(engine).write_text(json.dumps(data))
    old = read_sidecar(engine)
    assert old.tensorrt_major == 10 and old.precision_mode == "builder flags"


def test_precision_flags(tmp_path):
    assert _plan(tmp_path, precision="fp32").set_flags == ()
    assert _plan(tmp_path, precision="fp32").clear_flags == ("TF32",)  # real FP32, not TF32 convolutions
    assert _plan(tmp_path, precision="fp16").set_flags == ("FP16",)
    int8 = _plan(tmp_path, precision="int8")
    assert int8.set_flags == ("INT8", "FP16") and int8.clear_flags == ()
    strict = _plan(tmp_path, precision="int8", int8_fallback="fp32")
    assert strict.set_flags == ("INT8",) and strict.clear_flags == ("TF32",)
    assert int8.profiling_verbosity == "DETAILED"


def test_workspace_and_static_batch(tmp_path):
    plan = _plan(tmp_path, workspace_mb=512)
    assert plan.workspace_bytes == 512 * 1024 * 1024
    assert not plan.dynamic_batch and plan.profiles == () and plan.profile_index(1) == 0
    assert plan.timing_cache == tmp_path / "t.cache"


def test_batch_profiles_one_per_batch_size(tmp_path):
    plan = _plan(tmp_path, batch_sizes=(8, 1, 8))
    assert plan.dynamic_batch and plan.batch_sizes == (1, 8)
    assert [[(s.input, s.min, s.opt, s.max) for s in p] for p in plan.profiles] == [
        [("images", (1, 3, 640, 640), (1, 3, 640, 640), (1, 3, 640, 640))],
        [("images", (8, 3, 640, 640), (8, 3, 640, 640), (8, 3, 640, 640))],
    ]
    assert plan.profile_index(8) == 1
    with pytest.raises(BackendError, match="batch sizes"):
        plan.profile_index(4)
    assert json.loads(json.dumps(plan.to_json()))["profiles"][1][0]["max"] == [8, 3, 640, 640]


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "int4"}, "Unknown TensorRT precision"),
    ({"workspace_mb": 0}, "at least 1 MiB"),
    ({"batch_sizes": ()}, "at least one batch size"),
    ({"batch_sizes": (0,)}, "positive"),
    ({"precision": "int8", "has_qdq": False}, "INT8 needs a Q/DQ graph"),
    ({"precision": "fp16", "has_qdq": True}, "--precision int8"),
    ({"precision": "int8", "int8_fallback": "bf16"}, "fallback"),
])
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(BackendError, match=message):
        _plan(tmp_path, **kwargs)


def test_default_timing_cache_is_per_device(monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOGRAPH_CACHE_DIR", str(tmp_path))
    assert slug("NVIDIA H100 80GB HBM3-trt10.9.0") == "nvidia-h100-80gb-hbm3-trt10.9.0"
    assert default_timing_cache("NVIDIA H100-trt10.9") == tmp_path / "tensorrt" / "timing-nvidia-h100-trt10.9.cache"
    plan = plan_build(BuildSettings(), IMAGES, has_qdq=False, device_tag="NVIDIA L4-trt10.3")
    assert plan.timing_cache == tmp_path / "tensorrt" / "timing-nvidia-l4-trt10.3.cache"


class _Recorder:
    """A stand-in for TensorRT's builder/config/profile objects that records the calls made on it.

    It checks that `apply_plan` issues the calls the plan implies through the TensorRT 10 Python API
    names (set_flag, clear_flag, set_memory_pool_limit, create_optimization_profile, set_shape,
    add_optimization_profile, profiling_verbosity); it is not TensorRT.
    """

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args)) or (self if name == "create_optimization_profile" else True)

    def __setattr__(self, name, value):
        if name == "calls":
            object.__setattr__(self, name, value)
        else:
            self.calls.append(("set " + name, value))


def test_apply_plan_calls(tmp_path):
    trt = types.SimpleNamespace(
        BuilderFlag=types.SimpleNamespace(FP16="kFP16", INT8="kINT8", TF32="kTF32"),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="kWORKSPACE"),
        ProfilingVerbosity=types.SimpleNamespace(DETAILED="kDETAILED"),
    )
    recorder = _Recorder()
    apply_plan(_plan(tmp_path, precision="int8", workspace_mb=2, batch_sizes=(1, 8)), trt, recorder, recorder)
    calls = recorder.calls
    assert ("set_flag", "kINT8") in calls and ("set_flag", "kFP16") in calls
    assert ("set_memory_pool_limit", "kWORKSPACE", 2 * 1024 * 1024) in calls
    assert ("set profiling_verbosity", "kDETAILED") in calls
    shapes = [c for c in calls if c[0] == "set_shape"]
    assert shapes == [("set_shape", "images", (b, 3, 640, 640), (b, 3, 640, 640), (b, 3, 640, 640)) for b in (1, 8)]
    assert sum(c[0] == "add_optimization_profile" for c in calls) == 2


# -- batch-dynamic graph --------------------------------------------------------------------------


def test_yolov8n_becomes_batch_dynamic(yolov8n):
    before = yolov8n.serialize()
    proto = make_batch_dynamic(yolov8n)
    assert yolov8n.serialize() == before  # input model untouched
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*proto.graph.input, *proto.graph.output)]
    assert dims == [["batch", 3, 640, 640], ["batch", 84, 8400]]
    check_batch_dynamic(yolov8n, proto, batch=2)  # per-sample outputs match the static graph


def test_batch_folding_reshape_is_refused():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="fold")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])],
                       {"shape": np.array([4, 2], np.int64)})
    with pytest.raises(BackendError, match="fold.*batch sizes \\(1,\\)"):
        make_batch_dynamic(model)


def test_batch_baked_in_by_flatten_is_caught():
    # Flatten(axis=0) turns [N,4] into [1,4N]: the rewrite cannot see it, the ORT comparison does.
    nodes = [helper.make_node("Flatten", ["x"], ["y"], name="flat", axis=0)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], {})
    with pytest.raises(BackendError, match="batch"):
        check_batch_dynamic(model, make_batch_dynamic(model))


# -- sidecar --------------------------------------------------------------------------------------


def _sidecar(engine: Path) -> EngineSidecar:
    return EngineSidecar(
        engine_sha256=sha256_file(engine), engine_bytes=engine.stat().st_size,
        inputs=(TensorSpec("images", (-1, 3, 640, 640), "float32"),),
        outputs=(TensorSpec("output0", (-1, 84, 8400), "float32"),),
        batch_sizes=(1, 8), precision="int8", build={"settings": {"workspace_mb": 4096}},
        tensorrt_version="10.9.0", device="NVIDIA H100 (sm 9.0)",
        model={"imgsz": [640, 640], "names": {"0": "person"}}, int8_report={"ok": True},
    )


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not a real engine, only bytes to hash")
    written = write_sidecar(engine, _sidecar(engine))
    assert written == sidecar_path(engine) == tmp_path / "model.engine.json"
    assert read_sidecar(engine) == _sidecar(engine)
    assert read_sidecar(engine).imgsz == (640, 640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.engine", "model.engine.json"]  # no temp files
    assert is_engine(engine) and is_engine(tmp_path / "other.engine") and not is_engine(tmp_path / "m.onnx")


def test_sidecar_detects_a_different_engine(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine A")
    write_sidecar(engine, _sidecar(engine))
    engine.write_bytes(b"engine B")
    with pytest.raises(BackendError, match="different engine"):
        read_sidecar(engine)


def test_sidecar_errors(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(BackendError, match="missing"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BackendError, match="not a yolograph TensorRT sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "yolograph.tensorrt-engine", "version": 1}))
    with pytest.raises(BackendError, match="malformed"):
        read_sidecar(engine)


# -- engine inspector -----------------------------------------------------------------------------


def _qdq_chain_model():
    """x -Q/DQ-> conv_a -Q/DQ-> conv_b -> conv_c (float weights: kept in float)."""
    rng = np.random.default_rng(0)
    inits = {"s": np.float32(0.05), "zp": np.int8(0),
             "ws": np.full(4, 0.01, np.float32), "wzp": np.zeros(4, np.int8),
             "wa": rng.integers(-127, 128, (4, 4, 1, 1)).astype(np.int8),
             "wb": rng.integers(-127, 128, (4, 4, 1, 1)).astype(np.int8),
             "wc": rng.normal(0, 0.1, (4, 4, 1, 1)).astype(np.float32)}
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_x"),
             n("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_x"),
             n("DequantizeLinear", ["wa", "ws", "wzp"], ["wad"], name="dq_wa", axis=0),
             n("Conv", ["xd", "wad"], ["a"], name="conv_a"),
             n("QuantizeLinear", ["a", "s", "zp"], ["aq"], name="q_a"),
             n("DequantizeLinear", ["aq", "s", "zp"], ["ad"], name="dq_b"),
             n("DequantizeLinear", ["wb", "ws", "wzp"], ["wbd"], name="dq_wb", axis=0),
             n("Conv", ["ad", "wbd"], ["b"], name="conv_b"),
             n("Conv", ["b", "wc"], ["y"], name="conv_c")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)


def _layer(name, layer_type, origins, inputs, outputs, weights=None, sep="\x1e"):
    layer = {"Name": name, "LayerType": layer_type,
             "Inputs": [{"Name": f"{name}_in", "Location": "Device", "Dimensions": [1, 4, 8, 8],
                         "Format/Datatype": fmt} for fmt in inputs],
             "Outputs": [{"Name": f"{name}_out", "Location": "Device", "Dimensions": [1, 4, 8, 8],
                          "Format/Datatype": fmt} for fmt in outputs],
             "Metadata": sep.join(f"[ONNX Layer: {o}]" for o in origins),
             "TacticName": "sample_tactic", "StreamId": 0}
    if weights:
        layer.update(ParameterType="Convolution", Weights={"Type": weights, "Count": 16}, Bias={"Type": "Float", "Count": 0})
    return layer


INT8_FMT = "Thirty-two wide channel vectorized row major Int8 format"
HALF_FMT = "Row major linear FP16 format"
FLOAT_FMT = "Row major linear FP32"


def _sample_engine_information(conv_b_int8: bool) -> str:
    """A HAND-WRITTEN SAMPLE of IEngineInspector.get_engine_information(LayerInformationFormat.JSON)
    at ProfilingVerbosity.DETAILED, modeled on the format TensorRT documents (keys Layers, Name,
    LayerType, Inputs/Outputs with Format/Datatype, Weights, TacticName, Metadata with
    "[ONNX Layer: ...]" entries, Bindings). Not produced by TensorRT: no GPU ran these tests."""
    layers = [
        _layer("q_x", "Scale", ["q_x"], [FLOAT_FMT], [INT8_FMT]),  # float graph input quantized: expected
        _layer("wb + dq_wb", "Constant", ["dq_wb"], [], [INT8_FMT]),  # folded weights: not a run-time DQ
        _layer("dq_x + dq_wa + conv_a + q_a", "CaskConvolution", ["dq_x", "dq_wa", "conv_a", "q_a"],
               [INT8_FMT], [INT8_FMT], weights="Int8"),
    ]
    if conv_b_int8:
        layers.append(_layer("dq_b + dq_wb + conv_b", "CaskConvolution", ["dq_b", "dq_wb", "conv_b"],
                             [INT8_FMT], [HALF_FMT], weights="Int8", sep="\x1f"))
    else:  # the DQ did not fuse: a lone dequantize layer, then conv_b in FP16
        layers += [_layer("dq_b", "Scale", ["dq_b"], [INT8_FMT], [HALF_FMT]),
                   _layer("conv_b", "CaskConvolution", ["conv_b"], [HALF_FMT], [HALF_FMT], weights="Half")]
    layers.append(_layer("conv_c", "CaskConvolution", ["conv_c"], [HALF_FMT], [FLOAT_FMT], weights="Half"))
    return json.dumps({"Layers": layers, "Bindings": ["x", "y"]})


def test_inspector_parsing():
    layers = parse_engine_information(_sample_engine_information(conv_b_int8=True))
    conv_a = layers[2]
    assert conv_a.onnx_nodes == ("dq_x", "dq_wa", "conv_a", "q_a")
    assert conv_a.compute_type == "int8" and conv_a.weights_type == "int8" and conv_a.is_convolution
    assert layers[3].onnx_nodes == ("dq_b", "dq_wb", "conv_b")  # \x1f separator too
    assert [layer.compute_type for layer in layers] == ["fp32", "unknown", "int8", "int8", "fp16"]


def test_int8_report_all_fused():
    report = int8_report(_qdq_chain_model(), parse_engine_information(_sample_engine_information(True)))
    assert report.expected_int8 == ["conv_a", "conv_b"] and report.ran_int8 == ["conv_a", "conv_b"]
    assert report.float_convs == ["conv_c"]
    assert report.unfused_dequantize == [] and report.unfused_quantize == [] and report.ok
    assert "2 of 2" in report.summary()


def test_int8_report_finds_an_unfused_pair():
    report = int8_report(_qdq_chain_model(), parse_engine_information(_sample_engine_information(False)))
    assert report.ran_int8 == ["conv_a"]
    assert report.not_int8 == [{"node": "conv_b", "layer": "conv_b", "layer_type": "CaskConvolution",
                                "compute_type": "fp16"}]
    assert report.unfused_dequantize == [{"layer": "dq_b", "onnx_nodes": ["dq_b"]}]
    assert not report.ok and "NOT INT8: conv_b" in report.summary()
    assert json.loads(json.dumps(report.to_json()))["ok"] is False


def test_int8_report_conv_missing_from_engine():
    layers = parse_engine_information(_sample_engine_information(True))
    report = int8_report(_qdq_chain_model(), [layer for layer in layers if "conv_b" not in layer.onnx_nodes])
    assert report.not_found == ["conv_b"] and not report.ok


def test_names_without_metadata_and_type_spellings():
    assert onnx_origins("a + PWN(b, c) + d", None) == ("a", "b", "c", "d")
    assert onnx_origins("x", "[ONNX Layer: p][ONNX Layer: q]") == ("p", "q")
    assert [normalize_type(t) for t in ("Int8", "Half", "Float", "BFloat16", "Row major linear FP32 format (kLINEAR)",
                                         "N/A due to dynamic shapes")] == ["int8", "fp16", "fp32", "bf16", "fp32",
                                                                           "unknown"]
    # TensorRT 11 splits Format/Datatype into Format and DataType.
    layers = parse_engine_information({"Layers": [{"Name": "c", "LayerType": "CaskConvolution",
                                                   "Inputs": [{"Format": "kCHW32", "DataType": "Int8"}]}]})
    assert layers[0].compute_type == "int8"


def test_names_only_inspector_output_is_refused():
    with pytest.raises(BackendError, match="DETAILED"):
        parse_engine_information(json.dumps({"Layers": ["conv_a + relu", "conv_b"], "Bindings": []}))


# -- without a GPU ------------------------------------------------------------------------------


@pytest.mark.skipif(GPU_OK, reason="this machine has a GPU and TensorRT")
def test_no_gpu_is_one_clear_line(yolov8n, tmp_path):
    assert GPU_REASON and "\n" not in GPU_REASON
    with pytest.raises(BackendError) as caught:
        compile_model(yolov8n, tmp_path / "m.engine", precision="fp16")
    assert str(caught.value) == NO_GPU_MESSAGE
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_refusals_come_before_the_gpu_check(yolov8n, tmp_path):
    with pytest.raises(BackendError, match="INT8 needs a Q/DQ graph"):
        compile_model(yolov8n, tmp_path / "m.engine", precision="int8")
    with pytest.raises(BackendError, match="Name the TensorRT engine with .engine"):
        compile_model(yolov8n, tmp_path / "m.onnx")


def test_int8_build_refuses_a_graph_that_is_not_ready(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["y"], name="dq")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                       {"s": np.float32(0.1), "zp": np.uint8(128)})
    with pytest.raises(BackendError, match=r"not TensorRT-ready \(2 error\(s\); first: error +q: "):
        compile_model(model, tmp_path / "m.engine", precision="int8")


# -- on a GPU (skipped with the reason when there is none) -------------------------------------------

gpu = pytest.mark.skipif(not GPU_OK, reason=f"needs an NVIDIA GPU with TensorRT 10 or 11: {GPU_REASON}")


@pytest.mark.gpu
@gpu
def test_gpu_fp32_engine_matches_onnx_runtime(yolov8n, tmp_path):
    from yolograph.runtime import OrtOptions, OrtRunner

    engine = compile_model(yolov8n, tmp_path / "m.engine", precision="fp32", batch_sizes=(1, 2),
                           timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").stat().st_size > 0 and read_sidecar(engine).batch_sizes == (1, 2)
    runner = load_runner(engine)
    images = np.random.default_rng(0).random((2, 3, 640, 640), dtype=np.float32)
    reference = np.concatenate([OrtRunner(yolov8n, OrtOptions(threads=2)).predict(images[i:i + 1]) for i in range(2)])
    got = runner.predict(images)
    assert np.max(np.abs(got - reference)) <= 1e-3 * np.max(np.abs(reference))
    assert runner.benchmark(runs=20, warmup=5, batch=2).median_ms > 0


@pytest.mark.gpu
@gpu
def test_gpu_int8_engine_runs_every_quantized_conv_in_int8(yolov8n, coco_dir, tmp_path):
    from yolograph.pipeline import run_pipeline

    quantized, _ = run_pipeline(yolov8n, f"insert-qdq{{profile=trt}},calibrate{{images={coco_dir},count=4}}",
                                verify=False)
    engine = compile_model(quantized, tmp_path / "q.engine", precision="int8", timing_cache=tmp_path / "t.cache")
    report = read_sidecar(engine).int8_report
    assert report["ok"], report
    assert len(report["ran_int8"]) == len(report["expected_int8"]) >= 60
    runner = load_runner(engine)
    assert runner.predict(np.zeros((1, 3, 640, 640), np.float32)).shape == (1, 84, 8400)


@pytest.mark.gpu
@gpu
def test_gpu_strongly_typed_fp16_and_best_engines(yolov8n, coco_dir, tmp_path):
    """The precision written in the graph: to-fp16, and Q/DQ + to-fp16, built strongly typed."""
    from yolograph.pipeline import run_pipeline
    from yolograph.runtime import OrtOptions, OrtRunner

    images = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    fp16 = compile_model(yolov8n, tmp_path / "h.engine", precision="fp16", typing="strong",
                         timing_cache=tmp_path / "t.cache")
    sidecar = read_sidecar(fp16)
    assert sidecar.build["added_passes"] == "to-fp16" and sidecar.precision_mode.startswith("strongly typed")
    reference = OrtRunner(yolov8n, OrtOptions(threads=2)).predict(images)
    got = load_runner(fp16).predict(images)
    boxes = reference[:, :4]
    assert 10 * np.log10(np.sum(boxes ** 2) / np.sum((got[:, :4] - boxes) ** 2)) >= 40
    quantized, _ = run_pipeline(yolov8n, f"insert-qdq{{profile=trt}},calibrate{{images={coco_dir},count=4}}")
    best = compile_model(quantized, tmp_path / "b.engine", precision="best", typing="strong",
                         timing_cache=tmp_path / "t.cache")
    report = read_sidecar(best).int8_report
    assert report["ok"] and len(report["ran_int8"]) >= 60, report
