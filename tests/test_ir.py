"""The IR: YOLO facts found structurally, MACs/params, copies, atomic saves."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from yolograph.errors import ModelError
from yolograph.ir.cost import model_cost
from yolograph.ir.serialization import save_model
from yolograph.pipeline import run_pipeline


def test_facts_of_official_yolov8n(yolov8n):
    facts = yolov8n.facts
    assert facts.task == "detect" and facts.num_classes == 80 and facts.reg_max == 16 and facts.stride == 32
    assert facts.names[0] == "person" and facts.imgsz == (640, 640)
    assert len(facts.head_convs) == 6 and all(n.startswith("/model.22/") for n in facts.head_convs)
    decode_ops = {yolov8n.node(n).op for n in facts.decode_nodes}
    assert {"Softmax", "Sigmoid", "Concat", "Reshape"} <= decode_ops
    assert facts.dfl_conv in facts.decode_nodes
    # The decode is downstream of the head convs only: no backbone op is in it.
    assert not any(n.startswith("/model.2/") for n in facts.decode_nodes)


def test_facts_survive_renaming(yolov8n):
    """Head and decode are found from structure, not from ultralytics names."""
    model = yolov8n.copy()
    for index, node in enumerate(model.graph.nodes):
        node.name = f"n{index}"
    model.invalidate()
    assert len(model.facts.head_convs) == 6 and model.facts.reg_max == 16
    assert len(model.facts.decode_nodes) == len(yolov8n.facts.decode_nodes)


def test_facts_after_nhwc_conversion(yolov8n):
    nhwc, _ = run_pipeline(yolov8n, "cleanup,to-nhwc{input=uint8}")
    assert nhwc.facts.imgsz == (640, 640) and nhwc.facts.reg_max == 16 and len(nhwc.facts.head_convs) == 6


def test_macs_per_node_and_total(yolov8n):
    cost = model_cost(yolov8n)
    first = cost.per_node_macs["/model.0/conv/Conv"]
    # 3x3 stride-2 conv, 3 -> 16 channels, 640 -> 320: 16*320*320 outputs * 3*3*3 MACs each.
    assert first == 16 * 320 * 320 * 27
    assert cost.macs == sum(cost.per_node_macs.values())
    assert cost.per_node_macs["/model.22/Concat_5"] == 0


def test_copy_is_independent(yolov8n):
    clone = yolov8n.copy()
    weight = next(t for t in clone.graph.tensors().values() if isinstance(t, gs.Constant) and t.values.size > 100)
    original = yolov8n.graph.tensors()[weight.name].values.copy()
    weight.values[...] = 0
    assert np.array_equal(yolov8n.graph.tensors()[weight.name].values, original)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, yolov8n):
    path = save_model(yolov8n, tmp_path / "sub" / "m.onnx")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["m.onnx"]


def test_save_refuses_the_input_file(yolov8n):
    with pytest.raises(ModelError, match="overwrite"):
        save_model(yolov8n, yolov8n.source)


def test_shapes_and_macs_survive_contrib_ops(yolov8n):
    """ort-cpu Q/DQ turns SiLU into com.microsoft QuickGelu; shape inference must see through it."""
    quantized, _ = run_pipeline(yolov8n, "cleanup,insert-qdq{profile=ort-cpu}")
    assert "QuickGelu" in quantized.op_histogram()
    assert model_cost(quantized).macs == model_cost(yolov8n).macs
    assert quantized.outputs[0].shape == (1, 84, 8400)
