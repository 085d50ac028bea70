"""fold-bn: Conv/ConvTranspose+BN and lone BN fold, equal within 1e-4 relative (checked by --verify)."""

from __future__ import annotations

import numpy as np
import pytest

from graphs import conv_bn_model, lone_bn_model
from yolograph.runtime import OrtRunner
from yolograph.frontends import load_model
from yolograph.pipeline import run_pipeline


def _max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(bias=True),
        dict(groups=2),
        dict(groups=8, bias=True),  # depthwise
        dict(transpose=True),
        dict(transpose=True, groups=2, bias=True),
    ],
    ids=["conv", "conv-bias", "grouped", "depthwise-bias", "convtranspose", "convtranspose-grouped-bias"],
)
def test_conv_bn_folds_into_conv(kwargs):
    model = conv_bn_model(**kwargs)
    folded, report = run_pipeline(model, "fold-bn", verify=True)
    assert "BatchNormalization" not in folded.op_histogram()
    assert report.records[0].stats["folded_into_conv"] == 1
    assert report.records[0].verified == "ok"
    x = np.random.default_rng(1).normal(size=model.inputs[0].shape).astype(np.float32)
    assert _max_rel_error(OrtRunner(model).run(x)[0], OrtRunner(folded).run(x)[0]) < 1e-5


def test_lone_bn_becomes_mul_add():
    model = lone_bn_model()
    folded, report = run_pipeline(model, "fold-bn", verify=True)
    ops = folded.op_histogram()
    assert "BatchNormalization" not in ops and ops["Mul"] == 1 and ops["Add"] == 1
    assert report.records[0].stats["to_mul_add"] == 1


def test_input_model_is_not_modified():
    model = conv_bn_model()
    before = model.serialize()
    run_pipeline(model, "fold-bn")
    assert model.serialize() == before


def test_ultralytics_unfused_export_folds_to_the_fused_export(fixtures_dir, fixture_input):
    """The ultralytics export without BN fusion, folded by us, matches ultralytics' own fused export."""
    unfused = load_model(fixtures_dir / "yolov8n-rand-bn.onnx")
    folded, _ = run_pipeline(unfused, "fold-bn,cleanup", verify=True)
    assert folded.op_histogram()["Conv"] == 64 and "BatchNormalization" not in folded.op_histogram()
    expected = np.load(fixtures_dir / "yolov8n-rand.io.npz")["output0"]
    got = OrtRunner(folded).run(fixture_input)[0]
    for rows in (slice(0, 4), slice(4, None)):
        assert np.max(np.abs(got[:, rows] - expected[:, rows])) <= 1e-3 * np.max(np.abs(expected[:, rows]))


def test_fold_bn_on_folded_model_changes_nothing(yolov8n):
    result, report = run_pipeline(yolov8n, "fold-bn")
    assert not report.records[0].changed
    assert len(result.graph.nodes) == len(yolov8n.graph.nodes)


@pytest.mark.parametrize("scale", ["n", "s"])
def test_fold_bn_and_cleanup_keep_builtin_models_equal(scale):
    """Verified against ORT on random inputs: box rows and class rows each within 1e-4 relative."""
    model = load_model(f"yolov8{scale}")
    folded, report = run_pipeline(model, "fold-bn,cleanup", verify=True)
    assert [r.verified for r in report.records] == ["ok", "ok"]
    assert report.records[0].stats["folded_into_conv"] == 57
    assert "BatchNormalization" not in folded.op_histogram()
