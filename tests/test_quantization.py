"""INT8 quantization: Q/DQ placement rules per profile, calibration (determinism, errors), end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.errors import DataError, PipelineError
from yolograph.pipeline import run_pipeline
from yolograph.pipeline.passes import sqnr_db
from yolograph.pipeline.properties import UNCALIBRATED_KEY
from yolograph.quantization import DEFAULT_INT8_PIPELINE, default_int8_pipeline
from yolograph.evaluation.calibration_data import load_calibration_tensors
from yolograph.quantization.placement import Region, plan_qdq, residual_add_inputs_to_quantize
from yolograph.quantization.profiles import get_profile
from yolograph.quantization.qdq import activation_groups


def _dq_inputs(node) -> list[bool]:
    """For each input of `node`: does it come from a DequantizeLinear?"""
    return [bool(t.inputs) and t.inputs[0].op == "DequantizeLinear" for t in node.inputs]


@pytest.fixture(scope="module")
def ort_qdq(yolov8n):
    model, _ = run_pipeline(yolov8n, "insert-qdq{profile=ort-cpu}")
    return model


@pytest.fixture(scope="module")
def trt_qdq(yolov8n):
    model, _ = run_pipeline(yolov8n, "insert-qdq{profile=trt}")
    return model


def test_ort_cpu_placement_quantizes_body_and_head_convs_but_not_decode(yolov8n, ort_qdq):
    facts = yolov8n.facts
    assert ort_qdq.metadata[UNCALIBRATED_KEY] == "1"
    for node in ort_qdq.graph.nodes:
        if node.name in facts.decode_nodes and node.op not in ("Constant",):
            # The decode reads the head convs' dequantized logits at most; its own outputs are never quantized.
            assert not any(c.op == "QuantizeLinear" for t in node.outputs for c in t.outputs), node.name
    dfl = ort_qdq.node(facts.dfl_conv)
    assert not _dq_inputs(dfl)[1], "the DFL conv weight must stay float"
    for name in facts.head_convs:
        assert _dq_inputs(ort_qdq.node(name))[:2] == [True, True], name
    convs = ort_qdq.nodes_by_op("Conv")
    assert sum(_dq_inputs(c)[1] for c in convs) == len(convs) - 1  # all but the DFL conv
    # Every body SiLU became one QuickGelu between a DQ and a Q (ORT runs it on the uint8 NHWC tensors).
    assert not [n for n in ort_qdq.nodes_by_op("Sigmoid") if n.name not in facts.decode_nodes]
    silus = ort_qdq.nodes_by_op("QuickGelu")
    assert len(silus) == 57 and all(_dq_inputs(n)[0] for n in silus)
    assert all(c.op == "QuantizeLinear" for n in silus for c in n.outputs[0].outputs)
    groups = activation_groups(ort_qdq)
    assert all(np.asarray(g.zero_point.values).dtype == np.uint8 for g in groups)
    # Concat inputs share the output's scale, so ORT's QLinearConcat copies instead of requantizing.
    concat = ort_qdq.node("/model.2/Concat")
    assert len({t.inputs[0].inputs[1].name for t in concat.inputs}) == 1
    # MaxPool shares one scale between input and output (ORT drops Q/DQ around it only then).
    pool = ort_qdq.nodes_by_op("MaxPool")[0]
    assert pool.inputs[0].inputs[0].inputs[1] is next(iter(pool.outputs[0].outputs)).inputs[1]


def test_tvm_profile_keeps_silu_as_sigmoid_mul_quantized(yolov8n):
    model, _ = run_pipeline(yolov8n, "insert-qdq{profile=tvm}")
    assert not model.nodes_by_op("QuickGelu")
    body = [n for n in model.nodes_by_op("Sigmoid") if n.name not in yolov8n.facts.decode_nodes]
    assert len(body) == 57 and all(_dq_inputs(n)[0] for n in body)


def test_trt_placement_rules(yolov8n, trt_qdq):
    groups = activation_groups(trt_qdq)
    assert all(np.asarray(g.zero_point.values).dtype == np.int8 and int(g.zero_point.values) == 0 for g in groups)
    # Conv inputs only: no Q/DQ in front of Sigmoid/Mul of SiLU.
    assert not any(_dq_inputs(n)[0] for n in trt_qdq.nodes_by_op("Sigmoid"))
    assert all(_dq_inputs(n)[:2] == [True, True] for n in trt_qdq.nodes_by_op("Conv") if n.name != yolov8n.facts.dfl_conv)
    # Concat inputs share one scale.
    body_concats = [n for n in trt_qdq.nodes_by_op("Concat") if n.name not in yolov8n.facts.decode_nodes]
    assert body_concats
    for concat in body_concats:
        scales = {t.inputs[0].inputs[1].name for t in concat.inputs}
        assert all(_dq_inputs(concat)) and len(scales) == 1, concat.name
    # Residual Add: the conv-produced (SiLU) input fuses (no Q/DQ), the skip input is quantized.
    adds = [n for n in trt_qdq.nodes_by_op("Add") if n.name not in yolov8n.facts.decode_nodes]
    assert len(adds) == 6
    for add in adds:
        assert sorted(_dq_inputs(add)) == [False, True], add.name
        fused = add.inputs[_dq_inputs(add).index(False)]
        assert fused.inputs[0].op == "Mul"  # SiLU of the bottleneck's second conv
    # Weights per-channel on axis 0.
    weight_dq = trt_qdq.nodes_by_op("Conv")[0].inputs[1].inputs[0]
    assert weight_dq.attrs["axis"] == 0 and weight_dq.inputs[1].values.shape == (16,)


def test_residual_rule_on_float_graph(yolov8n):
    add = next(n for n in yolov8n.nodes_by_op("Add") if n.name == "/model.2/m.0/Add")
    assert [t.name for t in residual_add_inputs_to_quantize(add)] == ["/model.2/Split_output_1"]


def test_region_options_exclude_and_include(yolov8n):
    profile = get_profile("ort-cpu")
    base = plan_qdq(yolov8n, profile)
    no_first = plan_qdq(yolov8n, profile, Region(exclude=("/model.0/*",)))
    assert "/model.0/conv/Conv" in base.weight_convs and "/model.0/conv/Conv" not in no_first.weight_convs
    no_sigmoid = plan_qdq(yolov8n, profile, Region(exclude_ops=("Sigmoid", "Mul")))
    assert not any(t.endswith("Sigmoid_output_0") for t in no_sigmoid.tensors)
    whole = plan_qdq(yolov8n, profile, Region(head_aware=False))
    assert len(whole.tensors) > len(base.tensors)
    assert yolov8n.facts.dfl_conv in whole.weight_convs


def test_calibrate_is_deterministic_and_finalizes(yolov8n, coco_dir):
    pipeline = f"insert-qdq,calibrate{{method=percentile,count=2,images={coco_dir}}}"
    first, report = run_pipeline(yolov8n, pipeline)
    second, _ = run_pipeline(yolov8n, pipeline)
    assert first.serialize() == second.serialize()
    assert UNCALIBRATED_KEY not in first.metadata
    assert report.records[1].stats["images"] == 2
    onnx.checker.check_model(first.to_onnx())
    # Weights are int8 initializers, biases int32: the model is about 4x smaller than fp32.
    assert len(first.serialize()) < len(yolov8n.serialize()) / 3
    assert all(np.asarray(g.scale.values) != 1.0 for g in activation_groups(first))


def test_calibration_errors(yolov8n, tmp_path, coco_dir):
    with pytest.raises(DataError, match="images=DIR"):
        run_pipeline(yolov8n, "insert-qdq,calibrate")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="No images"):
        run_pipeline(yolov8n, f"insert-qdq,calibrate{{images={empty}}}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot be decoded"):
        run_pipeline(yolov8n, f"insert-qdq,calibrate{{images={broken}}}")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3, 320, 320), dtype=np.float32))
    with pytest.raises(DataError, match=r"\[N,3,640,640\]"):
        run_pipeline(yolov8n, f"insert-qdq,calibrate{{npy={wrong}}}")
    with pytest.raises(DataError, match="do not exist"):
        run_pipeline(yolov8n, f"insert-qdq,calibrate{{npy={tmp_path / 'missing.npy'}}}")
    with pytest.raises(PipelineError, match="insert-qdq"):
        run_pipeline(yolov8n, f"calibrate{{images={coco_dir}}}")


def test_npy_calibration_matches_images(yolov8n, tmp_path, coco_dir):
    tensors = np.concatenate(list(load_calibration_tensors(coco_dir, 2, 640)))
    np.save(tmp_path / "calib.npy", tensors)
    from_images, _ = run_pipeline(yolov8n, f"insert-qdq,calibrate{{method=minmax,count=2,images={coco_dir}}}")
    from_npy, _ = run_pipeline(yolov8n, f"insert-qdq,calibrate{{method=minmax,npy={tmp_path / 'calib.npy'}}}")
    for model in (from_images, from_npy):  # the recorded pipeline text names its data source; the rest is equal
        model.metadata.pop("yolograph.pipeline")
    assert from_images.serialize() == from_npy.serialize()


def test_default_pipeline_names_its_data():
    assert "images=IMAGES" in DEFAULT_INT8_PIPELINE
    assert "images=/d" in default_int8_pipeline("/d") and "insert-qdq{profile=ort-cpu}" in default_int8_pipeline("/d")


@pytest.mark.slow
def test_end_to_end_int8_yolov8n_keeps_accuracy(yolov8n, coco_dir):
    """Real yolov8n, calibrated on 8 images, checked on 8 others: SQNR and mAP close to fp32."""
    from yolograph.evaluation import evaluate

    feeds = [{"images": t} for t in load_calibration_tensors(coco_dir, None, 640, image_range="32:34")]
    quantized, report = run_pipeline(yolov8n, default_int8_pipeline(str(coco_dir), count=8),
                                     verify=True, verify_inputs=feeds)
    assert report.records[-1].verified == "ok"
    assert {"QLinearConv"} <= _ort_fused_ops(quantized)
    float_runner, int8_runner = (OrtRunner(m, OrtOptions(threads=2)) for m in (yolov8n, quantized))
    ref, new = [], []
    for tensor in load_calibration_tensors(coco_dir, None, 640, image_range="32:36"):
        ref.append(float_runner.predict(tensor))
        new.append(int8_runner.predict(tensor))
    ref, new = np.concatenate(ref), np.concatenate(new)
    assert sqnr_db(ref[:, :4], new[:, :4]) > 25.0
    assert sqnr_db(ref[:, 4:], new[:, 4:]) > 10.0
    fp32 = evaluate(float_runner.predict, coco_dir, images="32:40")
    int8 = evaluate(int8_runner.predict, coco_dir, images="32:40")
    assert int8.map50_95 > fp32.map50_95 - 0.03, (fp32, int8)


def _ort_fused_ops(model) -> set[str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = ""
    session = ort.InferenceSession(model.serialize(), options, providers=["CPUExecutionProvider"])
    del session
    # ORT does not expose the optimized graph in memory: re-run with a file.
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "optimized.onnx"
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(model.serialize(), options, providers=["CPUExecutionProvider"])
        return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_bias_correction_and_adaptive_rounding_run_and_report(yolov8n, coco_dir):
    from yolograph.quantization.qdq import quantized_convs

    base, _ = run_pipeline(yolov8n, "insert-qdq{profile=ort-cpu,exclude=/model.1*|/model.[3-9]*|/model.1[0-9]*|/model.2[01]*}")
    corrected, report = run_pipeline(base, f"bias-correction{{images={coco_dir},count=2}}")
    assert report.records[0].stats["corrected"] == len(quantized_convs(base)) > 0
    before = {c.conv.name: c.bias() for c in quantized_convs(base)}
    after = {c.conv.name: c.bias() for c in quantized_convs(corrected)}
    assert any(not np.allclose(before[k], after[k]) for k in before)
    rounded, report = run_pipeline(base, f"adaptive-rounding{{images={coco_dir},count=2,samples=128}}")
    # On the data it saw, Hessian-aware rounding must beat nearest rounding on the layer outputs.
    assert report.records[0].stats["median_error_ratio"] < 0.9
    # The rounded weights sit on the int8 grid of the unchanged per-channel scales.
    for item in quantized_convs(rounded):
        w = item.float_weight() / item.scales.reshape(-1, 1, 1, 1)
        assert np.allclose(w, np.round(w), atol=1e-3)
    with pytest.raises(Exception, match="before calibrate"):
        calibrated, _ = run_pipeline(base, f"calibrate{{images={coco_dir},count=1}}")
        run_pipeline(calibrated, f"bias-correction{{images={coco_dir},count=1}}")


def test_mixed_precision_keeps_layers_and_reports_them(yolov8n, coco_dir):
    # The most sensitive convs with 8-bit weights (the first three) and with 7-bit weights (the last: the
    # ort-cpu profile picks 7 bits on x86 without VNNI, where keeping any of the first three float helps none).
    candidates = "/model.9/cv2/conv/Conv|/model.1/conv/Conv|/model.2/cv2/conv/Conv|/model.2/cv1/conv/Conv"
    model, report = run_pipeline(
        yolov8n,
        f"insert-qdq,mixed-precision{{budget=sqnr:99,max_float=2,images={coco_dir},count=4,eval_range=0:2,"
        f"candidates={candidates}}},calibrate{{images={coco_dir},count=4}}",
    )
    stats = report.records[1].stats
    assert stats["budget_met"] is False and 1 <= len(stats["kept_float"]) <= 2  # 99 dB is out of reach
    trail = stats["output_sqnr_db"]
    assert len(trail) == len(stats["kept_float"]) + 1 and trail == sorted(trail) and trail[-1] > trail[0]
    for name in stats["kept_float"]:
        conv = model.node(name)
        assert not _dq_inputs(conv)[1] and not _dq_inputs(conv)[0], name
    reached, report = run_pipeline(
        yolov8n, f"insert-qdq,mixed-precision{{budget=sqnr:1,images={coco_dir},count=2,eval_range=0:2,"
        f"candidates={candidates}}}")
    assert report.records[1].stats["kept_float"] == [] and report.records[1].stats["budget_met"]


def test_mixed_precision_map_budget_is_measured_on_labelled_images(yolov8n, coco_dir):
    candidates = "/model.9/cv2/conv/Conv|/model.1/conv/Conv"
    _, report = run_pipeline(
        yolov8n, f"insert-qdq,mixed-precision{{budget=map:1.0,images={coco_dir},count=2,eval_range=0:2,"
        f"candidates={candidates}}}")
    stats = report.records[1].stats
    assert stats["budget_met"] and stats["kept_float"] == [] and len(stats["map_drop"]) == 1
    assert stats["map_drop"][0] <= 1.0
    with pytest.raises(PipelineError, match="not understood"):  # when the pipeline is parsed
        run_pipeline(yolov8n, f"insert-qdq,mixed-precision{{budget=map,images={coco_dir}}}")


def test_sensitivity_report_and_plot(yolov8n, coco_dir, tmp_path):
    from yolograph.quantization.sensitivity import run_sensitivity

    layers = ["/model.0/conv/Conv", "/model.22/cv3.0/cv3.0.2/Conv"]
    report = run_sensitivity(yolov8n, coco_dir, images="0:2", plot=tmp_path / "s.png", layers=layers,
                             pipeline=default_int8_pipeline(str(coco_dir), count=2))
    data = report.to_json()
    assert [row["name"] for row in data["layers"]] == sorted(layers, key=lambda n: next(
        r.output_sqnr_db for r in report.layers if r.name == n))
    assert all(np.isfinite(row["own_sqnr_db"]) and row["output_sqnr_db"] > 0 for row in data["layers"])
    # The class-score conv cannot disturb the box rows.
    score_row = next(r for r in report.layers if r.name.endswith("cv3.0.2/Conv"))
    assert score_row.boxes_sqnr_db == float("inf")
    assert len(report.table().splitlines()) == 2 + len(layers)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_verify_catches_a_quantized_decode(yolov8n, coco_dir):
    """Quantizing the decode's final Concat (boxes 0-640 and scores 0-1 under one scale) zeroes every
    score: --verify must reject it through calibrate's SQNR contract, while the head-aware default passes."""
    from yolograph.errors import ContractViolation

    with pytest.raises(ContractViolation, match="calibrate.*SQNR"):
        run_pipeline(yolov8n, f"insert-qdq{{head_aware=false}},calibrate{{method=minmax,count=2,images={coco_dir}}}",
                     verify=True)
    _, report = run_pipeline(yolov8n, f"insert-qdq,calibrate{{method=minmax,count=2,images={coco_dir}}}", verify=True)
    assert [r.verified for r in report.records] == ["deferred", "ok"]
