"""Bad inputs through the CLI: each gives one `error:` line naming the problem, exit code 2, no traceback,
no file written and the input unchanged (by hash).

Corpus kinds: corrupt / truncated / non-YOLO / unfixably dynamic / old-opset / custom-op / NaN-weight /
rank-3 / unsafe models, broken pipelines, bad options, missing or corrupt calibration data, odd output
paths, and an internal error (a bug) which points to --debug.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yolograph.cli import main
from yolograph.testing.random_graphs import random_onnx


def _save(path: Path, nodes, inputs, outputs, inits=None, opset: int = 17, extra_opsets=()) -> Path:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets[:1]))
    onnx.save(proto, str(path))
    return path


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _conv_model(path: Path, weight: np.ndarray, input_shape=(1, 3, 8, 8)) -> Path:
    out = [input_shape[0], weight.shape[0], *input_shape[2:]] if len(input_shape) == 4 else None
    return _save(path, [helper.make_node("Conv", ["images", "w"], ["y"], kernel_shape=[1, 1])],
                 [_float("images", list(input_shape))], [_float("y", out)], {"w": weight})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixtures_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    good = fixtures_dir / "yolov8n-rand.onnx"
    data = good.read_bytes()
    files = {"good": good}
    (root / "corrupt.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (root / "empty.onnx").write_bytes(b"")
    onnx.save(random_onnx(3), str(root / "non_yolo.onnx"))  # a 4-channel CNN without a YOLO head
    relu = [helper.make_node("Relu", ["images"], ["y"])]
    _save(root / "dynamic.onnx", relu, [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", "c", "h", "w"])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])])
    _save(root / "old_opset.onnx", relu, [_float("images", [1, 3, 8, 8])], [_float("y", [1, 3, 8, 8])], opset=9)
    _save(root / "custom_op.onnx", [helper.make_node("FancyOp", ["images"], ["y"], domain="com.example")],
          [_float("images", [1, 3, 8, 8])], [_float("y", [1, 3, 8, 8])], extra_opsets=[helper.make_opsetid("com.example", 1)])
    weight = np.ones((4, 3, 1, 1), np.float32)
    weight[0, 0, 0, 0] = np.nan
    _conv_model(root / "nan_weights.onnx", weight)
    weight = np.ones((4, 3, 1, 1), np.float32)
    weight[1, 1, 0, 0] = np.inf
    _conv_model(root / "inf_weights.onnx", weight)
    _save(root / "rank3.onnx", relu, [_float("images", [3, 8, 8])], [_float("y", [3, 8, 8])])
    (root / "model.txt").write_text("not a model")
    (root / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(root / "wrong_shape.npy", np.zeros((1, 3, 32, 32), np.float32))
    (root / "empty_images").mkdir()
    (root / "corrupt_images").mkdir()
    for index in range(2):
        (root / "corrupt_images" / f"{index}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "a_file").write_text("x")
    (root / "a_folder").mkdir()
    for path in root.iterdir():
        files[path.stem if path.is_file() else path.name] = path
    files["root"] = root
    files["malicious"] = fixtures_dir / "malicious.pt"
    return files


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _fill(arg: str, corpus: dict[str, Path], out: Path) -> str:
    """Put the corpus paths into `{name}` placeholders (plain replace: pipelines have braces of their own)."""
    for name, path in {**corpus, "out": out}.items():
        arg = arg.replace("{" + name + "}", str(path))
    return arg


def run_bad(capsys, tmp_path, corpus, argv: list[str], match: str) -> str:
    """main(argv) inside tmp_path must fail cleanly, write nothing and leave the corpus and the good model alone."""
    inputs_before = _tree(corpus["root"])
    good_before = hashlib.sha256(corpus["good"].read_bytes()).hexdigest()
    out_before = _tree(tmp_path)
    code = main([_fill(a, corpus, tmp_path) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    assert match.lower() in lines[0].lower(), lines[0]
    assert _tree(tmp_path) == out_before, "something was written"
    assert _tree(corpus["root"]) == inputs_before, "an input was modified"
    assert hashlib.sha256(corpus["good"].read_bytes()).hexdigest() == good_before
    return lines[0]


MODEL_CASES = {
    "corrupt": ("{corrupt}", "not a readable ONNX file"),
    "truncated": ("{truncated}", "not a readable ONNX file"),
    "empty file": ("{empty}", "onnx"),
    "dynamic (no imgsz to fix it)": ("{dynamic}", "dynamic"),
    "old opset": ("{old_opset}", "opset 9"),
    "custom op": ("{custom_op}", "custom operator"),
    "NaN weights": ("{nan_weights}", "NaN"),
    "Inf weights": ("{inf_weights}", "Inf"),
    "rank-3 image input": ("{rank3}", "rank 3"),
    "unsupported file type": ("{model}", "unsupported file type"),
    "missing file": ("{out}/missing.onnx", "does not exist"),
    "unsafe checkpoint": ("{malicious}", "refused"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_through_compile(capsys, tmp_path, corpus, case):
    model, match = MODEL_CASES[case]
    run_bad(capsys, tmp_path, corpus, ["compile", model, "-p", "fold-bn", "-o", "{out}/out.onnx"], match)


@pytest.mark.parametrize("command", [["inspect"], ["bench", "--runs", "1"]])
def test_bad_model_through_other_commands(capsys, tmp_path, corpus, command):
    run_bad(capsys, tmp_path, corpus, [*command, "{truncated}"], "not a readable ONNX file")


def test_quantizing_a_nan_model_is_refused_before_anything_is_written(capsys, tmp_path, corpus, coco_dir):
    run_bad(capsys, tmp_path, corpus, ["compile", "{nan_weights}", "-o", "{out}/q.onnx", "-p",
                                       f"insert-qdq{{profile=ort-cpu}},calibrate{{images={coco_dir},range=0:2}}"], "NaN")


def test_non_yolo_model_with_calibration_images(capsys, tmp_path, corpus, coco_dir):
    line = run_bad(capsys, tmp_path, corpus, ["compile", "{non_yolo}", "-o", "{out}/q.onnx", "-p",
                                              f"insert-qdq{{profile=ort-cpu}},calibrate{{images={coco_dir},range=0:2}}"],
                   "3 channels")
    assert "npy=" in line


def test_non_yolo_model_through_eval(capsys, tmp_path, corpus, coco_dir):
    run_bad(capsys, tmp_path, corpus, ["eval", "{non_yolo}", "--data", str(coco_dir), "--images", "0:2"], "cannot run")


PIPELINE_CASES = {
    "unknown pass": ("no-such-pass", "no-such-pass"),
    "unbalanced braces": ("fold-bn{", "fold-bn"),
    "unknown option": ("fold-bn{x=1}", "x"),
    "option out of range": ("prune{macs=1.5}", "macs"),
    "calibrate without its data": ("calibrate", "calibration data"),
    "an order that cannot work": ("fold-bn,prune{criterion=bn-gamma,reconstruct=none,ratio=0.3}", "fold-bn"),
    "empty pipeline": ("", "pipeline"),
}


@pytest.mark.parametrize("case", list(PIPELINE_CASES))
def test_broken_pipeline(capsys, tmp_path, corpus, case):
    pipeline, match = PIPELINE_CASES[case]
    run_bad(capsys, tmp_path, corpus, ["compile", "{good}", "-p", pipeline, "-o", "{out}/out.onnx"], match)


OPTION_CASES = {
    "bench --runs 0": (["bench", "{good}", "--runs", "0"], "--runs"),
    "bench --runs -5": (["bench", "{good}", "--runs", "-5"], "--runs"),
    "bench --runs abc": (["bench", "{good}", "--runs", "abc"], "--runs"),
    "bench --warmup -1": (["bench", "{good}", "--warmup", "-1"], "--warmup"),
    "bench --threads -2": (["bench", "{good}", "--threads", "-2"], "--threads"),
    "compile --bench -1": (["compile", "{good}", "-p", "cleanup", "-o", "{out}/o.onnx", "--bench", "-1"], "--bench"),
    "unknown backend": (["compile", "{good}", "-p", "cleanup", "-o", "{out}/o.onnx", "--backend", "nope"], "--backend"),
    "unknown flag": (["inspect", "{good}", "--no-such-flag"], "--no-such-flag"),
    "unknown command": (["frobnicate"], "frobnicate"),
    "missing -o": (["compile", "{good}", "-p", "cleanup"], "-o"),
    "verify input missing": (["compile", "{good}", "-p", "cleanup", "-o", "{out}/o.onnx", "--verify",
                              "--verify-input", "{out}/none.npy"], "verification input"),
    "verify input corrupt": (["compile", "{good}", "-p", "cleanup", "-o", "{out}/o.onnx", "--verify",
                              "--verify-input", "{bad}"], "verification input"),
    "verify input wrong shape": (["compile", "{good}", "-p", "cleanup", "-o", "{out}/o.onnx", "--verify",
                                  "--verify-input", "{wrong_shape}"], "shape"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_options(capsys, tmp_path, corpus, case):
    argv, match = OPTION_CASES[case]
    run_bad(capsys, tmp_path, corpus, argv, match)


CALIBRATION_CASES = {
    "no calibration data": ("calibrate", "images="),
    "missing folder": ("calibrate{images={out}/no_such_dir,count=2}", "no_such_dir"),
    "empty folder": ("calibrate{images={empty_images},count=2}", "empty_images"),
    "corrupt images": ("calibrate{images={corrupt_images},count=2}", "corrupt_images"),
    "corrupt npy": ("calibrate{npy={bad}}", "bad.npy"),
}


@pytest.mark.parametrize("case", list(CALIBRATION_CASES))
def test_missing_or_corrupt_calibration_data(capsys, tmp_path, corpus, case):
    calibrate, match = CALIBRATION_CASES[case]
    run_bad(capsys, tmp_path, corpus, ["compile", "{good}", "-o", "{out}/q.onnx", "-p",
                                       "insert-qdq{profile=ort-cpu}," + calibrate], match)


OUTPUT_CASES = {
    "-o an existing folder": (["-o", "{a_folder}"], "existing folder"),
    "-o under a file": (["-o", "{a_file}/out.onnx"], "not a folder"),
    "-o the input model": (["-o", "{good}"], "input model"),
    "-o not .onnx for ort": (["-o", "{out}/out.txt"], ".onnx"),
    "--report an existing folder": (["-o", "{out}/o.onnx", "--report", "{a_folder}"], "--report"),
    "--report under a file": (["-o", "{out}/o.onnx", "--report", "{a_file}/r.json"], "--report"),
    "--dump-dir a file": (["-o", "{out}/o.onnx", "--dump-dir", "{a_file}"], "--dump-dir"),
    "--dump-dir under a file": (["-o", "{out}/o.onnx", "--dump-dir", "{a_file}/dumps"], "--dump-dir"),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_odd_output_paths(capsys, tmp_path, corpus, case):
    extra, match = OUTPUT_CASES[case]
    run_bad(capsys, tmp_path, corpus, ["compile", "{good}", "-p", "cleanup", *extra], match)


def test_odd_plot_paths(capsys, tmp_path, corpus):
    run_bad(capsys, tmp_path, corpus, ["diff", "{good}", "{good}", "--plot", "{a_folder}"], "--plot")


def test_atomic_writer_refuses_a_folder_with_a_typed_error(tmp_path):
    from yolograph.errors import OutputError
    from yolograph.ir.serialization import write_bytes_atomic

    with pytest.raises(OutputError, match="existing folder"):
        write_bytes_atomic(tmp_path, b"data")
    assert list(tmp_path.iterdir()) == []


def test_internal_error_is_one_line_pointing_to_debug(capsys, tmp_path, corpus, monkeypatch):
    import yolograph.inspection.summary as summary

    def broken(model):
        raise KeyError("a bug")

    monkeypatch.setattr(summary, "summarize", broken)
    line = run_bad(capsys, tmp_path, corpus, ["inspect", "{good}"], "internal error KeyError")
    assert "--debug" in line
    assert main(["--debug", "inspect", str(corpus["good"])]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and err.strip().splitlines()[-1].startswith("error: ")
    assert main(["inspect", str(corpus["good"]), "--debug"]) == 2  # after the command too
    assert "Traceback" in capsys.readouterr().err


def test_head_aware_pass_on_a_non_yolo_model_warns_in_one_line_and_still_runs(capsys, tmp_path, corpus):
    code = main(["compile", str(corpus["non_yolo"]), "-p", "fold-bn,insert-qdq{profile=ort-cpu}",
                 "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "insert-qdq" in warnings[0] and "YOLO head" in warnings[0]
    assert (tmp_path / "q.onnx").is_file()
