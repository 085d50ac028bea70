"""The openvino Q/DQ profile's placement (needs no OpenVINO): Conv inputs only, SiLU and Conv outputs
float, shared scales through Concat and data-movement ops, S8 symmetric activations, decode float; and
the host rule that picks ort-cpu's weight bits (7 on x86 without VNNI)."""

from __future__ import annotations

import numpy as np
import pytest

from yolograph.pipeline import run_pipeline
from yolograph.quantization.profiles import cpu_flags, get_profile, host_profile
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


def test_ort_cpu_weight_bits_follow_the_host():
    avx2, vnni = frozenset({"avx2", "fma"}), frozenset({"avx2", "avx512_vnni"})
    assert host_profile("ort-cpu", "x86_64", avx2) == "ort-cpu-w7"
    assert host_profile("ort-cpu", "x86_64", vnni) == "ort-cpu-w8"
    assert host_profile("ort-cpu", "x86_64", frozenset({"avx_vnni"})) == "ort-cpu-w8"
    assert host_profile("ort-cpu", "aarch64", frozenset()) == "ort-cpu-w8"
    assert host_profile("ort-cpu", "x86_64", None) == "ort-cpu-w8"  # flags unknown: the previous default
    assert host_profile("openvino", "x86_64", avx2) == "openvino-w7"  # oneDNN saturates the same way
    assert host_profile("openvino", "x86_64", vnni) == "openvino-w8"
    assert get_profile("ort-cpu-w7").weight_qmax == 63 and get_profile("ort-cpu-w8").weight_qmax == 127
    import platform

    assert get_profile("ort-cpu").name == host_profile("ort-cpu", platform.machine(), cpu_flags())


def test_insert_qdq_records_the_explicit_weight_bits(yolov8n):
    """The model names the resolved profile, so calibrate on another host rounds to the same grid."""
    model, _ = run_pipeline(yolov8n, "insert-qdq{profile=ort-cpu-w7}")
    assert model.metadata["yolograph.qdq_profile"] == "ort-cpu-w7"
    conv = model.node("/model.0/conv/Conv")
    weight_q = conv.inputs[1].inputs[0].inputs[0].inputs[0]  # Conv <- DQ <- int8 <- Q
    weight, scale = (np.asarray(t.values) for t in weight_q.inputs[:2])
    assert np.allclose(np.abs(weight).reshape(len(scale), -1).max(axis=1) / scale, 63, rtol=1e-5)
