"""Torch-free .pt lowering of every ultralytics task and of YOLO11 / YOLO26, against their ONNX exports.

Each fixture in fixtures/variants is a random-weight checkpoint beside ultralytics' own ONNX export
of it (BN fused). The lowered model, unfused and after `fold-bn`, must reproduce the export on every
output and on every row group of `output0` (boxes, scores, masks / keypoints / angle) within 1e-3 of
that group's max|ref|, and keep the export's input/output names, shapes and metadata.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from yolograph.data import fixtures
from yolograph.errors import ModelError

VARIANTS = fixtures() / "variants"
TOLERANCE = 1e-3

# Row groups of output0 as fixtures/variants/README.md lays them out.
GROUPS: dict[str, dict[str, slice]] = {
    "yolov8n-seg-rand": {"box": slice(0, 4), "cls": slice(4, 84), "mask coefficients": slice(84, 116)},
    "yolov8n-pose-rand": {"box": slice(0, 4), "cls": slice(4, 5), "keypoints": slice(5, 56)},
    "yolov8n-obb-rand": {"box": slice(0, 4), "cls": slice(4, 19), "angle": slice(19, 20)},
    "yolov8n-cls-rand": {"probabilities": slice(0, 1000)},
    "yolo11n-rand": {"box": slice(0, 4), "cls": slice(4, 84)},
    "yolo26n-rand": {"box": slice(0, 4), "cls": slice(4, 84)},
}
# Metadata a downstream reader uses; the export's values must survive lowering unchanged.
EXPORT_METADATA_KEYS = (
    "task", "head", "stride", "imgsz", "names", "batch", "channels", "end2end", "kpt_shape", "version", "license", "docs",
)  # fmt: skip

needs_fixtures = pytest.mark.usefixtures("fixtures_dir")


@pytest.fixture(scope="module")
def lowered():
    """Lowered variant models, unfused and after fold-bn, built once per test module."""
    from yolograph.frontends import load_model
    from yolograph.pipeline import run_pipeline

    cache: dict[tuple[str, bool], object] = {}

    def get(stem: str, folded: bool):
        if (stem, False) not in cache:
            cache[(stem, False)] = load_model(VARIANTS / f"{stem}.pt")
        if folded and (stem, True) not in cache:
            cache[(stem, True)] = run_pipeline(cache[(stem, False)], "fold-bn")[0]
        return cache[(stem, folded)]

    return get


def run_ort(model_or_path, images: np.ndarray) -> list[np.ndarray]:
    from yolograph.runtime import OrtOptions, OrtRunner

    return OrtRunner(model_or_path, OrtOptions(threads=2)).run({"images": images})


def error_ratios(outputs: list[np.ndarray], references: list[np.ndarray], groups: dict[str, slice]) -> dict[str, float]:
    """max|out - ref| / max|ref| per row group of output0 and per further output."""

    def ratio(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).max() / np.abs(b).max())

    ratios = {name: ratio(outputs[0][:, rows], references[0][:, rows]) for name, rows in groups.items()}
    ratios.update({f"output{i}": ratio(o, r) for i, (o, r) in enumerate(zip(outputs, references)) if i})
    return ratios


def seeded_images(reference: onnx.ModelProto) -> np.ndarray:
    shape = [d.dim_value for d in reference.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(0).random(shape, dtype=np.float32)


@needs_fixtures
@pytest.mark.parametrize("stem", list(GROUPS))
def test_lowered_variant_reproduces_its_ultralytics_export(lowered, stem):
    reference_path = VARIANTS / f"{stem}.onnx"
    reference = onnx.load(reference_path, load_external_data=False)
    images = seeded_images(reference)
    expected = run_ort(str(reference_path), images)
    unfused, folded = lowered(stem, False), lowered(stem, True)
    for model in (unfused, folded):
        assert [t.name for t in model.inputs] == [t.name for t in reference.graph.input]
        assert [t.name for t in model.outputs] == [t.name for t in reference.graph.output]
        outputs = run_ort(model, images)
        assert [o.shape for o in outputs] == [r.shape for r in expected]
        ratios = error_ratios(outputs, expected, GROUPS[stem])
        assert max(ratios.values()) <= TOLERANCE, ratios
    assert Counter(node.op for node in unfused.graph.nodes)["BatchNormalization"] > 0, "the lowering keeps BN unfused"
    # After fold-bn the lowering is op for op the graph ultralytics exports (BN fused there).
    assert Counter(node.op for node in folded.graph.nodes) == Counter(node.op_type for node in reference.graph.node)


@needs_fixtures
@pytest.mark.parametrize("stem", list(GROUPS))
def test_lowered_variant_keeps_the_export_metadata(lowered, stem):
    reference = onnx.load(VARIANTS / f"{stem}.onnx", load_external_data=False)
    exported = {p.key: p.value for p in reference.metadata_props}
    model = lowered(stem, False)
    for key in EXPORT_METADATA_KEYS:
        assert model.metadata.get(key) == exported.get(key), key
    assert model.metadata["source_checkpoint"] == f"{stem}.pt"


@needs_fixtures
@pytest.mark.parametrize("stem", list(GROUPS))
def test_lowered_variant_has_the_facts_of_its_export(lowered, stem):
    # What passes and evaluation read from a model (task, head branches, output row groups, decode
    # nodes, keypoint shape, ...) is the same whether it came from the .pt or from the export.
    from yolograph.frontends import load_model

    assert lowered(stem, True).facts.summary() == load_model(VARIANTS / f"{stem}.onnx").facts.summary()


@needs_fixtures
@pytest.mark.parametrize("stem", ["yolov8n-rand", "yolov8s-rand-nc3"])
def test_the_record_walker_also_reproduces_yolov8_detect(stem):
    # Stock YOLOv8 detect goes through the builder; the walker, run on the same checkpoint, must agree
    # with the export too (it is what lowers every other model, at any scale and class count).
    from yolograph.frontends.pt import read_checkpoint
    from yolograph.frontends.pt.lowering import lower_other, select_model_record

    checkpoint = read_checkpoint(fixtures() / f"{stem}.pt")
    model = lower_other(checkpoint, select_model_record(checkpoint))
    io = np.load(fixtures() / f"{stem}.io.npz")
    outputs = run_ort(model, io["images"].astype(np.float32))
    ratios = error_ratios(outputs, [io["output0"]], {"box": slice(0, 4), "cls": slice(4, None)})
    assert max(ratios.values()) <= TOLERANCE, ratios


# -- refusals -------------------------------------------------------------------------------------


def renamed_class(source: Path, target: Path, module: str, old: str, new: str) -> Path:
    """A copy of checkpoint `source` whose pickle names class `module.new` where it named `module.old`."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                old_global, new_global = f"{module}\n{old}\n".encode(), f"{module}\n{new}\n".encode()
                assert old_global in data, old
                data = data.replace(old_global, new_global)
            dst.writestr(info.filename, data)
    return target


@needs_fixtures
@pytest.mark.parametrize(
    ("stem", "module", "old", "new"),
    [
        ("yolo11n-rand", "ultralytics.nn.modules.block", "C2PSA", "A2C2f"),  # YOLO12's area-attention block
        ("yolov8n-seg-rand", "ultralytics.nn.modules.head", "Segment", "Segment26"),  # YOLO26's mask head
    ],
)
def test_unknown_module_or_head_is_one_sentence_naming_it(tmp_path, stem, module, old, new):
    from yolograph.frontends import load_model

    path = renamed_class(VARIANTS / f"{stem}.pt", tmp_path / f"{stem}.pt", module, old, new)
    with pytest.raises(ModelError) as error:
        load_model(path)
    message = str(error.value)
    assert message.startswith(f"unsupported: {new}. yolograph lowers ")
    assert "C2PSA" in message and "Segment" in message  # says what is supported
    assert "\n" not in message
