"""Channel dependency groups: coupling through residual Adds, Concat, Split, SPPF, depthwise convs; blocks."""

from __future__ import annotations

import json

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from tests.graphs import make_model
from yolograph.analysis import analyze_channels, find_channel_groups
from yolograph.inspection.channel_groups import format_groups, groups_to_json


def _group_with(groups, node_name):
    return [g for g in groups if node_name in g.member_names]


def test_yolov8n_residual_split_and_head_groups(yolov8n):
    groups = find_channel_groups(yolov8n)
    # C2f model.4 (two bottlenecks with shortcut): cv1's second half is coupled to both bottleneck outputs.
    residual = _group_with(groups, "/model.4/m.0/cv2/conv/Conv")
    assert len(residual) == 1
    members = {m.node: m.channels for m in residual[0].members}
    assert set(members) == {"/model.4/cv1/conv/Conv", "/model.4/m.0/cv2/conv/Conv", "/model.4/m.1/cv2/conv/Conv"}
    assert members["/model.4/cv1/conv/Conv"] == tuple(range(32, 64))  # the Split's second section
    assert members["/model.4/m.0/cv2/conv/Conv"] == tuple(range(32))
    assert residual[0].prunable and residual[0].size == 32
    # cv1's first half is a separate, independent group (only the Split and the Concat read it).
    first_half = [g for g in _group_with(groups, "/model.4/cv1/conv/Conv") if g is not residual[0]]
    assert first_half[0].member_names == ("/model.4/cv1/conv/Conv",) and first_half[0].size == 32
    # Every head output conv (box 4*reg_max, class nc) and the DFL conv are blocked, with their role.
    facts = yolov8n.facts
    for conv in facts.head_convs:
        (group,) = _group_with(groups, conv)
        assert not group.prunable and "head output (" in group.reason
    for role in ("box", "class"):
        (group,) = _group_with(groups, facts.branch(role).nodes[0])
        assert f"head output ({role} branch)" in group.reason
    assert {g.size for g in groups if set(g.member_names) & set(facts.head_convs)} == {64, 80}
    # SPPF: cv1 feeds a chain of MaxPools and a Concat; its group is read through all of them.
    (sppf,) = _group_with(groups, "/model.9/cv1/conv/Conv")
    assert {"/model.9/m/MaxPool", "/model.9/m_1/MaxPool", "/model.9/m_2/MaxPool", "/model.9/Concat"} <= set(sppf.consumers)
    assert sppf.prunable
    # The model input is never prunable.
    assert not groups[0].prunable and groups[0].reason == "model input"


def test_concat_offsets_map_into_the_consumer(yolov8n):
    analysis = analyze_channels(yolov8n)
    concat = "/model.9/Concat_output_0"  # SPPF concat: cv1 and three MaxPools of it, 4 x 128 channels
    roots = analysis.tensor_roots(concat)
    assert len(roots) == 512
    # All four sections carry the same channel classes in the same order.
    for section in range(1, 4):
        assert np.array_equal(roots[:128], roots[128 * section:128 * (section + 1)])
    split_concat = analysis.tensor_roots("/model.4/Concat_output_0")
    cv1 = analysis.tensor_roots("/model.4/cv1/act/Mul_output_0")
    assert np.array_equal(split_concat[:64], cv1)  # the Split's sections land at offsets 0 and 32


def test_groups_do_not_depend_on_node_names(yolov8n):
    renamed = yolov8n.copy()
    for index, node in enumerate(renamed.graph.nodes):
        node.name = f"n{index}"
    renamed.invalidate()
    original = find_channel_groups(yolov8n)
    other = find_channel_groups(renamed)
    assert [(g.size, g.prunable, len(g.members)) for g in original] == [(g.size, g.prunable, len(g.members)) for g in other]


def _tiny_cnn(group_second: int = 8):
    """x -> conv a (8) -> depthwise/grouped conv b -> Add(a-out, b-out) -> conv c (4) -> Reshape -> y."""
    rng = np.random.default_rng(0)
    inits = {
        "wa": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
        "wb": rng.normal(size=(8, 8 // group_second, 3, 3)).astype(np.float32),
        "wc": rng.normal(size=(4, 8, 1, 1)).astype(np.float32),
        "shape": np.array([1, 4, 64], dtype=np.int64),
        "scale": rng.normal(size=(1, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1], group=group_second),
        helper.make_node("Mul", ["b", "scale"], ["bs"], name="scale_b"),
        helper.make_node("Add", ["ra", "bs"], ["s"], name="residual"),
        helper.make_node("Conv", ["s", "wc"], ["c"], name="conv_c"),
        helper.make_node("Reshape", ["c", "shape"], ["y"], name="flatten"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64])],
        inits,
    )


def test_depthwise_and_residual_couple_a_generic_cnn():
    groups = find_channel_groups(_tiny_cnn(group_second=8))
    (coupled,) = _group_with(groups, "conv_a")
    # Depthwise conv_b passes conv_a's channels through; the residual Add couples them again: one group.
    assert coupled.member_names == ("conv_a",) and coupled.size == 8 and coupled.prunable
    assert {"conv_b", "scale_b", "residual", "conv_c"} <= set(coupled.consumers)
    (head,) = _group_with(groups, "conv_c")
    assert not head.prunable and "Reshape" in head.reason


def test_grouped_conv_blocks_its_channels():
    groups = find_channel_groups(_tiny_cnn(group_second=2))
    (blocked,) = _group_with(groups, "conv_a")
    assert not blocked.prunable and "group=2" in blocked.reason


def test_format_and_json(yolov8n):
    groups = find_channel_groups(yolov8n)
    table = format_groups(groups)
    assert "why not: head output (" in table
    assert "/model.4/cv1/conv/Conv[32:64]" in table
    prunable = [g for g in groups if g.prunable]
    assert table.splitlines()[-1].startswith(f"{len(groups)} groups, {len(prunable)} prunable")
    data = json.loads(json.dumps(groups_to_json(groups)))
    assert len(data) == len(groups)
    assert {"id", "size", "prunable", "reason", "members", "consumers"} <= set(data[0])


def test_analysis_leaves_the_model_alone(yolov8n):
    before = yolov8n.serialize()
    find_channel_groups(yolov8n)
    assert yolov8n.serialize() == before


@pytest.mark.parametrize("op", ["Transpose"])
def test_unknown_ops_block(op):
    rng = np.random.default_rng(1)
    graph = gs.Graph(opset=17)
    x = gs.Variable("x", np.float32, (1, 3, 4, 4))
    a = gs.Variable("a", np.float32, (1, 6, 4, 4))
    y = gs.Variable("y", np.float32, (1, 4, 4, 6))
    graph.nodes = [
        gs.Node("Conv", "conv", inputs=[x, gs.Constant("w", rng.normal(size=(6, 3, 1, 1)).astype(np.float32))], outputs=[a]),
        gs.Node(op, "odd", attrs={"perm": [0, 2, 3, 1]}, inputs=[a], outputs=[y]),
    ]
    graph.inputs, graph.outputs = [x], [y]
    from yolograph.ir.model import Model

    groups = find_channel_groups(Model(graph))
    (group,) = _group_with(groups, "conv")
    assert not group.prunable and op in group.reason
