"""TensorRT readiness check (CPU only): real Q/DQ graphs from ONNX Runtime's quantizer and small
hand-built graphs that each break one TensorRT explicit-quantization rule."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper

from yolograph.backends.tensorrt import Finding, check_readiness, format_findings
from yolograph.frontends import load_model
from yolograph.ir.model import Model

from graphs import make_model

ort_quant = pytest.importorskip("onnxruntime.quantization")


# -- real graphs: yolov8n quantized by onnxruntime.quantization.quantize_static -------------------


class _ImageReader(ort_quant.CalibrationDataReader):
    """Two real coco128 images (the first two of the calibration range 0-31), letterboxed."""

    def __init__(self, coco_dir):
        from yolograph.evaluation import iter_image_tensors

        paths = sorted((coco_dir / "images" / "train2017").glob("*.jpg"))[:2]
        self._feeds = iter([{"images": t} for t in iter_image_tensors(paths, 640)])

    def get_next(self):
        return next(self._feeds, None)


def _quantize(tmp_path_factory, yolov8n_path, coco_dir, name: str, **kwargs) -> Model:
    out = tmp_path_factory.mktemp("ortq") / f"{name}.onnx"
    ort_quant.quantize_static(str(yolov8n_path), str(out), _ImageReader(coco_dir),
                              quant_format=ort_quant.QuantFormat.QDQ, **kwargs)
    return load_model(out)


def _codes(findings: list[Finding]) -> Counter:
    return Counter((f.severity, f.code) for f in findings)


@pytest.fixture(scope="module")
def ort_default(tmp_path_factory, yolov8n_path, coco_dir) -> Model:
    """quantize_static defaults: asymmetric int8 activations, per-tensor weights, int32 biases."""
    return _quantize(tmp_path_factory, yolov8n_path, coco_dir, "default")


@pytest.fixture(scope="module")
def ort_u8(tmp_path_factory, yolov8n_path, coco_dir) -> Model:
    return _quantize(tmp_path_factory, yolov8n_path, coco_dir, "u8", activation_type=ort_quant.QuantType.QUInt8)


@pytest.fixture(scope="module")
def ort_symmetric(tmp_path_factory, yolov8n_path, coco_dir) -> Model:
    return _quantize(tmp_path_factory, yolov8n_path, coco_dir, "s8", activation_type=ort_quant.QuantType.QInt8,
                     weight_type=ort_quant.QuantType.QInt8, per_channel=True,
                     extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def test_float_yolov8n_is_ready(yolov8n):
    assert check_readiness(yolov8n) == []
    assert "no findings" in format_findings([])


def test_ort_default_quantization_is_asymmetric(ort_default):
    findings = check_readiness(ort_default)
    codes = _codes(findings)
    quantizers = [n for n in ort_default.graph.nodes if n.op == "QuantizeLinear"]
    # Every activation quantizer with a non-zero zero point is reported, by name.
    nonzero = {n.name for n in quantizers if np.any(n.inputs[2].values != 0)}
    assert nonzero and nonzero <= {f.node for f in findings if f.code == "zero-point"}
    # Biases are dequantized from int32, which TensorRT cannot parse: one error per biased Conv.
    biased = [n for n in ort_default.nodes_by_op("Conv") if len(n.inputs) > 2]
    assert codes[("error", "int32-dequantize")] == len(biased)
    assert all(f.severity == "error" for f in findings if f.code in ("zero-point", "int32-dequantize"))


def test_ort_uint8_activations_are_unsigned_and_asymmetric(ort_u8):
    codes = _codes(check_readiness(ort_u8))
    activation_qs = len(ort_u8.nodes_by_op("QuantizeLinear"))
    assert codes[("error", "unsigned")] == activation_qs
    assert codes[("error", "zero-point")] > 0


def test_ort_symmetric_per_channel_has_fewer_findings(ort_symmetric, ort_default):
    symmetric = check_readiness(ort_symmetric)
    codes = _codes(symmetric)
    assert not any(code in ("zero-point", "unsigned", "per-channel-axis") for _, code in codes)
    # Left: int32 biases (ORT quantizes them unless QuantizeBias=False) and per-input Concat scales.
    assert set(code for _, code in codes) <= {"int32-dequantize", "concat-scales"}
    assert len(symmetric) < len(check_readiness(ort_default))


def test_our_trt_profile_pipeline_is_ready(yolov8n, coco_dir):
    """The pipeline the TensorRT backend is fed: insert-qdq{profile=trt} + calibrate on 4 coco128 images."""
    from yolograph.ir.graph_view import producer
    from yolograph.pipeline import run_pipeline

    quantized, _ = run_pipeline(yolov8n, f"insert-qdq{{profile=trt}},calibrate{{images={coco_dir},count=4}}",
                                verify=False)
    findings = check_readiness(quantized)
    assert findings == [], format_findings(findings)
    # Not vacuous: nearly every Conv has a quantized input and weight, and Concats take quantized inputs.
    convs = quantized.nodes_by_op("Conv")
    int8_convs = [c for c in convs if all(producer(t) is not None and producer(t).op == "DequantizeLinear"
                                          for t in c.inputs[:2])]
    assert len(int8_convs) >= len(convs) - 2
    assert any(all(producer(t).op == "DequantizeLinear" for t in c.inputs) for c in quantized.nodes_by_op("Concat"))


def test_format_findings_counts_and_caps(ort_default):
    findings = check_readiness(ort_default)
    text = format_findings(findings, per_rule=3)
    errors = sum(f.severity == "error" for f in findings)
    assert text.splitlines()[0].startswith(f"TensorRT readiness: {errors} error(s)")
    assert "more 'zero-point' finding(s)" in text
    assert len(text.splitlines()) < 20


# -- hand-built graphs: one broken rule each ------------------------------------------------------

_RNG = np.random.default_rng(0)


def _init(name: str, value) -> tuple[str, np.ndarray]:
    return name, np.asarray(value)


def _qdq_conv_model(*, w_axis: int | None = 0, w_scale_count: int = 4, act_zp: int = 0, dq_scale: float = 0.05,
                    act_dtype=np.int8, quantize_weight: bool = True, quantize_input: bool = True,
                    between: str | None = None, opset: int = 17) -> Model:
    """x -> Q -> DQ [-> between] -> Conv(W: int8 -> DQ per-channel) -> y."""
    weight = _RNG.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    inits = dict([
        _init("x_scale", np.float32(0.05)), _init("x_zp", act_dtype(act_zp)),
        _init("dq_scale", np.float32(dq_scale)),
        _init("w_q", weight), _init("w_float", weight.astype(np.float32) * 0.01),
        _init("w_scale", np.full(w_scale_count, 0.01, np.float32) if w_scale_count > 1 else np.float32(0.01)),
        _init("w_zp", np.zeros(w_scale_count, np.int8) if w_scale_count > 1 else np.int8(0)),
        _init("shape", np.array([1, 3, 8, 8], np.int64)),
    ])
    nodes = []
    data = "x"
    if quantize_input:
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x"),
                  helper.make_node("DequantizeLinear", ["xq", "dq_scale", "x_zp"], ["xd"], name="dq_x")]
        data = "xd"
    if between:
        nodes.append(helper.make_node(between, [data, "shape"], ["xb"], name="between"))
        data = "xb"
    if quantize_weight:
        attrs = {} if w_axis is None else {"axis": w_axis}
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", **attrs))
        weight_name = "w"
    else:
        weight_name = "w_float"
    nodes.append(helper.make_node("Conv", [data, weight_name], ["y"], name="conv", pads=[1, 1, 1, 1]))
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits, opset=opset)


def _only(model: Model) -> set[tuple[str, str, str]]:
    return {(f.severity, f.code, f.node) for f in check_readiness(model)}


def test_well_formed_qdq_conv_is_ready():
    assert check_readiness(_qdq_conv_model()) == []


def test_per_channel_weight_axis_must_be_output_channels():
    # ONNX's default axis is 1, the input channels of a Conv weight: a classic export mistake.
    assert ("error", "per-channel-axis", "dq_w") in _only(_qdq_conv_model(w_axis=None))
    assert ("error", "per-channel-axis", "dq_w") in _only(_qdq_conv_model(w_axis=1))


def test_per_tensor_weight_scale_is_accepted():
    assert check_readiness(_qdq_conv_model(w_scale_count=1)) == []


def test_asymmetric_and_unsigned_activation():
    assert _only(_qdq_conv_model(act_zp=3)) >= {("error", "zero-point", "q_x")}
    assert ("error", "unsigned", "q_x") in _only(_qdq_conv_model(act_dtype=np.uint8))


def test_pair_with_different_scales():
    assert ("error", "pair-mismatch", "dq_x") in _only(_qdq_conv_model(dq_scale=0.07))


def test_half_quantized_conv():
    assert ("warning", "half-quantized", "conv") in _only(_qdq_conv_model(quantize_weight=False))
    assert ("warning", "half-quantized", "conv") in _only(_qdq_conv_model(quantize_input=False))


def test_dequantize_not_adjacent_to_conv():
    found = check_readiness(_qdq_conv_model(between="Reshape"))
    assert [(f.code, f.node) for f in found] == [("not-adjacent", "conv")]
    assert "Reshape" in found[0].message


def test_uncalibrated_placeholder_scales():
    model = _qdq_conv_model()
    model.metadata["yolograph.qdq_uncalibrated"] = "1"  # what insert-qdq sets until calibrate runs
    assert _only(model) == {("error", "uncalibrated", "(model)")}


def test_opset_below_13():
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], {}, opset=12)
    assert _only(model) == {("error", "opset", "(model)")}


def _single_op_model(node, inits=None, out_shape=(2, 2)) -> Model:
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits or {})


def test_unsupported_op():
    model = _single_op_model(helper.make_node("Det", ["x"], ["y"], name="det"), out_shape=())
    assert _only(model) == {("error", "unsupported-op", "det")}


def test_resize_cubic_is_unsupported():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="cubic")
    model = _single_op_model(node, {"scales": np.array([1.0, 2.0], np.float32)}, out_shape=(2, 4))
    assert _only(model) == {("error", "resize-mode", "resize")}


def test_q_feeding_a_non_dequantize_op():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
             helper.make_node("Cast", ["xq"], ["y"], name="cast", to=TensorProto.FLOAT)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
                       {"s": np.float32(0.1), "zp": np.int8(0)})
    assert _only(model) == {("error", "q-without-dq", "q")}


def test_per_channel_activation_and_bad_scale():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q", axis=1),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["y"], name="dq", axis=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
                       {"s": np.array([0.1, -0.2], np.float32), "zp": np.zeros(2, np.int8)})
    assert _only(model) == {("error", "per-channel-activation", "q"), ("error", "bad-scale", "q")}


def _concat_model(scales: tuple[float, ...], quantized: tuple[bool, ...]) -> Model:
    nodes, inits, inputs, concat_inputs = [], {"zp": np.int8(0)}, [], []
    for i, (scale, is_q) in enumerate(zip(scales, quantized)):
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1, 2, 4, 4]))
        if is_q:
            inits[f"s{i}"] = np.float32(scale)
            nodes += [helper.make_node("QuantizeLinear", [f"x{i}", f"s{i}", "zp"], [f"q{i}"], name=f"q{i}"),
                      helper.make_node("DequantizeLinear", [f"q{i}", f"s{i}", "zp"], [f"d{i}"], name=f"dq{i}")]
            concat_inputs.append(f"d{i}")
        else:
            concat_inputs.append(f"x{i}")
    nodes.append(helper.make_node("Concat", concat_inputs, ["y"], name="concat", axis=1))
    return make_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2 * len(scales), 4, 4])],
                      inits)


def test_concat_scales_must_match():
    assert check_readiness(_concat_model((0.1, 0.1), (True, True))) == []
    assert _only(_concat_model((0.1, 0.2), (True, True))) == {("warning", "concat-scales", "concat")}
    assert _only(_concat_model((0.1, 0.1), (True, False))) == {("warning", "concat-mixed", "concat")}


def test_findings_are_plain_records_for_json():
    finding = check_readiness(_qdq_conv_model(w_axis=1))[0]
    assert vars(finding) == {"severity": "error", "node": "dq_w", "message": finding.message,
                             "code": "per-channel-axis"}
    assert finding.message.endswith(".") and "axis=0" in finding.message


# -- strongly typed builds (trt11, and any float16 graph): one broken type rule each ---------------


def _typed_model(nodes, inputs, outputs, inits=None, opset: int = 19) -> Model:
    """Built with graphsurgeon-free onnx helpers but without the checker: some graphs are type-broken."""
    from onnx import numpy_helper

    graph = helper.make_graph(nodes, "typed", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 9
    return Model.from_onnx(proto)


def _strong(model: Model, target: str = "trt11") -> set[tuple[str, str]]:
    return {(f.code, f.node) for f in check_readiness(model, target) if f.severity == "error"}


def test_float16_meeting_float32_without_a_cast_is_named():
    model = _typed_model(
        [helper.make_node("Cast", ["x"], ["h"], name="to_half", to=TensorProto.FLOAT16),
         helper.make_node("Add", ["x", "h"], ["y"], name="mixed_add")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    assert ("missing-cast", "mixed_add") in _strong(model)
    assert ("missing-cast", "mixed_add") in _strong(model, "trt")  # float16 in the graph: strongly typed
    message = next(f.message for f in check_readiness(model, "trt11") if f.code == "missing-cast")
    assert "insert a Cast" in message


def test_a_cast_where_they_meet_is_ready():
    model = _typed_model(
        [helper.make_node("Cast", ["x"], ["h"], name="to_half", to=TensorProto.FLOAT16),
         helper.make_node("Cast", ["h"], ["f"], name="to_float", to=TensorProto.FLOAT),
         helper.make_node("Add", ["x", "f"], ["y"], name="add")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    assert check_readiness(model, "trt11") == []


def test_declared_type_contradicting_the_op_is_a_mismatch():
    model = _typed_model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])])  # Relu of float32 is float32
    assert _strong(model) == {("type-mismatch", "relu")}


def test_unknown_tensor_type_and_float64():
    unknown = _typed_model(
        [helper.make_node("Mystery", ["x"], ["m"], name="mystery", domain="example.custom"),
         helper.make_node("Relu", ["m"], ["y"], name="after")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    unknown.graph.outputs[0].dtype = None
    assert ("type-unknown", "mystery") in _strong(unknown)
    double = _typed_model(
        [helper.make_node("Cast", ["x"], ["d"], name="to_double", to=TensorProto.DOUBLE),
         helper.make_node("Cast", ["d"], ["y"], name="back", to=TensorProto.FLOAT)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    assert ("float64", "to_double") in _strong(double)


def test_plugin_removed_in_tensorrt_11():
    import onnx_graphsurgeon as gs

    x = gs.Variable("x", np.float32, (1, 4))
    y = gs.Variable("y", np.float32, (1, 4))
    graph = gs.Graph(nodes=[gs.Node("Normalize_TRT", "normalize", inputs=[x], outputs=[y])], inputs=[x],
                     outputs=[y], opset=17)
    model = Model(graph)
    assert ("removed-in-11", "normalize") in _strong(model, "trt11")
    assert ("removed-in-11", "normalize") not in _strong(model, "trt")


def test_qdq_rules_hold_for_trt11_too():
    assert ("error", "zero-point", "q_x") in {(f.severity, f.code, f.node)
                                             for f in check_readiness(_qdq_conv_model(act_zp=3), "trt11")}
    assert ("error", "per-channel-axis", "dq_w") in {(f.severity, f.code, f.node)
                                                    for f in check_readiness(_qdq_conv_model(w_axis=1), "trt11")}
    assert check_readiness(_qdq_conv_model(), "trt11") == []


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="trt11"):
        check_readiness(_qdq_conv_model(), "trt12")


def test_our_int8_fp16_and_best_graphs_are_ready_for_both_majors(yolov8n, coco_dir):
    """trt-profile INT8 (calibrated on 4 images), to-fp16, and INT8 + to-fp16 of the trained yolov8n."""
    from yolograph.pipeline import run_pipeline
    from yolograph.precision.types import check_type_consistency

    int8, _ = run_pipeline(yolov8n, f"cleanup,insert-qdq{{profile=trt}},calibrate{{images={coco_dir},count=4}}")
    fp16, _ = run_pipeline(yolov8n, "to-fp16")
    best, _ = run_pipeline(int8, "to-fp16")
    for name, model in (("int8", int8), ("fp16", fp16), ("int8+fp16", best)):
        for target in ("trt", "trt11"):
            findings = check_readiness(model, target)
            assert findings == [], f"{name} {target}: {format_findings(findings)}"
    check_type_consistency(best)
    scales = [n.inputs[1].values.dtype for n in best.graph.nodes if n.op == "QuantizeLinear"]
    assert scales and set(scales) == {np.dtype(np.float16)}  # INT8 convs between float16 tensors


def test_inspect_target_trt11_names_the_node(tmp_path, capsys):
    from yolograph.cli import main
    from yolograph.ir.serialization import save_model

    model = _typed_model(
        [helper.make_node("Cast", ["x"], ["h"], name="to_half", to=TensorProto.FLOAT16),
         helper.make_node("Add", ["x", "h"], ["y"], name="mixed_add")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "mixed.onnx"
    save_model(model, path)
    assert main(["inspect", str(path), "--target", "trt11"]) == 0
    out = capsys.readouterr().out
    assert "TensorRT readiness: 1 error(s)" in out and "mixed_add" in out and "insert a Cast" in out
