"""Every YOLO task end to end: dynamic-shape exports fixed on load, and a small run of the task matrix."""

from __future__ import annotations

import onnx
import pytest

from yolograph.errors import ModelError
from yolograph.frontends import load_model


def _dynamic_export(variants, tmp_path, name="yolov8n-pose-rand", drop_imgsz=False):
    """What export(dynamic=True) writes: batch, height and width (and the outputs' dims) symbolic."""
    proto = onnx.load(str(variants / f"{name}.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for index, symbol in ((0, "batch"), (2, "height"), (3, "width")):
        dims[index].Clear()
        dims[index].dim_param = symbol
    for output in proto.graph.output:
        out_dims = output.type.tensor_type.shape.dim
        out_dims[0].Clear()
        out_dims[0].dim_param = "batch"
        out_dims[-1].Clear()
        out_dims[-1].dim_param = "anchors"
    if drop_imgsz:
        for entry in [p for p in proto.metadata_props if p.key == "imgsz"]:
            proto.metadata_props.remove(entry)
    path = tmp_path / f"{name}-dynamic.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def variants(fixtures_dir):
    return fixtures_dir / "variants"


def test_dynamic_export_is_fixed_from_metadata(variants, tmp_path, capsys):
    model = load_model(_dynamic_export(variants, tmp_path))
    assert model.inputs[0].shape == (1, 3, 640, 640) and model.outputs[0].shape == (1, 56, 8400)
    assert model.facts.task == "pose" and len(model.facts.output_groups) == 4
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: dynamic input 'images'") and "1x3x640x640" in note[0]


def test_dynamic_export_with_given_shape(variants, tmp_path):
    path = _dynamic_export(variants, tmp_path, drop_imgsz=True)
    assert load_model(path, input_shape=(1, 3, 640, 640)).inputs[0].shape == (1, 3, 640, 640)


def test_dynamic_export_without_a_size_is_refused_with_the_fix(variants, tmp_path):
    path = _dynamic_export(variants, tmp_path, drop_imgsz=True)
    with pytest.raises(ModelError, match=r"--input-shape 1,3,640,640"):
        load_model(path)


def test_given_shape_must_agree_with_static_dims(variants, tmp_path):
    with pytest.raises(ModelError, match="contradicts the static dims"):
        load_model(_dynamic_export(variants, tmp_path), input_shape=(1, 4, 640, 640))
    with pytest.raises(ModelError, match="has 3 dims"):
        load_model(_dynamic_export(variants, tmp_path), input_shape=(1, 640, 640))


def test_static_model_is_loaded_unchanged(variants, capsys):
    assert load_model(variants / "yolov8n-obb-rand.onnx", input_shape=(1, 3, 640, 640)).inputs[0].shape == (1, 3, 640, 640)
    assert capsys.readouterr().err == ""
