"""The openvino Q/DQ profile's placement (needs no OpenVINO): Conv inputs only, SiLU and Conv outputs
float, shared scales through Concat and data-movement ops, S8 symmetric activations, decode float."""

from __future__ import annotations

import numpy as np
import pytest

from yolograph.pipeline import run_pipeline
from yolograph.quantization.qdq import activation_groups


def _from_dq(tensor) -> bool:
    return bool(tensor.inputs) and tensor.inputs[0].op == "DequantizeLinear"


@pytest.fixture(scope="module")
def openvino_qdq(yolov8n):
    model, _ = run_pipeline(yolov8n, "insert-qdq{profile=openvino}")
    return model


def test_openvino_profile_quantizes_conv_inputs_only(yolov8n, openvino_qdq):
    facts = yolov8n.facts
    body_convs = [n for n in openvino_qdq.nodes_by_op("Conv") if n.name not in facts.decode_nodes]
    assert body_convs and all(_from_dq(n.inputs[0]) and _from_dq(n.inputs[1]) for n in body_convs)
    assert all(not _from_dq(n.inputs[2]) for n in body_convs if len(n.inputs) > 2)  # float bias
    # No Q right after a Conv: bias, SiLU and the next FakeQuantize fuse into the Conv in OpenVINO.
    assert not [q for q in openvino_qdq.nodes_by_op("QuantizeLinear")
                if q.inputs[0].inputs and q.inputs[0].inputs[0].op == "Conv"]
    # SiLU stays Sigmoid * x in float, fed by the Conv directly.
    for op in ("Sigmoid", "Mul"):
        assert not [n for n in openvino_qdq.nodes_by_op(op) if any(_from_dq(t) for t in n.inputs)], op
    # The decode reads float logits: nothing in it consumes a dequantized tensor.
    decode = [n for n in openvino_qdq.graph.nodes if n.name in facts.decode_nodes and n.op != "Constant"]
    assert not [n.name for n in decode if any(_from_dq(t) for t in n.inputs)]
    groups = activation_groups(openvino_qdq)
    assert all(np.asarray(g.zero_point.values).dtype == np.int8 and not np.asarray(g.zero_point.values).any()
               for g in groups)


def test_openvino_profile_keeps_concat_and_pooling_in_one_scale(openvino_qdq):
    concat = openvino_qdq.node("/model.2/Concat")
    assert all(_from_dq(t) for t in concat.inputs)
    assert len({t.inputs[0].inputs[1].name for t in concat.inputs}) == 1
    pool = openvino_qdq.nodes_by_op("MaxPool")[0]
    assert _from_dq(pool.inputs[0])
    consumer_scales = {c.inputs[1].name for c in pool.outputs[0].outputs if c.op == "QuantizeLinear"}
    assert consumer_scales == {pool.inputs[0].inputs[0].inputs[1].name}
