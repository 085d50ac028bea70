"""cleanup: constant/shape folding, no-op and dead-node removal; equal within 1e-6 relative."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from graphs import make_model
from yolograph.pipeline import run_pipeline


def test_cleanup_on_official_yolov8n_makes_shapes_static(yolov8n):
    result, report = run_pipeline(yolov8n, "cleanup", verify=True)
    ops = result.op_histogram()
    # The export computes the decode's slice bounds with Shape/Gather at run time: now constants.
    assert "Shape" not in ops and "Gather" not in ops and "Constant" not in ops
    assert ops["Conv"] == 64
    for node in result.graph.nodes:
        if node.op in ("Reshape", "Split", "Resize", "Slice"):
            for tensor in node.inputs[1:]:
                assert tensor.__class__.__name__ == "Constant" or tensor.name == "", (node.name, tensor.name)
    assert report.records[0].verified == "ok"


def test_cleanup_removes_identity_and_dead_nodes():
    w = np.ones((2, 2), dtype=np.float32)
    nodes = [
        helper.make_node("Identity", ["x"], ["i"], name="identity"),
        helper.make_node("MatMul", ["i", "w"], ["y"], name="matmul"),
        helper.make_node("Relu", ["x"], ["dead"], name="dead_relu"),
        helper.make_node("Add", ["w", "w"], ["w2"], name="const_add"),
        helper.make_node("MatMul", ["y", "w2"], ["z"], name="matmul2"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])],
        {"w": w},
    )
    result, report = run_pipeline(model, "cleanup", verify=True)
    assert result.op_histogram() == {"MatMul": 2}
    assert report.records[0].stats["no_ops_removed"] == 1
