"""Deployment targets (`compile --target NAME`): every preset runs on a small built-in model.

CPU targets compile and load their artifact; TensorRT targets (GPU) run their pipeline and the readiness
check, and without TensorRT `compile --target trt-*` fails in one line naming the install.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from yolograph.cli import build_parser, main
from yolograph.cli.commands_targets import resolve_plan
from yolograph.errors import DataError, PipelineError
from yolograph.pipeline.parse import parse_pipeline
from yolograph.targets import TARGETS, get_target

CALIBRATION = "0:2"  # two coco128 images: enough to exercise calibration, fast


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
    """The built-in yolov8n at 160x160 with 3 classes, as an ONNX file."""
    from yolograph.frontends.builder import build_builtin
    from yolograph.ir.serialization import save_model

    path = tmp_path_factory.mktemp("targets") / "yolov8n-160.onnx"
    save_model(build_builtin("n", num_classes=3, imgsz=160), path)
    return path


@pytest.fixture(scope="module")
def tvm_db(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("YOLOGRAPH_TVM_TUNING_DB", str(tmp_path_factory.mktemp("tvm-db")))
    mp.setenv("YOLOGRAPH_TVM_SHIPPED_RECORDS", "0")
    yield
    mp.undo()


def compile_target(capsys, name, model, output, coco_dir, *extra):
    data = ["--data", str(coco_dir), "--calib-images", CALIBRATION] if TARGETS[name].needs_data else []
    code = main(["compile", str(model), "--target", name, "-o", str(output), *data, *extra, "--json"])
    captured = capsys.readouterr()
    return code, captured


def run_cpu_target(capsys, name, small_path, coco_dir, tmp_path):
    from yolograph.runtime.backend import open_runner

    target = TARGETS[name]
    output = tmp_path / f"model{target.suffix}"
    code, captured = compile_target(capsys, name, small_path, output, coco_dir)
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["target"] == name and result["backend"] == target.backend
    assert result["pipeline"] == target.pipeline_text(coco_dir, CALIBRATION)
    assert [p["name"] for p in result["report"]["passes"]] == [p.name for p in parse_pipeline(result["pipeline"])]
    runner, imgsz = open_runner(str(output))
    assert runner.backend == target.backend and tuple(imgsz) == (160, 160)
    images = np.random.default_rng(0).random((1, 3, 160, 160), dtype=np.float32)
    prediction = runner.predict(images)
    assert prediction.shape == (1, 4 + 3, 525) and np.isfinite(prediction).all()
    return result


def test_every_target_is_tested_here():
    tested = {"ort-fp32", "ort-int8", "openvino-fp32", "openvino-int8", "tvm-cpu", "tvm-int8", "trt-fp16", "trt-int8", "trt-best"}
    assert set(TARGETS) == tested


def test_ort_fp32(capsys, small_path, coco_dir, tmp_path):
    result = run_cpu_target(capsys, "ort-fp32", small_path, coco_dir, tmp_path)
    assert "BatchNormalization" not in result["summary"]["ops"]


@pytest.mark.parametrize("name", ["ort-int8"])
def test_ort_int8(capsys, small_path, coco_dir, tmp_path, name):
    result = run_cpu_target(capsys, name, small_path, coco_dir, tmp_path)
    assert result["summary"]["ops"].get("QuantizeLinear", 0) > 50
    assert "images=" in result["pipeline"] and f"range={CALIBRATION}" in result["pipeline"]


@pytest.mark.parametrize("name", ["openvino-fp32", "openvino-int8"])
def test_openvino_targets(capsys, small_path, coco_dir, tmp_path, name):
    pytest.importorskip("openvino")
    result = run_cpu_target(capsys, name, small_path, coco_dir, tmp_path)
    assert result["output"].endswith(".xml")


@pytest.mark.parametrize("name", ["tvm-cpu", "tvm-int8"])
def test_tvm_targets(capsys, small_path, coco_dir, tmp_path, tvm_db, name):
    pytest.importorskip("tvm")
    result = run_cpu_target(capsys, name, small_path, coco_dir, tmp_path)
    assert result["output"].endswith(".so")


@pytest.mark.parametrize("name", ["trt-fp16", "trt-int8", "trt-best"])
def test_tensorrt_targets_pipeline_and_readiness(small_path, yolov8n_path, coco_dir, name):
    """GPU targets: the pipeline runs on CPU and its graph passes the TensorRT readiness check.

    trt-best runs on the trained yolov8n: to-fp16's floor against an INT8 model (10 dB per group) is set
    for trained weights; the tiny random model's INT8 scores are noise that float16 rounding moves.
    """
    from yolograph.backends.tensorrt import check_readiness
    from yolograph.frontends import load_model
    from yolograph.pipeline import run_pipeline

    target = TARGETS[name]
    source = yolov8n_path if name == "trt-best" else small_path
    model, report = run_pipeline(load_model(source), target.pipeline_text(coco_dir, CALIBRATION))
    names = [r.name for r in report.records]
    assert ("calibrate" in names) == target.needs_data and ("to-fp16" in names) == (name != "trt-int8")
    assert check_readiness(model) == []
    assert target.backend == "tensorrt" and target.backend_options["precision"] == name.split("-")[1]


@pytest.mark.parametrize("name", ["trt-fp16", "trt-int8", "trt-best"])
def test_tensorrt_target_without_tensorrt_is_one_line(capsys, small_path, coco_dir, tmp_path, name):
    if not TARGETS[name].missing_modules():
        pytest.skip("TensorRT is installed here; the GPU tests build engines")
    code, captured = compile_target(capsys, name, small_path, tmp_path / "model.engine", coco_dir)
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and "pip install 'yolograph[tensorrt]'" in captured.err
    assert not (tmp_path / "model.engine").exists()


def test_target_line_is_printed(capsys, small_path, tmp_path):
    assert main(["compile", str(small_path), "--target", "ort-fp32", "-o", str(tmp_path / "m.onnx")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "target   ort-fp32: backend ort, pipeline fold-bn,cleanup,fast-dfl"


# -- bad input: one line each ---------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--target", "ort-int9"], ["Unknown target 'ort-int9'", "Did you mean 'ort-int8'"]),
    (["--target", "ort-int8"], ["needs images: add --data DIR"]),
    (["--target", "ort-int8", "--data", "/nonexistent/coco"], ["/nonexistent/coco does not exist"]),
    (["--target", "ort-fp32", "-p", "fold-bn"], ["either --target ort-fp32 or -p PIPELINE"]),
    (["--target", "ort-fp32", "--backend", "tvm"], ["compiles with the ort backend, not tvm"]),
    (["--target", "ort-fp32", "--data", "."], ["does not calibrate"]),
    ([], ["compile needs a pipeline"]),
    (["-p", "fold-bn", "--data", "."], ["with -p, name the images in the pipeline"]),
])
def test_bad_target_input_is_one_line(capsys, tmp_path, args, words):
    output = tmp_path / "never.onnx"
    code = main(["compile", "-o", str(output), *args])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    line = captured.err.strip()
    assert line.startswith("error: ") and "\n" not in line
    for word in words:
        assert word in line
    assert not output.exists()


def test_data_path_that_pipeline_text_cannot_hold(tmp_path):
    folder = tmp_path / "a,b"
    folder.mkdir()
    with pytest.raises(DataError, match="contains one of"):
        get_target("ort-int8").pipeline_text(folder)


def test_unknown_target_error_type():
    with pytest.raises(PipelineError, match="yolograph targets"):
        get_target("nope")


def test_tvm_target_string_in_target_is_deprecated_but_works(capsys):
    args = build_parser().parse_args(["compile", "-p", "fold-bn", "-o", "m.so", "--backend", "tvm",
                                      "--target", "llvm -num-cores=2"])
    plan = resolve_plan(args)
    assert plan.backend == "tvm" and plan.backend_values["tvm_target"] == "llvm -num-cores=2"
    assert plan.pipeline == "fold-bn" and plan.target is None
    err = capsys.readouterr().err
    assert "deprecated" in err and "--tvm-target 'llvm -num-cores=2'" in err


def test_tvm_target_flag_and_preset_options_merge():
    args = build_parser().parse_args(["compile", "-o", "m.so", "--target", "tvm-cpu", "--tvm-target", "llvm"])
    plan = resolve_plan(args)
    assert plan.backend == "tvm" and plan.backend_values["tvm_target"] == "llvm"
    args = build_parser().parse_args(["compile", "-o", "m.engine", "--target", "trt-int8", "--data", ".",
                                      "--precision", "fp16"])
    if TARGETS["trt-int8"].missing_modules():
        return  # resolving a trt target without TensorRT is the one-line error tested above
    assert resolve_plan(args).backend_values["precision"] == "fp16"  # a flag the user gave wins


# -- listing ------------------------------------------------------------------------------------------


def test_targets_command_lists_every_target_with_its_needs(capsys):
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(TARGETS)
    by_name = {r["name"]: r for r in rows}
    assert by_name["ort-int8"]["needs_data"] and "calibration images (--data DIR)" in by_name["ort-int8"]["needs"]
    assert "pip install 'yolograph[tvm]'" in by_name["tvm-cpu"]["needs"]
    assert any("NVIDIA GPU" in need for need in by_name["trt-int8"]["needs"])
    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    for name in TARGETS:
        assert name in text
    assert "images=DATA,range=0:32" in text


def test_listing_targets_imports_no_backend():
    code = ("import sys; from yolograph.targets import format_targets; format_targets(); "
            "print([m for m in sys.modules if m.startswith(('yolograph.backends', 'tvm', 'openvino', 'tensorrt'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
