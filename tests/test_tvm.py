"""TVM backend: target parsing, compile -> artifact -> runner equal to ORT, NHWC, lazy import, errors.

Compile tests use small graphs (the built-in yolov8n at 160x160, handmade Conv/SiLU/Concat graphs)
to stay fast; one test runs the real COCO yolov8n at 640. The analytic CPU schedules have their
own tests in test_tvm_cpu_schedules.py.
Tuning, RPC and INT8 live in test_tvm_tuning.py / test_tvm_int8.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

from graphs import make_model
from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.errors import BackendError, DataError

pytest.importorskip("tvm", reason="the tvm extra is not installed")  # optional dependency, not hardware

from yolograph.backends import tvm as ytvm  # noqa: E402
from yolograph.backends.tvm.target import parse_target  # noqa: E402


def assert_close_groups(actual: np.ndarray, reference: np.ndarray, rtol: float = 1e-3) -> None:
    """YOLO outputs: box rows (0-3) and class rows (4-) each within rtol * max|ref|."""
    groups = (slice(0, 4), slice(4, None)) if reference.ndim == 3 and reference.shape[1] > 4 else (slice(None),)
    for rows in groups:
        ref = reference[:, rows]
        err = float(np.abs(actual[:, rows] - ref).max())
        assert err <= rtol * float(np.abs(ref).max()), f"max error {err} exceeds {rtol} x {np.abs(ref).max()}"


def conv_silu_concat_model(channels: int = 8, size: int = 16):
    """x -> Conv3x3 -> SiLU -> [Conv1x1, MaxPool] -> Concat -> y (small, NHWC-convertible)."""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.normal(0, 0.3, (channels, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.3, channels).astype(np.float32),
        "w2": rng.normal(0, 0.3, (channels, channels, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Mul", ["c1", "s1"], ["a1"], name="mul1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2"),
        helper.make_node("MaxPool", ["a1"], ["p1"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c2", "p1"], ["y"], name="cat", axis=1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2 * channels, size, size])],
        inits,
    )


@pytest.fixture(scope="module")
def tuning_env(tmp_path_factory, monkeypatch_module):
    """Keep every compile of this module away from the user's tuning cache and the shipped records."""
    path = tmp_path_factory.mktemp("tvm-db")
    monkeypatch_module.setenv("YOLOGRAPH_TVM_TUNING_DB", str(path))
    monkeypatch_module.setenv("YOLOGRAPH_TVM_SHIPPED_RECORDS", "0")
    return path


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# -- target parsing ----------------------------------------------------------------------------


def test_target_strings_become_dicts():
    from yolograph.backends.tvm.target import CPU_FAST_MATH

    spec = parse_target("llvm -mcpu=znver3 -num-cores=2")
    assert spec == {"kind": "llvm", "mcpu": "znver3", "num-cores": 2, **CPU_FAST_MATH}
    assert parse_target("llvm -mcpu=znver3 -fast-math-reassoc=false")["fast-math-reassoc"] is False
    assert parse_target("cuda -arch=sm_90") == {"kind": "cuda", "arch": "sm_90"}
    assert parse_target("llvm -mtriple=aarch64-linux-gnu -mattr=+neon,+v8.2a")["mattr"] == ["+neon", "+v8.2a"]
    assert parse_target('{"kind": "llvm", "mcpu": "skylake"}')["mcpu"] == "skylake"


def test_bare_llvm_means_this_cpu():
    spec = parse_target(None)
    assert spec["kind"] == "llvm" and spec["mcpu"] not in ("", "generic") and spec["num-cores"] >= 1
    assert parse_target("llvm") == spec


def test_host_target_adds_the_dot_products_its_cpu_name_lacks():
    """A VM that presents an AMX Xeon as CPUID model 167 is 'rocketlake' to LLVM: no BF16, no AMX."""
    from yolograph.backends.tvm.target import missing_dot_product_features

    flags = frozenset({"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"})
    assert missing_dot_product_features("rocketlake", flags) == ["avx512bf16", "amx-tile", "amx-bf16"]
    assert missing_dot_product_features("sapphirerapids", flags) == []  # the name already says so
    assert missing_dot_product_features("znver3", frozenset({"avx2", "fma"})) == []
    assert missing_dot_product_features("rocketlake", None) == []  # flags unknown: trust the name


@pytest.mark.parametrize("text, words", [
    ("tpu", "Unknown TVM target kind"),
    ("llvm mcpu", "options look like -key=value"),
    ("llvm -mcpu=not-a-cpu-name -nonsense-option=3", "TVM rejects the target"),
    ("{not json", "not valid JSON"),
])
def test_bad_targets_raise_backend_error(text, words):
    with pytest.raises(BackendError, match=words):
        parse_target(text)


def test_import_is_lazy_and_missing_tvm_is_a_backend_error():
    code = ("import sys; import yolograph.backends.tvm as t; assert 'tvm' not in sys.modules, 'tvm imported';"
            "sys.modules['tvm'] = None\n"
            "from yolograph.errors import BackendError\n"
            "try:\n    t.compile_model(None, 'x.so')\nexcept BackendError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TVM is not installed; pip install 'yolograph[tvm]'" in result.stdout


def test_pinned_ffi_serializes_dtype_objects():
    """apache-tvm-ffi 0.1.15 segfaults in save_json on any object with a dtype; the pin must not."""
    from importlib.metadata import version

    from yolograph.backends.tvm.tune import check_serialization

    assert version("apache-tvm-ffi") == "0.1.14.post1"
    check_serialization()  # raises BackendError if the forked probe crashes


# -- compile / run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_yolo():
    from yolograph.frontends.builder import build_builtin

    return build_builtin("n", num_classes=3, imgsz=160)


@pytest.fixture(scope="module")
def small_artifact(small_yolo, tmp_path_factory, tuning_env):
    output = tmp_path_factory.mktemp("tvm") / "yolov8n-160.so"
    before = small_yolo.serialize()
    path = ytvm.compile_model(small_yolo, output, target="llvm")
    assert small_yolo.serialize() == before, "compile_model modified the input model"
    return path


def test_artifact_files_and_sidecar(small_artifact, small_yolo):
    assert small_artifact.exists()
    sidecar = json.loads(small_artifact.with_name(small_artifact.name + ".json").read_text())
    assert sidecar["format"] == "yolograph-tvm-artifact" and sidecar["target"]["kind"] == "llvm"
    assert sidecar["inputs"] == [{"name": "images", "shape": [1, 3, 160, 160], "dtype": "float32"}]
    assert sidecar["outputs"][0]["shape"] == [1, 7, 525]
    assert sidecar["imgsz"] == [160, 160] and "names" in sidecar["metadata"]
    assert sidecar["tuning"]["tasks"] > 10 and sidecar["tuning"]["tuned_tasks"] == 0
    assert ytvm.is_artifact(small_artifact)
    assert ytvm.is_artifact(small_artifact.with_name(small_artifact.name + ".json"))
    assert not any(p.name.endswith(".tmp") or p.name.startswith(".") for p in small_artifact.parent.iterdir())


def test_small_yolo_matches_ort(small_artifact, small_yolo):
    runner = ytvm.load_runner(small_artifact)
    assert runner.input_names == ["images"] and runner.imgsz == (160, 160)
    reference = OrtRunner(small_yolo, OrtOptions(threads=2))
    for seed in (0, 1):
        x = np.random.default_rng(seed).random((1, 3, 160, 160), dtype=np.float32)
        assert_close_groups(runner.predict(x), reference.predict(x))
    stats = runner.benchmark(runs=2, warmup=1)
    assert stats.backend == "tvm" and stats.runs == 2 and stats.median_ms > 0


def test_runner_rejects_wrong_input(small_artifact):
    runner = ytvm.load_runner(small_artifact)
    with pytest.raises(DataError, match="shape"):
        runner.run(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(DataError, match="Missing model inputs"):
        runner.run({"other": np.zeros((1, 3, 160, 160), np.float32)})


def test_not_an_artifact(tmp_path, yolov8n_path):
    assert not ytvm.is_artifact(yolov8n_path)
    assert not ytvm.is_artifact(tmp_path / "missing.so")
    with pytest.raises(BackendError, match="not a yolograph TVM artifact"):
        ytvm.load_runner(tmp_path / "missing.so")


def test_bad_output_name_and_options(tmp_path, tuning_env):
    model = conv_silu_concat_model()
    with pytest.raises(BackendError, match="shared library"):
        ytvm.compile_model(model, tmp_path / "model.onnx")
    with pytest.raises(BackendError, match="no QuantizeLinear"):
        ytvm.compile_model(model, tmp_path / "m.so", int8=True)
    with pytest.raises(BackendError, match="--rpc only"):
        ytvm.compile_model(model, tmp_path / "m.so", rpc="127.0.0.1:9190:x")
    with pytest.raises(BackendError, match="layout"):
        ytvm.compile_model(model, tmp_path / "m.so", layout="NCWH")
    assert not list(tmp_path.iterdir())


def test_nhwc_compiles_every_conv_in_nhwc(tmp_path, tuning_env):
    model = conv_silu_concat_model()
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    reference = OrtRunner(model, OrtOptions(threads=2)).run(x)[0]
    path = ytvm.compile_model(model, tmp_path / "nhwc.so", layout="NHWC")
    sidecar = json.loads((tmp_path / "nhwc.so.json").read_text())
    stats = sidecar["layout_stats"]
    assert sidecar["layout"] == "NHWC" and stats["conv2d"] == 2 and stats["conv2d_nhwc"] == 2
    assert isinstance(stats["layout_transforms_after"], int)
    assert_close_groups(ytvm.load_runner(path).run(x)[0], reference, rtol=1e-4)


def test_default_layout_is_nhwc_on_cpu_and_for_to_nhwc_models(tuning_env):
    from yolograph.backends.tvm.compile import resolve_options

    def layout(model, target):
        return resolve_options(model, target=target, tune_trials=0, tune_seconds=None, tuning_db=None, rpc=None,
                               layout=None, int8=None).layout

    model = conv_silu_concat_model()
    assert layout(model, "llvm") == "NHWC"  # the analytic CPU conv schedule is NHWC
    assert layout(model, "cuda -arch=sm_90") == "NCHW"
    model.metadata["yolograph.layout"] = "NHWC"
    assert layout(model, "cuda -arch=sm_90") == "NHWC"


def test_cuda_target_compiles_without_a_gpu(tmp_path, tuning_env):
    """Cross-compiling for CUDA needs only the toolkit; running it needs a GPU (checked separately)."""
    import tvm

    path = ytvm.compile_model(conv_silu_concat_model(), tmp_path / "cuda.so", target="cuda -arch=sm_90")
    sidecar = json.loads((tmp_path / "cuda.so.json").read_text())
    assert sidecar["target"] == {"kind": "cuda", "arch": "sm_90"} and sidecar["device"] == "cuda"
    if not tvm.cuda(0).exist:
        with pytest.raises(BackendError, match="no cuda device"):
            ytvm.load_runner(path)


@pytest.mark.slow
def test_real_yolov8n_matches_ort_on_random_and_real_images(yolov8n, coco_dir, tmp_path, tuning_env):
    from yolograph.evaluation import open_dataset
    from yolograph.evaluation.preprocess import preprocess_image

    path = ytvm.compile_model(yolov8n, tmp_path / "yolov8n.so")
    runner = ytvm.load_runner(path)
    reference = OrtRunner(yolov8n, OrtOptions(threads=2))
    image, _ = preprocess_image(open_dataset(coco_dir).image_paths[0], (640, 640))
    inputs = [np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32), image]
    for x in inputs:
        assert_close_groups(runner.predict(x), reference.predict(x))


def test_benchmark_script_smoke(tmp_path):
    """benchmarks/tvm.py --smoke runs every row (ORT, naive, analytic, tuned, MetaSchedule, INT8) on a tiny graph."""
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "tvm_backend.py"
    out = tmp_path / "tvm.json"
    result = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out), "--work", str(tmp_path / "w")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {"ort-fp32", "tvm-naive-nchw", "tvm-naive-nhwc", "tvm-analytic-exact-exp", "tvm-analytic", "tvm-tuned-20s",
            "tvm-metaschedule-b1", "ort-int8", "tvm-int8", "tvm-int8-fsim"} <= set(rows)
    assert rows["tvm-naive-nchw"]["analytic_conv_kernels"] == 0 and rows["tvm-naive-nchw"]["layout"] == "NCHW"
    assert rows["tvm-analytic"]["analytic_conv_kernels"] == 2 and rows["tvm-analytic"]["naive_conv_kernels"] == 0
    assert rows["tvm-analytic"]["fast_exp"]["sigmoid"] == 1 and not rows["tvm-analytic-exact-exp"]["fast_exp"]
    assert rows["tvm-tuned-20s"]["tuned_kernels"] > 0 and rows["tvm-tuned-20s"]["tuning_analytic"]["candidates"] > 0
    assert rows["tvm-metaschedule-b1"]["tuning_trials_run"] == 2
    for name, row in rows.items():
        if "error" in row and name != "tvm-int8-fsim":
            assert max(max(e.values()) for e in row["error"].values()) < 1e-3, name
    assert rows["tvm-int8"]["int8"]["integer_conv2d"] == 2
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert "| tvm-analytic |" in result.stdout
