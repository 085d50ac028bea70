"""Failures the graph fuzzer found (yolograph.testing.fuzz), each minimised to the smallest graph that showed it.

Every case runs the pass with verification on ONNX Runtime and checks what had failed: output names,
a graph the ONNX checker accepts, or a clean refusal instead of an ONNX Runtime error.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphs import bn_params, make_model
from yolograph.errors import PassError
from yolograph.pipeline import PassManager


def _info(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _run(model, pipeline: str):
    result, _ = PassManager(pipeline, verify=True).run(model)
    onnx.checker.check_model(result.to_onnx())
    assert [t.name for t in result.graph.outputs] == [t.name for t in model.graph.outputs]
    return result


def test_fold_bn_whose_output_is_a_graph_output_keeps_a_typed_output():
    """Conv -> BN where the BN output is a graph output (and feeds a Sigmoid): the folded conv's output
    took the output's name without its dtype, and the ONNX checker rejected the model."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"], ["y"]),
        helper.make_node("Sigmoid", ["y"], ["s"]),
    ]
    inits = {"w": rng.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32), **bn_params(rng, 4, "bn")}
    model = make_model(nodes, [_info("x", [1, 3, 4, 4])], [_info("y", [1, 4, 4, 4]), _info("s", [1, 4, 4, 4])], inits)
    result = _run(model, "fold-bn")
    assert not result.nodes_by_op("BatchNormalization")
    assert result.graph.outputs[0].dtype is not None


def test_cleanup_keeps_an_identity_between_two_graph_outputs():
    """Dropout(a) where both a and the Dropout's output are graph outputs: removing the Dropout gave
    both outputs the same name."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["d"])]
    model = make_model(nodes, [_info("x", [1, 2, 3, 3])], [_info("d", [1, 2, 3, 3]), _info("a", [1, 2, 3, 3])], {})
    _run(model, "cleanup")


def test_to_nhwc_keeps_two_outputs_joined_by_an_identity_transpose_apart():
    """m and Transpose(m, perm=identity) both graph outputs: the absorbed transpose renamed m."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["m"]),
        helper.make_node("Transpose", ["m"], ["t"], perm=[0, 1, 2, 3]),
        helper.make_node("Reshape", ["t", "shape"], ["r"]),
    ]
    shape = np.array([1, 2, 12, 1], np.int64)
    model = make_model(nodes, [_info("x", [1, 2, 3, 4])],
                       [_info("r", [1, 2, 12, 1]), _info("t", [1, 2, 3, 4]), _info("m", [1, 2, 3, 4])], {"shape": shape})
    _run(model, "to-nhwc{io=false}")


def test_to_nhwc_uint8_input_whose_transpose_is_a_graph_output():
    """A graph output computed as Transpose(images): input=uint8 moved the transpose before the Cast and
    dropped that output's producer ("Graph output ... does not exist")."""
    nodes = [helper.make_node("Transpose", ["images"], ["t"], perm=[0, 1, 3, 2]), helper.make_node("Sigmoid", ["t"], ["s"])]
    model = make_model(nodes, [_info("images", [1, 3, 4, 5])], [_info("t", [1, 3, 5, 4]), _info("s", [1, 3, 5, 4])], {})
    _run(model, "to-nhwc{input=uint8}")


@pytest.mark.parametrize("pipeline, message", [
    ("to-nhwc{channels=bgr}", "3 colour channels"),           # Gather [2,1,0] out of range in ORT
    ("to-nhwc", "also graph outputs"),                        # the input renamed 'images/logical'
])
def test_to_nhwc_refuses_models_it_cannot_convert(pipeline, message):
    nodes = [helper.make_node("Sigmoid", ["images"], ["s"])]
    outputs = [_info("s", [1, 1, 4, 4])] + ([_info("images", [1, 1, 4, 4])] if "graph outputs" in message else [])
    model = make_model(nodes, [_info("images", [1, 1, 4, 4])], outputs, {})
    with pytest.raises(PassError, match=message):
        PassManager(pipeline, verify=True).run(model)


def test_lone_bn_on_float16_becomes_float16_mul_add():
    """fold-bn wrote float32 scale/shift constants for a float16 BN (after to-fp16): ORT refused the Mul."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"], ["y"]),
    ]
    params = {k: v.astype(np.float16) for k, v in bn_params(rng, 3, "bn").items()}
    half = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, [1, 3, 4, 4]) for n in ("x", "y")]
    model = make_model(nodes, half[:1], half[1:], params)
    result, _ = PassManager("fold-bn").run(model)
    constants = [t for n in result.graph.nodes for t in n.inputs if t.__class__.__name__ == "Constant"]
    assert {np.asarray(c.values).dtype for c in constants} == {np.dtype(np.float16)}
    from yolograph.runtime.ort import OrtRunner

    x = rng.random((1, 3, 4, 4)).astype(np.float16)
    expected = OrtRunner(model).run({"x": x})[0].astype(np.float32)
    np.testing.assert_allclose(OrtRunner(result).run({"x": x})[0].astype(np.float32), expected, rtol=1e-2, atol=1e-2)
