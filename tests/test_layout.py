"""to-nhwc: permutation algebra, equivalence (FP32, INT8, uint8 input), transpose placement, TVM absorb."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphs import make_model
from yolograph.errors import PassError
from yolograph.layout.census import transpose_census
from yolograph.layout.perm import (
    NCHW_TO_NHWC,
    after_transpose,
    conversion,
    moves_only_unit_axes,
    permute_constant,
    reshape_layout,
    stored_axis,
)
from yolograph.pipeline import run_pipeline
from yolograph.pipeline.passes import get_pass

# -- permutation algebra ----------------------------------------------------------------------------


def test_conversion_and_transpose_absorption_agree_with_numpy():
    rng = np.random.default_rng(0)
    logical = rng.random((2, 3, 4, 5))
    nhwc = np.transpose(logical, NCHW_TO_NHWC)
    back = np.transpose(nhwc, conversion(NCHW_TO_NHWC, (0, 1, 2, 3)))
    np.testing.assert_array_equal(back, logical)
    # A logical Transpose of an NHWC-stored tensor is the same bytes in another layout.
    perm = (0, 2, 1, 3)
    layout = after_transpose(NCHW_TO_NHWC, perm)
    np.testing.assert_array_equal(np.transpose(np.transpose(logical, perm), layout), nhwc)
    assert stored_axis(NCHW_TO_NHWC, 1) == 3 and stored_axis(NCHW_TO_NHWC, -1) == 2


def test_reshape_layout_for_the_yolo_head():
    # Detect head: [1,144,80,80] NHWC-stored -> Reshape [1,144,6400] is [1,6400,144] stored.
    assert reshape_layout((1, 144, 80, 80), (1, 144, 6400), NCHW_TO_NHWC) == (0, 2, 1)
    # DFL: [1,64,8400] stored (0,2,1) -> [1,4,16,8400] stored [1,8400,4,16].
    layout = reshape_layout((1, 64, 8400), (1, 4, 16, 8400), (0, 2, 1))
    assert layout == (0, 3, 1, 2)
    x = np.arange(64 * 6).reshape(1, 64, 6)
    stored = np.transpose(x, (0, 2, 1)).reshape(1, 6, 4, 16)
    np.testing.assert_array_equal(stored, np.transpose(x.reshape(1, 4, 16, 6), layout))
    # A merge across the stored order cannot be expressed.
    assert reshape_layout((1, 8, 4, 4), (1, 32, 4), NCHW_TO_NHWC) is None
    # Length-1 axes go anywhere: [1,1,4,8400] NHWC -> [1,4,8400] plain.
    assert reshape_layout((1, 1, 4, 8400), (1, 4, 8400), NCHW_TO_NHWC) == (0, 1, 2)


def test_unit_axis_moves_and_constants():
    assert moves_only_unit_axes((0, 2, 3, 1), (1, 1, 4, 8))
    assert not moves_only_unit_axes((0, 2, 3, 1), (1, 3, 4, 8))
    bias = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    assert permute_constant(bias, NCHW_TO_NHWC).shape == (1, 1, 1, 6)
    assert permute_constant(np.arange(6).reshape(6, 1, 1), NCHW_TO_NHWC).shape == (1, 1, 1, 6)


# -- a small graph exercising every handler -------------------------------------------------------


def _handler_graph():
    rng = np.random.default_rng(1)
    weights = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "bias": rng.normal(0, 1, (1, 8, 1, 1)).astype(np.float32),
        "starts": np.array([0], np.int64), "ends": np.array([6], np.int64), "axes": np.array([1], np.int64),
        "scales": np.array([1, 1, 2, 2], np.float32), "split": np.array([2, 4], np.int64),
        "shape": np.array([1, 6, -1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "bias"], ["a1"]),
        helper.make_node("Sigmoid", ["a1"], ["s1"]),
        helper.make_node("Mul", ["a1", "s1"], ["m1"]),
        helper.make_node("Slice", ["m1", "starts", "ends", "axes"], ["sl"]),
        helper.make_node("Softmax", ["sl"], ["sm"], axis=1),
        helper.make_node("Resize", ["sm", "", "scales"], ["rs"], mode="nearest"),
        helper.make_node("MaxPool", ["rs"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Split", ["mp", "split"], ["p0", "p1"], axis=1),
        helper.make_node("Concat", ["p1", "p0"], ["cat"], axis=1),
        helper.make_node("Identity", ["cat"], ["cat2"]),
        helper.make_node("Reshape", ["cat2", "shape"], ["out"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6, 256])]
    return make_model(nodes, inputs, outputs, weights)


def test_every_handler_is_numerically_equal_on_a_small_graph():
    model = _handler_graph()
    converted, report = run_pipeline(model, "to-nhwc", verify=True)
    stats = report.records[0].stats
    census = transpose_census(converted.graph)
    assert census.elsewhere == 0, census.elsewhere_names
    # Conv input comes straight from the NHWC input; MaxPool is wrapped; the output is restored once.
    assert census.around_nchw_ops <= 2 * census.nchw_ops
    assert stats["nhwc_ops"] >= 8
    assert stats["constants_permuted"] == 1  # the [1,8,1,1] bias becomes [1,1,1,8] instead of a transpose
    assert stats["absorbed"] == 0 and stats["transposes_after"] == census.total
    assert converted.inputs[0].shape == (1, 16, 16, 3)
    assert converted.outputs[0].shape == (1, 6, 256)
    ops = {n.op for n in converted.graph.nodes}
    assert {"Slice", "Softmax", "Resize", "Split", "Concat"} <= ops


def test_contrib_elementwise_op_keeps_shapes_and_layout():
    """com.microsoft QuickGelu (insert-qdq's fused SiLU for ORT) stops ONNX shape inference; not the pass."""
    from yolograph.ir.model import Model

    rng = np.random.default_rng(2)
    weights = [onnx.numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
               onnx.numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("QuickGelu", ["c1"], ["g1"], domain="com.microsoft", alpha=1.0),
        helper.make_node("Add", ["g1", "g1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["out"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "contrib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 8, 8])], weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    proto.ir_version = 8
    converted, report = run_pipeline(Model.from_onnx(proto), "to-nhwc", verify=True)
    assert report.records[0].stats["nhwc_ops"] == 2  # QuickGelu and Add run on NHWC tensors
    _assert_placement(transpose_census(converted.graph))


def test_per_channel_activation_qdq_axis_follows_the_layout():
    rng = np.random.default_rng(3)
    weights = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32),
        "scale": rng.uniform(0.01, 0.03, 8).astype(np.float32),
        "zero": np.zeros(8, np.int8),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["m1"]),
        helper.make_node("QuantizeLinear", ["m1", "scale", "zero"], ["q1"], axis=1),
        helper.make_node("DequantizeLinear", ["q1", "scale", "zero"], ["d1"], axis=1),
        helper.make_node("Add", ["d1", "d1"], ["sum"]),
        helper.make_node("Conv", ["d1", "w2"], ["conv"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    outputs = [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 8, 8, 8]),
               helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 4, 8, 8])]
    converted, _ = run_pipeline(make_model(nodes, inputs, outputs, weights), "to-nhwc", verify=True)
    axes = sorted(int(n.attrs["axis"]) for n in converted.graph.nodes if n.op == "DequantizeLinear")
    assert axes == [1, 3]  # an NHWC pair for the Add, an NCHW pair right before the Conv
    conv = [n for n in converted.graph.nodes if n.op == "Conv" and n.inputs[1].name == "w2"][0]
    assert conv.inputs[0].inputs[0].op == "DequantizeLinear"  # the transpose sits before the Q, not between DQ and Conv
    _assert_placement(transpose_census(converted.graph), io_allowed=2)


def test_errors_are_typed():
    model = _handler_graph()
    converted, _ = run_pipeline(model, "to-nhwc")
    with pytest.raises(PassError, match="already NHWC"):
        run_pipeline(converted, "to-nhwc")
    with pytest.raises(PassError, match="need io=true"):
        run_pipeline(model, "to-nhwc{io=false,input=uint8}")
    assert "nhwc" in get_pass("to-nhwc")().establishes
    assert not get_pass("to-nhwc")(get_pass("to-nhwc").Options(internal=False)).establishes


# -- the real yolov8n and the builder models ---------------------------------------------------------


def _image_feeds(coco_dir, count=1):
    from yolograph.evaluation.preprocess import letterbox, read_image

    paths = sorted((coco_dir / "images" / "train2017").glob("*.jpg"))[:count]
    return [letterbox(read_image(p), 640) for p in paths]


def _assert_placement(census, io_allowed=1):
    assert census.elsewhere == 0, census.elsewhere_names
    assert census.io <= io_allowed
    assert census.around_nchw_ops <= 2 * census.nchw_ops


def test_real_yolov8n_fp32_equivalent_and_transposes_only_around_conv(yolov8n, coco_dir):
    from yolograph.evaluation.preprocess import to_input_tensor

    (frame, _), = _image_feeds(coco_dir)
    image = to_input_tensor(frame)
    converted, report = run_pipeline(yolov8n, "to-nhwc", verify=True, verify_inputs=[{"images": image}])
    stats = report.records[0].stats
    assert report.records[0].verified == "ok"
    _assert_placement(transpose_census(converted.graph))
    assert stats["transposes_after"] < stats["inserted"] and stats["removed"] > 0
    assert converted.metadata["yolograph.layout"] == "NHWC"
    assert converted.metadata["yolograph.input_layout"] == "NHWC"
    assert converted.inputs[0].shape == (1, 640, 640, 3)
    assert converted.outputs[0].name == "output0" and converted.outputs[0].shape == (1, 84, 8400)
    # Every layout-agnostic activation op runs in NHWC: no SiLU Mul reads an NCHW tensor.
    for node in converted.nodes_by_op("Sigmoid"):
        producer = node.inputs[0].inputs[0]
        assert producer.op != "Conv", f"{node.name} reads a Conv output directly in NCHW"


def test_uint8_bgr_frame_equals_the_float_pipeline(yolov8n, coco_dir):
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.evaluation.preprocess import to_input_tensor

    (frame, _), = _image_feeds(coco_dir)
    converted, report = run_pipeline(yolov8n, "to-nhwc{input=uint8,channels=bgr}", verify=True)
    assert converted.inputs[0].dtype == np.uint8 and converted.inputs[0].shape == (1, 640, 640, 3)
    assert converted.metadata["yolograph.input_dtype"] == "uint8"
    assert converted.metadata["yolograph.input_channels"] == "BGR"
    _assert_placement(transpose_census(converted.graph), io_allowed=2)  # the uint8 input and the output
    # The transpose moves uint8 pixels, before the Cast.
    cast = converted.nodes_by_op("Cast")[0]
    assert cast.inputs[0].inputs[0].op == "Transpose"
    options = OrtOptions(threads=2)
    reference = OrtRunner(yolov8n, options).predict(to_input_tensor(frame))
    candidate = OrtRunner(converted, options).run(frame[None])[0]  # the letterboxed BGR frame, untouched
    scale = np.abs(reference).max()
    assert np.abs(reference - candidate).max() <= 1e-4 * scale
    # Evaluation and backends feed models by their metadata.
    from yolograph.layout.io import input_from_frame, input_from_nchw

    assert input_from_frame(converted.metadata, frame).base is frame
    np.testing.assert_array_equal(input_from_frame(yolov8n.metadata, frame), to_input_tensor(frame))
    np.testing.assert_array_equal(input_from_nchw(converted.metadata, to_input_tensor(frame)), frame[None])


@pytest.mark.parametrize("name", ["yolov8n", "yolov8s"])
def test_builder_models_equivalent(name):
    from yolograph.frontends import load_model

    model = load_model(name)
    converted, report = run_pipeline(model, "fold-bn,to-nhwc", verify=True)
    assert report.records[-1].verified == "ok"
    _assert_placement(transpose_census(converted.graph))


def test_io_only_and_internal_only(yolov8n):
    io_only, report = run_pipeline(yolov8n, "to-nhwc{internal=false}", verify=True)
    census = transpose_census(io_only.graph)
    assert census.total == 2  # the input transpose and the model's own DFL transpose
    assert "yolograph.layout" not in io_only.metadata
    internal_only, _ = run_pipeline(yolov8n, "to-nhwc{io=false}", verify=True)
    assert internal_only.inputs[0].shape == (1, 3, 640, 640)
    _assert_placement(transpose_census(internal_only.graph))


@pytest.mark.parametrize("spec", ["to-nhwc{channels=bgr}", "to-nhwc{internal=false,input=uint8}"])
def test_other_input_options_verify(yolov8n, spec):
    converted, report = run_pipeline(yolov8n, spec, verify=True)
    assert report.records[0].verified == "ok"
    assert converted.inputs[0].shape == (1, 640, 640, 3)


# -- INT8 ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["ort-cpu", "trt"])
def int8_yolov8n(request, yolov8n, coco_dir):
    """yolov8n after insert-qdq (ort-cpu: Q/DQ around every op; trt: on Conv inputs) + calibrate on 4 images."""
    pipeline = f"insert-qdq{{profile={request.param}}},calibrate{{images={coco_dir},count=4,method=minmax}}"
    quantized, _ = run_pipeline(yolov8n, pipeline)
    return quantized


def _conv_neighbours(model):
    result = []
    for conv in model.nodes_by_op("Conv"):
        source = conv.inputs[0].inputs[0].op if conv.inputs[0].inputs else None
        result.append((source, tuple(sorted({n.op for n in conv.outputs[0].outputs}))))
    return sorted(result, key=str)


def test_int8_qdq_stays_adjacent_to_conv_and_detections_are_equal(int8_yolov8n, coco_dir):
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.evaluation.postprocess import postprocess
    from yolograph.evaluation.preprocess import to_input_tensor

    (frame, geometry), = _image_feeds(coco_dir)
    image = to_input_tensor(frame)
    converted, report = run_pipeline(int8_yolov8n, "to-nhwc", verify=True, verify_inputs=[{"images": image}])
    _assert_placement(transpose_census(converted.graph))
    before, after = _conv_neighbours(int8_yolov8n), _conv_neighbours(converted)
    # DQ -> Conv stays adjacent for every quantized conv, and so does Conv -> Q where there was one
    # (ort-cpu quantizes conv outputs, trt does not); the only conv without DQ is the float DFL conv.
    assert sum(1 for source, _ in after if source == "DequantizeLinear") == \
        sum(1 for source, _ in before if source == "DequantizeLinear") >= 60
    assert sum(1 for _, c in after if c == ("QuantizeLinear",)) == sum(1 for _, c in before if c == ("QuantizeLinear",))
    for node in converted.nodes_by_op("Transpose"):
        if node.outputs[0].outputs and node.outputs[0].outputs[0].op == "Conv":
            assert node.outputs[0].outputs[0].name.endswith("dfl/conv/Conv")
    options = OrtOptions(threads=2)
    nchw_runner, nhwc_runner = OrtRunner(int8_yolov8n, options), OrtRunner(converted, options)
    for frame, geometry in _image_feeds(coco_dir, 3):
        image = to_input_tensor(frame)
        reference = postprocess(nchw_runner.predict(image), geometry, conf=0.25)
        candidate = postprocess(nhwc_runner.run(np.transpose(image, NCHW_TO_NHWC))[0], geometry, conf=0.25)
        assert len(reference.scores) > 0
        np.testing.assert_array_equal(reference.classes, candidate.classes)
        np.testing.assert_allclose(reference.boxes, candidate.boxes, atol=1e-2)
        np.testing.assert_allclose(reference.scores, candidate.scores, atol=1e-4)


# -- TVM --------------------------------------------------------------------------------------------


def test_tvm_relax_absorbs_the_wrapping(yolov8n):
    pytest.importorskip("tvm", reason="apache-tvm is not installed")
    from tvm.relax.frontend.onnx import from_onnx

    from yolograph.backends.tvm.relax_absorb import absorb_nhwc_wraps, layout_census

    converted, _ = run_pipeline(yolov8n, "to-nhwc{nchw_ops=Resize},cleanup")
    module = from_onnx(converted.to_onnx(), keep_params_in_input=False)
    imported = layout_census(module)
    assert imported["conv2d:NCHW"] == 64 and imported["relax.permute_dims"] > 100
    absorbed = layout_census(absorb_nhwc_wraps(module))
    assert absorbed["conv2d:NHWC"] == 64 and absorbed["conv2d:NCHW"] == 0
    assert absorbed["max_pool2d:NHWC"] == 3 and absorbed["resize2d:NHWC"] == 2
    # Left: the output-layout restore and the DFL conv's input (the head's own Transpose, merged).
    assert absorbed["relax.permute_dims"] + absorbed["relax.layout_transform"] <= 2


# -- benchmark smoke ------------------------------------------------------------------------------------


def test_benchmark_smoke(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "layout.py"
    out = tmp_path / "layout.json"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results["transposes"]) == {"fp32", "int8-ort-cpu", "int8-trt"}
    assert all(stats["elsewhere"] == 0 for stats in results["transposes"].values())
    assert results["preprocessing"]["max_rel_diff"] <= 1e-4
    assert "| ORT CPU |" in done.stdout
