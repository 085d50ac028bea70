"""to-fp16: float16 conversion with float32 islands, Cast placement, Q/DQ composition, measured SQNR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from yolograph.errors import PassError
from yolograph.frontends import load_model
from yolograph.ir.model import Model
from yolograph.pipeline import run_pipeline
from yolograph.precision.convert import convert_to_float16
from yolograph.precision.islands import IslandRules, box_decode_nodes, dfl_softmax_nodes, float32_islands
from yolograph.precision.types import FLOAT16, check_type_consistency, tensor_dtypes
from yolograph.runtime import OrtRunner

from graphs import make_model


def _conv_resize_model(scale: float = 1.0) -> Model:
    """x -> Conv -> Sigmoid*x (SiLU) -> Resize(scales) -> Concat(with Mul by a constant) -> y."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
             "b": rng.normal(0, 0.1, 4).astype(np.float32),
             "scales": np.array([1, 1, 2, 2], np.float32),
             "k": np.full((1, 4, 1, 1), scale, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
        helper.make_node("Mul", ["c", "s"], ["a"], name="silu"),
        helper.make_node("Resize", ["a", "", "scales"], ["r"], name="up", mode="nearest"),
        helper.make_node("Mul", ["r", "k"], ["m"], name="scale"),
        helper.make_node("Concat", ["r", "m"], ["y"], name="cat", axis=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)


def _feed(seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).random((1, 3, 8, 8), dtype=np.float32)}


def _ops(model: Model) -> list[str]:
    return [n.op for n in model.graph.nodes]


def test_conversion_is_type_consistent_and_keeps_float32_io():
    model = _conv_resize_model()
    reference = OrtRunner(model).run(_feed())[0]
    converted = model.copy()
    result = convert_to_float16(converted)
    check_type_consistency(converted)  # onnx full_check + strict type inference
    dtypes = tensor_dtypes(converted)
    assert dtypes["x"] == np.float32 and dtypes["y"] == np.float32
    assert dtypes["scales"] == np.float32  # Resize's scales are float32 by the ONNX spec
    assert converted.node("conv").inputs[1].values.dtype == np.float16
    assert dtypes[converted.node("cat").outputs[0].name] == FLOAT16
    assert _ops(converted).count("Cast") == 2 == result.casts  # graph input in, graph output out
    new = OrtRunner(converted).run(_feed())[0]
    assert new.dtype == np.float32
    np.testing.assert_allclose(new, reference, rtol=0, atol=2e-3 * float(np.abs(reference).max()))
    assert not np.array_equal(new, reference)  # it really computed in float16


def test_kept_node_gets_casts_on_both_sides():
    model = _conv_resize_model()
    converted = model.copy()
    convert_to_float16(converted, keep={"sig"})
    check_type_consistency(converted)
    dtypes = tensor_dtypes(converted)
    sig = converted.node("sig")
    assert dtypes[sig.inputs[0].name] == np.float32 and dtypes[sig.outputs[0].name] == np.float32
    assert sig.inputs[0].inputs[0].op == "Cast"  # float16 conv output -> float32 sigmoid
    silu = converted.node("silu")
    assert {dtypes[t.name] for t in silu.inputs} == {FLOAT16}  # the float32 sigmoid is cast back
    assert _ops(converted).count("Cast") == 4


def test_constant_beyond_float16_range_keeps_its_node_float32():
    model = _conv_resize_model(scale=1e6)
    converted = model.copy()
    convert_to_float16(converted)
    check_type_consistency(converted)
    dtypes = tensor_dtypes(converted)
    assert dtypes[converted.node("scale").outputs[0].name] == np.float32
    assert converted.node("scale").inputs[1].values.dtype == np.float32  # not rounded to inf


def test_overflow_rule_keeps_measured_large_activations(tmp_path):
    model = _conv_resize_model(scale=3e4)  # fits float16 as a constant, but its products overflow
    out, report = run_pipeline(model, "to-fp16{overflow=16384,decode=false}", verify=True)
    stats = report.records[0].stats
    assert stats["float32_islands"].get("overflow", 0) >= 1
    assert tensor_dtypes(out)[out.node("scale").outputs[0].name] == np.float32
    assert report.records[0].verified == "ok"
    check_type_consistency(out)


def test_keep_option_names_nodes_and_op_types():
    model = _conv_resize_model()
    out, report = run_pipeline(model, "to-fp16{keep=Sigmoid|cat,decode=false}", verify=True)
    dtypes = tensor_dtypes(out)
    assert dtypes[out.node("sig").outputs[0].name] == np.float32
    assert out.node("cat").outputs[0].name == "y" and dtypes["y"] == np.float32
    assert report.records[0].stats["float32_islands"] == {"keep": 2}


def _qdq_conv_model() -> Model:
    """Opset 17: x -> Q/DQ -> Conv(DQ int8 per-channel weight) -> y, symmetric int8 as the trt profile writes."""
    rng = np.random.default_rng(1)
    weight = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    inits = {"xs": np.array(0.01, np.float32), "xz": np.array(0, np.int8), "wq": weight,
             "ws": rng.uniform(0.001, 0.01, 4).astype(np.float32), "wz": np.zeros(4, np.int8)}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="wdq", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)


def test_qdq_graph_gets_float16_scales_at_opset_19():
    model = _qdq_conv_model()
    reference = OrtRunner(model).run(_feed())[0]
    converted = model.copy()
    result = convert_to_float16(converted)
    assert (result.opset_from, result.opset_to) == (17, 19) and converted.opset == 19
    check_type_consistency(converted)
    dtypes = tensor_dtypes(converted)
    assert dtypes["xd"] == FLOAT16 and dtypes["wd"] == FLOAT16  # DQ outputs follow their float16 scales
    assert converted.node("q").inputs[1].values.dtype == np.float16
    assert converted.node("wdq").inputs[0].values.dtype == np.int8  # stored integers untouched
    new = OrtRunner(converted).run(_feed())[0]
    np.testing.assert_allclose(new, reference, rtol=0, atol=0.02 * float(np.abs(reference).max()))


def test_refuses_uncalibrated_qdq_and_float16_models(yolov8n):
    with pytest.raises(PassError, match="calibrate before to-fp16"):
        run_pipeline(yolov8n, "insert-qdq{profile=trt},to-fp16")
    half = _conv_resize_model()
    convert_to_float16(half)
    with pytest.raises(PassError, match="already has float16"):
        run_pipeline(half, "to-fp16")


def test_decode_rules_on_yolov8n(yolov8n):
    dfl = dfl_softmax_nodes(yolov8n)
    assert yolov8n.node(dfl[0]).op == "Softmax"
    assert yolov8n.facts.dfl_conv in dfl
    kept = float32_islands(yolov8n, IslandRules())
    assert "/model.22/Mul_2" in kept  # x stride: pixel coordinates
    assert "/model.22/Sigmoid" not in kept  # scores are in [0, 1]: float16 holds them
    assert not any(name in kept for name in yolov8n.facts.head_convs)


def test_box_decode_rule_finds_keypoints_and_no_dfl_heads(data_dir):
    variants = data_dir / "fixtures" / "variants"
    pose = load_model(variants / "yolov8n-pose-rand.onnx")
    assert "/model.22/Add_3" in box_decode_nodes(pose)  # keypoints + anchor grid
    yolo26 = load_model(variants / "yolo26n-rand.onnx")
    assert yolo26.facts.dfl_conv is None and not dfl_softmax_nodes(yolo26)
    assert "/model.23/Mul_2" in box_decode_nodes(yolo26)


def test_yolov8n_verifies_with_groups_above_40_db(yolov8n):
    out, report = run_pipeline(yolov8n, "to-fp16", verify=True)
    record = report.records[0]
    assert record.verified == "ok"
    assert min(record.stats["group_sqnr_db"]) >= 40.0
    assert record.stats["float32_islands"]["dfl-softmax"] > 0
    check_type_consistency(out)
    assert [t.dtype for t in out.inputs] == [np.float32] and [t.dtype for t in out.outputs] == [np.float32]
    assert out.metadata["yolograph.precision"] == "fp16"
    proto = out.to_onnx()
    halves = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > 60  # the conv weights


def test_classify_fixture_verifies(data_dir):
    model = load_model(data_dir / "fixtures" / "variants" / "yolov8n-cls-rand.onnx")
    out, report = run_pipeline(model, "to-fp16", verify=True)
    assert report.records[0].verified == "ok"
    check_type_consistency(out)


def test_float16_io_option():
    model = _conv_resize_model()
    out, report = run_pipeline(model, "to-fp16{io=float16,decode=false}", verify=True)
    assert report.records[0].verified == "ok"
    assert out.inputs[0].dtype == np.float16 and tensor_dtypes(out)["y"] == np.float16
    assert "Cast" not in _ops(out)  # nothing to cast: the whole graph is float16
    check_type_consistency(out)
