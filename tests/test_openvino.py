"""OpenVINO backend: compile float and Q/DQ models to an IR, outputs against ONNX Runtime, sidecar,
atomic writes, the runner protocol through the CLI, and one-line errors for bad devices and outputs.

Small models (the built-in yolov8n at 160x160) keep it fast; skipped only when openvino is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from yolograph.errors import BackendError
from yolograph.frontends.builder import build_builtin
from yolograph.pipeline import run_pipeline
from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.runtime.backend import backend_options, compile_for_backend, detect_backend, open_runner

pytest.importorskip("openvino", reason="the openvino extra is not installed")  # optional dependency

from yolograph.backends.openvino import OpenVinoOptions, compile_model, load_runner  # noqa: E402
from yolograph.backends.openvino.settings import RuntimeConfig  # noqa: E402
from yolograph.backends.openvino.sidecar import read_sidecar, sidecar_path  # noqa: E402

IMGSZ = 160


def group_errors(actual: np.ndarray, reference: np.ndarray) -> list[float]:
    """Max error of the box rows and of the class rows, each relative to that group's max |ref|."""
    return [float(np.abs(actual[:, rows] - reference[:, rows]).max() / np.abs(reference[:, rows]).max())
            for rows in (slice(0, 4), slice(4, None))]


def images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)


@pytest.fixture(scope="module")
def small_model():
    return build_builtin("n", num_classes=3, imgsz=IMGSZ)


@pytest.fixture(scope="module")
def qdq_model(yolov8n, coco_dir):
    """The COCO-trained yolov8n in INT8 (a random-weight model's INT8 is noise that rounding differences swing)."""
    model, _ = run_pipeline(yolov8n.copy(),
                            f"fold-bn,cleanup,insert-qdq{{profile=openvino}},calibrate{{images={coco_dir},count=4}}")
    return model


@pytest.fixture(scope="module")
def float_ir(small_model, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ov") / "yolov8n-160.xml"
    return compile_model(small_model, output, RuntimeConfig(threads=2, inference_precision="f32"), quiet=True)


def test_float_ir_matches_ort_and_records_the_sidecar(small_model, float_ir):
    assert float_ir.exists() and float_ir.with_suffix(".bin").exists()
    sidecar = read_sidecar(float_ir)
    assert sidecar["runtime"] == {"device": "CPU", "threads": 2, "performance_hint": "LATENCY",
                                  "inference_precision": "f32", "cache_dir": None}
    assert sidecar["inference_precision"] == "f32"  # asked f32, and OpenVINO says it runs f32
    assert sidecar["openvino_version"].startswith(__import__("openvino").__version__.split("-")[0])
    assert len(sidecar["source_sha256"]) == 64 and sidecar["int8"] is False
    assert sidecar["inputs"] == [{"name": "images", "shape": [1, 3, IMGSZ, IMGSZ], "dtype": "float32"}]
    runner = load_runner(float_ir)
    assert runner.imgsz == (IMGSZ, IMGSZ) and runner.input_names == ["images"] and runner.threads == 2
    reference = OrtRunner(small_model, OrtOptions(threads=2))
    for seed in range(2):
        x = images(seed)
        assert max(group_errors(runner.predict(x), reference.predict(x))) < 1e-4


def test_default_precision_is_what_openvino_resolves(small_model, tmp_path):
    import openvino as ov

    xml = compile_model(small_model, tmp_path / "m.xml", RuntimeConfig(), quiet=True)
    expected = "bf16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    sidecar = read_sidecar(xml)
    assert sidecar["runtime"]["inference_precision"] is None and sidecar["inference_precision"] == expected
    assert load_runner(xml).inference_precision == expected


def coco_image(coco_dir, index: int = 40, size: int = 640) -> np.ndarray:
    from yolograph.evaluation.calibration_data import CalibrationSource

    return next(iter(CalibrationSource(images=str(coco_dir), range=f"{index}:{index + 1}").tensors((size, size))))


def test_qdq_ir_runs_integer_kernels_and_matches_ort(yolov8n, qdq_model, coco_dir, tmp_path):
    xml = compile_model(qdq_model, tmp_path / "int8.xml", RuntimeConfig(threads=2, inference_precision="f32"),
                        quiet=True)
    sidecar = read_sidecar(xml)
    assert sidecar["int8"] is True and sidecar["qdq_profile"] in ("openvino-w8", "openvino-w7")
    runner = type(load_runner(xml))(xml, perf_counts=True)
    reference = OrtRunner(qdq_model, OrtOptions(threads=2))
    float_reference = OrtRunner(yolov8n, OrtOptions(threads=2))
    x = coco_image(coco_dir)
    actual, expected, floating = runner.predict(x), reference.predict(x), float_reference.predict(x)
    # Both run the same integer graph: they differ only where a requantization rounds the other way
    # (measured: mean error 0.005 of the boxes, 0.04 of the class logits; each ~0.2 from the float model).
    for rows in (slice(0, 4), slice(4, None)):
        mean_error = np.abs(actual[:, rows] - expected[:, rows]).mean() / np.abs(expected[:, rows]).mean()
        assert mean_error < 0.1, mean_error
        # ... and OpenVINO's INT8 is no further from the float model than ONNX Runtime's.
        ov_drift = np.abs(actual[:, rows] - floating[:, rows]).mean()
        ort_drift = np.abs(expected[:, rows] - floating[:, rows]).mean()
        assert ov_drift <= 1.1 * ort_drift + 1e-6
    exec_types = {row["exec_type"] for row in runner.perf_counts() if row["type"] == "Convolution"}
    assert any("i8" in t.lower() or "u8" in t.lower() for t in exec_types), exec_types


def test_backend_registry_cli_flags_and_detection(small_model, float_ir, tmp_path):
    options = backend_options("openvino", {"threads": 2, "inference_precision": "f32", "target": "ignored"})
    assert options == OpenVinoOptions(threads=2, inference_precision="f32")
    assert detect_backend(float_ir) == "openvino"
    runner, imgsz = open_runner(str(float_ir))
    assert runner.backend == "openvino" and imgsz == (IMGSZ, IMGSZ)
    stats = runner.benchmark(runs=2, warmup=1)
    assert stats.runs == 2 and stats.median_ms > 0
    xml = compile_for_backend("openvino", small_model, tmp_path / "via-registry.xml", options)
    assert read_sidecar(xml)["runtime"]["threads"] == 2


def test_write_is_atomic_and_a_failed_compile_leaves_nothing(small_model, float_ir, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(BackendError, match="no NPU device|no GPU device"):
        compile_model(small_model, folder / "m.xml", RuntimeConfig(device="NPU"), quiet=True)
    assert list(folder.iterdir()) == []
    # Recompiling over an existing IR replaces all three files and leaves no temporary folder behind.
    xml = compile_model(small_model, folder / "m.xml", RuntimeConfig(threads=1), quiet=True)
    first = sidecar_path(xml).read_text()
    compile_model(small_model, folder / "m.xml", RuntimeConfig(threads=2), quiet=True)
    assert sorted(p.name for p in folder.iterdir()) == ["m.bin", "m.xml", "m.xml.json"]
    assert json.loads(first)["runtime"]["threads"] == 1 and read_sidecar(xml)["runtime"]["threads"] == 2


def test_bad_device_and_bad_output_are_one_line_errors(tmp_path):
    env_cmd = [sys.executable, "-m", "yolograph.cli", "compile", "yolov8n", "-p", "cleanup", "--backend", "openvino"]
    bad_device = subprocess.run([*env_cmd, "-o", str(tmp_path / "m.xml"), "--device", "GPU"],
                                capture_output=True, text=True)
    assert bad_device.returncode == 2 and "Traceback" not in bad_device.stderr
    assert bad_device.stderr.strip().splitlines()[-1].startswith("error: OpenVINO lists no GPU device")
    bad_suffix = subprocess.run([*env_cmd, "-o", str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert bad_suffix.returncode == 2 and "name the output with .xml" in bad_suffix.stderr
    assert not list(tmp_path.iterdir())


def test_cli_bench_and_eval_take_the_ir(float_ir, coco_dir):
    bench = subprocess.run([sys.executable, "-m", "yolograph.cli", "bench", str(float_ir), "--runs", "2", "--json"],
                           capture_output=True, text=True, check=True)
    assert json.loads(bench.stdout)["backend"] == "openvino"
    result = subprocess.run([sys.executable, "-m", "yolograph.cli", "eval", str(float_ir), "--data", str(coco_dir),
                             "--images", "0:2", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["images"] == 2


def test_runner_reads_foreign_models_with_openvino_defaults(small_model, tmp_path):
    from yolograph.ir.serialization import save_model

    onnx_path = save_model(small_model, tmp_path / "plain.onnx")
    runner = load_runner(onnx_path)
    assert runner.sidecar == {} and runner.config == RuntimeConfig()
    assert runner.run(images())[0].shape == (1, 7, (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2)


def test_a_broken_ir_is_one_readable_error(tmp_path):
    (tmp_path / "bad.xml").write_text("<net>")
    (tmp_path / "bad.bin").write_bytes(b"x")
    with pytest.raises(BackendError, match="cannot load .*bad.xml: Unable to read the model") as caught:
        load_runner(tmp_path / "bad.xml")
    assert "Exception from" not in str(caught.value) and "\n" not in str(caught.value)
    (tmp_path / "bad.bin").unlink()
    with pytest.raises(BackendError, match="weights .*bad.bin.* are missing"):
        load_runner(tmp_path / "bad.xml")
