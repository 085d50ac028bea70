"""distill and yolograph.training: the torch emitter against ONNX Runtime, weights by name, a short seeded run."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from yolograph.errors import PipelineError
from yolograph.frontends.builder import build_builtin
from yolograph.pipeline import run_pipeline
from yolograph.runtime import OrtRunner

torch = pytest.importorskip("torch", reason="distill needs the optional extra yolograph[train]")

from yolograph.training.emitter import GraphModule  # after the torch check
from yolograph.training.loop import TrainConfig, distill_model, loss_on_samples

IMGSZ = 128
TINY_PRUNE = "prune{macs=0.3,criterion=l1,reconstruct=none,round_to=4,min_channels=4}"


@pytest.fixture(scope="module")
def teacher():
    return build_builtin("n", num_classes=3, imgsz=IMGSZ, seed=1)


@pytest.fixture(scope="module")
def pruned(teacher):
    model, _ = run_pipeline(teacher, TINY_PRUNE)
    return model


@pytest.fixture(scope="module")
def feed():
    return np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)


def _close_to_ort(model, feed, rtol=1e-4):
    with torch.no_grad():
        ours = [t.numpy() for t in GraphModule(model)(torch.from_numpy(feed))]
    ref = OrtRunner(model).run({model.inputs[0].name: feed})
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert np.max(np.abs(a - b)) <= rtol * max(1.0, float(np.max(np.abs(b))))


def test_emitter_equals_ort_on_builtin_and_pruned(teacher, pruned, feed):
    assert any(n.op == "BatchNormalization" for n in teacher.graph.nodes)  # the unfolded-BN path runs too
    _close_to_ort(teacher, feed)
    assert pruned.shape_of(pruned.graph.outputs[0].name) == teacher.shape_of(teacher.graph.outputs[0].name)
    assert sum(n.inputs[1].shape[0] for n in pruned.nodes_by_op("Conv")) < sum(
        n.inputs[1].shape[0] for n in teacher.nodes_by_op("Conv"))
    _close_to_ort(pruned, feed)


def test_emitter_equals_ort_on_official_yolov8n(yolov8n):
    feed = np.random.default_rng(1).random((1, 3, 640, 640), dtype=np.float32)
    _close_to_ort(yolov8n, feed, rtol=1e-5)


def test_emitter_fake_quant_matches_ort_qdq(pruned, coco_dir, feed):
    quantized, _ = run_pipeline(pruned, f"insert-qdq,calibrate{{images={coco_dir},count=2}}")
    module = GraphModule(quantized)
    assert any(kind != "float" for kind in module.param_kind)  # int8 weights train as master copies
    with torch.no_grad():
        ours = module(torch.from_numpy(feed))[0].numpy()
    ref = OrtRunner(quantized).run({quantized.inputs[0].name: feed})[0]
    # ORT fuses Q/DQ into integer kernels; an occasional activation lands on the other side of a rounding
    # step, so the fake-quant graph agrees closely but not bit for bit
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    noise = float(np.sum((ref.astype(np.float64) - ours) ** 2))
    assert 10 * np.log10(signal / max(noise, 1e-30)) > 30.0


def test_weights_round_trip_by_name(pruned):
    model = pruned.copy()
    before = model.serialize()
    module = GraphModule(model)
    assert module.write_back(model) == len(module.param_names) > 0
    assert model.serialize() == before  # untouched parameters write back bit for bit
    name = module.param_names[3]
    with torch.no_grad():
        module.parameter(name).add_(1.0)
    module.write_back(model)
    constants = {n: t for n, t in model.graph.tensors().items() if hasattr(t, "values")}
    original = {n: t for n, t in pruned.graph.tensors().items() if hasattr(t, "values")}
    assert np.array_equal(constants[name].values, original[name].values + np.float32(1.0))
    changed = [n for n in module.param_names if not np.array_equal(constants[n].values, original[n].values)]
    assert changed == [name]


def _images(coco_dir, count=2):
    from yolograph.evaluation import resolve_dataset
    from yolograph.evaluation.preprocess import read_image

    return [read_image(p) for p in list(resolve_dataset(str(coco_dir)).image_paths)[:count]]


def _short_run(student, teacher, images, seed):
    from yolograph.training.augment import Augmentation

    config = TrainConfig(steps=4, batch=2, lr=2e-3, warmup=0.0, seed=seed, threads=1,
                         augmentation=Augmentation(mosaic=0.0))
    return distill_model(student, teacher, images, config)


def test_short_distill_lowers_the_loss_and_is_deterministic(teacher, pruned, coco_dir):
    from yolograph.training.augment import plain_sample

    images = _images(coco_dir)
    samples = np.stack([plain_sample(image, (IMGSZ, IMGSZ)) for image in images])
    first, second, other = pruned.copy(), pruned.copy(), pruned.copy()
    start = loss_on_samples(first, teacher, samples)
    result = _short_run(first, teacher, images, seed=5)
    assert result.steps == 4 and result.parameters > 0
    assert loss_on_samples(first, teacher, samples) < start
    _short_run(second, teacher, images, seed=5)
    assert first.serialize() == second.serialize()
    _short_run(other, teacher, images, seed=6)
    assert other.serialize() != first.serialize()
    assert pruned.serialize() != first.serialize()  # the fixture (the input) was copied, not trained


def test_distill_pass_in_a_pipeline(pruned, teacher, coco_dir, tmp_path):
    from yolograph.ir.serialization import save_model

    path = tmp_path / "teacher.onnx"
    save_model(teacher, path)
    model, report = run_pipeline(pruned, f"distill{{teacher={path},images={coco_dir},count=2,steps=2,batch=2}}",
                                 verify=True)
    record = report.records[0]
    assert record.verified == "ok" and record.stats["steps"] == 2
    assert set(record.stats["teacher_sqnr_db_after"]) == {"output0:box", "output0:scores"}
    assert model.serialize() != pruned.serialize()


def test_the_pipeline_input_is_the_default_teacher(teacher, coco_dir):
    """prune,distill in one pipeline: distill learns from the model the pipeline started from."""
    model, report = run_pipeline(teacher, f"{TINY_PRUNE},distill{{images={coco_dir},count=2,steps=2,batch=2}}")
    stats = report.records[1].stats
    assert stats["steps"] == 2 and set(stats["teacher_sqnr_db_after"]) == {"output0:box", "output0:scores"}


def test_distill_options_are_checked():
    from yolograph.pipeline.parse import parse_pipeline

    with pytest.raises(PipelineError, match="budget|epochs"):
        parse_pipeline("distill{images=x,epochs=0}")
    with pytest.raises(Exception, match="calibration data|images"):
        parse_pipeline("distill{epochs=1}")


def test_missing_torch_says_how_to_install(monkeypatch, pruned, coco_dir):
    from yolograph.pipeline.passes import get_pass

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    distill = get_pass("distill")(get_pass("distill").Options(images=str(coco_dir), count=2, steps=1))
    with pytest.raises(PipelineError) as info:
        distill.run(pruned.copy())
    message = str(info.value)
    assert "pip install 'yolograph[train]'" in message and "\n" not in message


def test_distill_after_insert_qdq_and_calibrate_is_qat_lite(pruned, teacher, coco_dir, tmp_path):
    from yolograph.ir.serialization import save_model

    path = tmp_path / "teacher.onnx"
    save_model(teacher, path)
    quantized, _ = run_pipeline(pruned, f"insert-qdq,calibrate{{images={coco_dir},count=2}}")
    model, report = run_pipeline(quantized, f"distill{{teacher={path},images={coco_dir},count=2,steps=3,batch=1,"
                                            "lr=5e-2}", verify=True)
    assert report.records[0].verified == "ok" and report.records[0].stats["quantized"]

    def int8_weights(m):
        return {n: np.array(t.values) for n, t in m.graph.tensors().items()
                if hasattr(t, "values") and np.asarray(t.values).dtype == np.int8 and np.asarray(t.values).ndim == 4}

    before, after = int8_weights(quantized), int8_weights(model)
    assert before.keys() == after.keys() and before  # still int8 initializers, same names
    assert any(not np.array_equal(before[n], after[n]) for n in before)  # and trained
    OrtRunner(model).run({model.inputs[0].name: np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)})
