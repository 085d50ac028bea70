"""The prune pass: valid runnable graphs on n/s/m, exact slicing, reconstruction, order rules, composition."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.errors import DataError, PassError, PipelineError
from yolograph.frontends import load_model
from yolograph.ir.cost import model_cost
from yolograph.ir.graph_view import constant_value
from yolograph.passes.prune import Prune, PruneOptions
from yolograph.pipeline import run_pipeline
from yolograph.pipeline.passes import sqnr_db
from yolograph.pruning.activations import runner_with_outputs

FAST = dict(criterion="l1", reconstruct="none")  # no calibration images needed


@pytest.fixture(scope="module")
def builtin_models():
    return {}


def _builtin(cache, name):
    if name not in cache:
        cache[name] = load_model(name)
    return cache[name]


def _prune(model, **options):
    """Prune a copy; returns (pruned model, stats, kept channel indices per feature map)."""
    pruned = model.copy()
    pass_ = Prune(PruneOptions(**options))
    stats = pass_.run(pruned).stats
    return pruned, stats, pass_.removal.kept


def _image(model, seed=0):
    shape = model.inputs[0].shape
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("name,ratio", [("yolov8n", 0.1), ("yolov8n", 0.3), ("yolov8n", 0.5),
                                        ("yolov8s", 0.3), ("yolov8m", 0.3)])
def test_builtin_models_stay_valid_and_untouched_layers_unchanged(builtin_models, name, ratio):
    model = _builtin(builtin_models, name)
    pruned, stats, kept = _prune(model, ratio=ratio, **FAST)
    proto = pruned.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert [i.shape for i in pruned.inputs] == [i.shape for i in model.inputs]
    assert [o.shape for o in pruned.outputs] == [o.shape for o in model.outputs]
    assert model_cost(pruned).macs < model_cost(model).macs
    assert stats["params_after"] < stats["params_before"]
    assert sum(v["removed"] for v in stats["layers"].values()) > 0
    # Convs that read nothing downstream of a pruned feature map compute exactly the original values
    # on their kept output channels.
    import networkx as nx

    tainted = set()
    for node in model.graph.nodes:
        if any(t.name in kept for t in node.inputs):
            tainted |= {node.name} | nx.descendants(model.nx_graph, node.name)
    convs = [n for n in model.nodes_by_op("Conv") if n.name not in tainted]
    names = [n.outputs[0].name for n in convs]
    image = _image(model)
    before = dict(zip(names, runner_with_outputs(model, names).session.run(names, {"images": image})))
    after = dict(zip(names, runner_with_outputs(pruned, names).session.run(names, {"images": image})))
    shrunk = 0
    for tensor in names:
        reference = before[tensor]
        if tensor in kept:
            reference = reference[:, kept[tensor]]
            shrunk += 1
        assert after[tensor].shape == reference.shape
        np.testing.assert_allclose(after[tensor], reference, rtol=1e-5, atol=1e-5 * float(np.abs(reference).max()))
    assert shrunk > 0
    # Kept channel counts are multiples of round_to (8) for every pruned conv.
    assert all(v["kept"] % 8 == 0 for v in stats["layers"].values())


def test_pruned_model_equals_zeroing_the_removed_channels(yolov8n):
    """With BN folded and SiLU(0) = 0, zeroing a removed channel's filter and bias is the same network."""
    pruned, _, kept = _prune(yolov8n, macs=0.3, **FAST)
    zeroed = yolov8n.copy()
    for node in zeroed.nodes_by_op("Conv"):
        out = node.outputs[0].name
        if out in kept:
            weight, bias = (np.array(constant_value(t)) for t in node.inputs[1:3])
            gone = np.setdiff1d(np.arange(weight.shape[0]), kept[out])
            weight[gone], bias[gone] = 0, 0
            node.inputs[1].values, node.inputs[2].values = weight, bias
    image = _image(yolov8n, seed=3)
    expected = OrtRunner(zeroed, OrtOptions(threads=2)).predict(image)
    actual = OrtRunner(pruned, OrtOptions(threads=2)).predict(image)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-3)


def test_steps_compose_into_one_removal_from_the_original(yolov8n):
    """Three steps of plain slicing: the kept indices are relative to the original model (the zeroing
    test above checks them end to end), every step moves closer to the MACs goal, and the layers report
    what all steps removed together."""
    pruned, stats, kept = _prune(yolov8n, macs=0.3, steps=3, **FAST)
    assert [s["step"] for s in stats["steps"]] == [1, 2, 3]
    reached = [s["macs_removed"] for s in stats["steps"]]
    assert reached == sorted(reached) and reached[0] >= 0.1 and abs(reached[-1] - 0.3) < 0.02
    widths = {n.name: n.inputs[1].shape[0] for n in yolov8n.nodes_by_op("Conv")}
    for node in pruned.nodes_by_op("Conv"):
        out = node.outputs[0].name
        width = np.asarray(constant_value(node.inputs[1])).shape[0]
        if out in kept:
            assert len(kept[out]) == width and kept[out].max() < widths[node.name]
            assert np.all(np.diff(kept[out]) > 0)
        layer = stats["layers"].get(node.name)
        if layer:
            assert layer["kept"] == width and layer["kept"] + layer["removed"] == widths[node.name]


def test_step_fraction_lands_each_step_on_its_share_of_the_goal():
    from yolograph.pruning.selection import step_fraction

    # 30% in 3 steps from 100 MACs: step 2 of a model now at 88 must reach 80.
    assert step_fraction("macs", 0.3, 2, 3, 100, 88) == pytest.approx(1 - 80 / 88)
    assert step_fraction("macs", 0.3, 2, 3, 100, 79) < 0  # step 1 overshot: step 2 is skipped
    assert (1 - step_fraction("ratio", 0.5, 1, 2, 1, 1)) ** 2 == pytest.approx(0.5)


def test_macs_target_is_reached_and_reported(yolov8n):
    _, stats, _ = _prune(yolov8n, macs=0.25, **FAST)
    assert stats["macs_removed"] >= 0.25
    assert stats["macs_after"] == model_cost(_prune(yolov8n, macs=0.25, **FAST)[0]).macs


def test_reconstruction_reduces_output_error(yolov8n, coco_dir):
    """Same channels removed (activation criterion); sequential least squares beats plain slicing."""
    common = dict(macs=0.2, criterion="activation", images=str(coco_dir), count=4, sensitivity=0, steps=1)
    plain, _, kept_plain = _prune(yolov8n, reconstruct="none", **common)
    rebuilt, stats, kept_rebuilt = _prune(yolov8n, reconstruct="sequential", **common)
    assert stats["refit_convs"] > 0 and stats["calibration_images"] == 4
    assert all(np.array_equal(kept_plain[k], kept_rebuilt[k]) for k in kept_plain)
    from yolograph.evaluation import iter_image_tensors, open_dataset

    images = list(iter_image_tensors(open_dataset(coco_dir).image_paths[40:42], (640, 640)))
    reference = OrtRunner(yolov8n, OrtOptions(threads=2))
    expected = [reference.predict(x) for x in images]

    def sqnr(model, rows):
        runner = OrtRunner(model, OrtOptions(threads=2))
        got = np.concatenate([runner.predict(x)[:, rows] for x in images])
        want = np.concatenate([e[:, rows] for e in expected])
        return sqnr_db(want, got)

    boxes, scores = slice(0, 4), slice(4, None)
    # Measured: boxes 16.8 -> 24.4 dB, class scores 0.4 -> 1.1 dB (count=4, macs=0.2).
    assert sqnr(rebuilt, boxes) > sqnr(plain, boxes) + 3.0
    assert sqnr(rebuilt, scores) > sqnr(plain, scores)


def test_verified_pipeline_keeps_the_sqnr_contract(yolov8n, coco_dir):
    model, report = run_pipeline(
        yolov8n, f"prune{{macs=0.1,images={coco_dir},count=2,sensitivity=0,reconstruct=local}}", verify=True
    )
    assert report.records[0].stats["macs_removed"] >= 0.1
    assert model_cost(model).macs < model_cost(yolov8n).macs


def test_bn_gamma_needs_unfolded_batchnorm(builtin_models):
    model = _builtin(builtin_models, "yolov8n")
    with pytest.raises(PipelineError, match="batchnorm|BatchNormalization"):
        run_pipeline(model, "fold-bn,prune{ratio=0.2,criterion=bn-gamma,reconstruct=none}")
    pruned, report = run_pipeline(model, "prune{ratio=0.2,criterion=bn-gamma,reconstruct=none}")
    assert report.records[0].stats["removed_channels"] > 0
    assert Prune(PruneOptions(criterion="l1")).requires == frozenset()


def test_prune_then_fold_bn_qdq_calibrate(builtin_models, coco_dir):
    model = _builtin(builtin_models, "yolov8n")
    pipeline = (f"prune{{macs=0.2,criterion=bn-gamma,images={coco_dir},count=2,reconstruct=local}},fold-bn,"
                f"insert-qdq,calibrate{{images={coco_dir},count=2}}")
    quantized, report = run_pipeline(model, pipeline)
    assert [r.name for r in report.records] == ["prune", "fold-bn", "insert-qdq", "calibrate"]
    assert not quantized.nodes_by_op("BatchNormalization") and quantized.nodes_by_op("QuantizeLinear")
    output = OrtRunner(quantized, OrtOptions(threads=2)).predict(_image(model))
    assert output.shape == tuple(model.outputs[0].shape) and np.isfinite(output).all()


@pytest.mark.parametrize("options,error,match", [
    (dict(criterion="l1", reconstruct="none"), PassError, "exactly one target"),
    (dict(macs=0.2, ratio=0.2, criterion="l1", reconstruct="none"), PassError, "exactly one target"),
    (dict(macs=1.5, criterion="l1", reconstruct="none"), PassError, "not a fraction"),
    (dict(macs=0.3, criterion="activation"), DataError, "images=DIR"),
    (dict(macs=0.3, criterion="l1", reconstruct="none", exclude=("*",)), PassError, "cannot remove"),
    (dict(ratio=0.3, criterion="bn-gamma", reconstruct="none"), PassError, "folded"),
    (dict(macs=0.3, budget="map:0.01", criterion="l1", reconstruct="none"), PassError, "exactly one target"),
    (dict(budget="sqnr:20", criterion="l1", reconstruct="none"), PassError, "budget=map:0.015"),
    (dict(budget="map:lots", criterion="l1", reconstruct="none"), PassError, "not understood"),
    (dict(budget="map:0.01", criterion="l1", reconstruct="none"), DataError, "labelled calibration images"),
])
def test_bad_options_raise_typed_errors(yolov8n, options, error, match):
    model = yolov8n.copy()
    with pytest.raises(error, match=match):
        Prune(PruneOptions(**options)).run(model)


def test_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "pruning.py"
    spec = importlib.util.spec_from_file_location("pruning_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "pruning.json"
    assert module.main(["--smoke", "--out", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["configs"]}
    assert set(rows) == {"baseline", "l1-none-20"}
    assert rows["l1-none-20"]["macs_removed"] >= 0.2 and rows["l1-none-20"]["speedup"] > 0
    assert rows["baseline"]["map50_95"] > 0.2 and rows["baseline"]["eval_images"] == 2


def test_budget_prunes_as_far_as_the_measured_map_drop_allows(yolov8n, coco_dir):
    """Any drop allowed: the search climbs to its upper end; no drop allowed (l1 without reconstruction
    costs mAP at every fraction): nothing is pruned and the model is left as it was."""
    common = dict(images=str(coco_dir), count=4, **FAST)
    pruned, stats, _ = _prune(yolov8n, budget="map:1.0", **common)
    assert stats["budget_met"] and len(stats["budget_trials"]) == 5
    found = max(t["macs"] for t in stats["budget_trials"])
    assert found > 0.45 and abs(stats["macs_removed"] - found) < 0.03
    assert stats["budget_map_drop"] <= 1.0 and stats["budget_map_before"] > 0.2

    untouched = yolov8n.copy()
    result = Prune(PruneOptions(budget="map:0.0", **common)).run(untouched)
    assert not result.changed and result.stats["budget_met"] is False
    assert all(t["map_drop"] > 0 for t in result.stats["budget_trials"])
    assert model_cost(untouched).macs == model_cost(yolov8n).macs


def test_budget_refuses_unlabelled_images(yolov8n, coco_dir, tmp_path):
    import shutil

    folder = tmp_path / "frames"
    folder.mkdir()
    for image in sorted((coco_dir / "images").rglob("*.jpg"))[:2]:
        shutil.copy(image, folder)
    with pytest.raises(DataError, match="needs labelled images"):
        Prune(PruneOptions(budget="map:0.01", images=str(folder), count=2, **FAST)).run(yolov8n.copy())
