"""CLI happy paths and error paths: one clear line and exit code 2 for user errors."""

from __future__ import annotations

import json

import pytest

from yolograph.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inspect_json_on_official_model(capsys, yolov8n_path):
    code, out, _ = run_cli(capsys, "inspect", str(yolov8n_path), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["ops"]["Conv"] == 64
    assert data["params"] == 3151904  # ultralytics reports 3,151,904 for fused yolov8n
    assert round(data["gmacs"] * 2, 1) == 8.7  # 8.7 GFLOPs
    assert data["yolo"]["num_classes"] == 80 and data["yolo"]["reg_max"] == 16
    assert data["outputs"][0]["shape"] == [1, 84, 8400]


def test_passes_lists_contracts(capsys):
    code, out, _ = run_cli(capsys, "passes")
    assert code == 0
    assert "fold-bn" in out and "equal within 0.0001 relative" in out


def test_compile_writes_valid_onnx_and_report(capsys, tmp_path, yolov8n_path):
    out_path, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    code, out, _ = run_cli(capsys, "compile", str(yolov8n_path), "-p", "fold-bn,cleanup", "-o", str(out_path),
                           "--verify", "--report", str(report_path))
    assert code == 0, out
    import onnx

    onnx.checker.check_model(str(out_path))
    report = json.loads(report_path.read_text())
    assert [p["name"] for p in report["passes"]] == ["fold-bn", "cleanup"]
    assert all(p["verified"] == "ok" for p in report["passes"])


def test_diff_reports_op_changes(capsys, tmp_path, fixtures_dir):
    out_path = tmp_path / "folded.onnx"
    unfused = str(fixtures_dir / "yolov8n-rand-bn.onnx")
    assert main(["compile", unfused, "-p", "fold-bn", "-o", str(out_path)]) == 0
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "diff", unfused, str(out_path), "--json")
    data = json.loads(out)
    assert code == 0 and data["ops"]["BatchNormalization"] == -57
    assert data["params"]["delta"] < 0 and data["macs"]["delta"] == 0


def test_diff_shows_and_draws_pruned_widths(capsys, tmp_path, yolov8n_path):
    pruned = tmp_path / "pruned.onnx"
    assert main(["compile", str(yolov8n_path), "-p", "prune{ratio=0.2,criterion=l1,reconstruct=none}",
                 "-o", str(pruned)]) == 0
    capsys.readouterr()
    plot = tmp_path / "widths.png"
    code, out, _ = run_cli(capsys, "diff", str(yolov8n_path), str(pruned), "--json", "--plot", str(plot))
    widths = json.loads(out)["conv_channels"]
    assert code == 0 and len(widths) == 64
    narrower = {name: w for name, w in widths.items() if w[1] < w[0]}
    assert narrower and all(after > 0 for _, after in widths.values())
    assert widths["/model.22/cv3.0/cv3.0.2/Conv"] == [80, 80]  # class channels are never pruned
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run_cli(capsys, "diff", str(yolov8n_path), str(pruned))
    assert f"widths  {len(narrower)} of 64 convs changed" in out


def test_bench_json_keys(capsys, yolov8n_path):
    code, out, _ = run_cli(capsys, "bench", str(yolov8n_path), "--runs", "2", "--warmup", "1", "--json")
    data = json.loads(out)
    assert code == 0 and data["runs"] == 2 and data["median_ms"] > 0 and data["p90_ms"] >= data["median_ms"] * 0.5


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["inspect", "missing.onnx"], "does not exist"),
        (["inspect", "model.txt"], "does not exist"),
        (["compile", "-p", "fold-bm", "-o", "x.onnx"], "Unknown pass 'fold-bm'"),
        (["compile", "-p", "cleanup{fast=true}", "-o", "x.onnx"], "has no option 'fast'"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, args, fragment):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_corrupt_onnx_is_a_clear_error(capsys, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not protobuf" * 10)
    code, _, err = run_cli(capsys, "inspect", str(corrupt))
    assert code == 2 and "corrupt.onnx" in err and "Traceback" not in err


def test_truncated_onnx_is_a_clear_error(capsys, tmp_path, yolov8n_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(yolov8n_path.read_bytes()[:100_000])
    code, _, err = run_cli(capsys, "inspect", str(truncated))
    assert code == 2 and "truncated.onnx" in err


def test_compile_never_overwrites_input_and_leaves_no_partial_file(capsys, tmp_path, yolov8n_path):
    import shutil

    copy = tmp_path / "model.onnx"
    shutil.copy(yolov8n_path, copy)
    before = copy.read_bytes()
    code, _, err = run_cli(capsys, "compile", str(copy), "-p", "cleanup", "-o", str(copy))
    assert code == 2 and "overwrite" in err
    assert copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def _dynamic_model(path, dims):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["y"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_dynamic_shape_is_fixed_where_it_can_be_and_refused_where_not(capsys, tmp_path):
    batch_only = _dynamic_model(tmp_path / "batch.onnx", ["batch", 3, 640, 640])
    code, out, err = run_cli(capsys, "inspect", str(batch_only))
    assert code == 0 and "float32[1,3,640,640]" in out and err.count("note:") == 1
    unknown_size = _dynamic_model(tmp_path / "size.onnx", ["batch", 3, "h", "w"])
    code, _, err = run_cli(capsys, "inspect", str(unknown_size))
    assert code == 2 and "dynamic" in err and "--input-shape" in err and "dynamic=False" in err
    code, out, _ = run_cli(capsys, "inspect", str(unknown_size), "--input-shape", "1,3,320,320")
    assert code == 0 and "float32[1,3,320,320]" in out


def test_unsupported_opset_is_refused(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "old.onnx"
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    proto.ir_version = 8
    onnx.save(proto, path)
    code, _, err = run_cli(capsys, "inspect", str(path))
    assert code == 2 and "opset 11" in err


def test_compile_compares_accuracy_and_latency(capsys, tmp_path, yolov8n_path, coco_dir):
    code, out, _ = run_cli(capsys, "compile", str(yolov8n_path), "-p", "cleanup", "-o", str(tmp_path / "o.onnx"),
                           "--bench", "3", "--eval-data", str(coco_dir), "--eval-images", "32:36", "--json")
    comparison = json.loads(out)["comparison"]
    assert code == 0 and comparison["images"] == 4
    # cleanup is numerically equal: the same detections, so the same mAP.
    assert comparison["map_drop_points"] == pytest.approx(0.0, abs=1e-6)
    assert comparison["speedup"] > 0


def test_inspect_prune_groups_and_trt_readiness(capsys, yolov8n_path):
    code, out, _ = run_cli(capsys, "inspect", str(yolov8n_path), "--prune-groups", "--target", "trt", "--json")
    data = json.loads(out)
    assert code == 0
    assert len(data["prune_groups"]) > 50 and any(g["prunable"] for g in data["prune_groups"])
    assert data["trt_findings"] == []  # a float graph has nothing TensorRT would reject


def test_trt_readiness_flags_asymmetric_quantization(capsys, tmp_path, yolov8n_path, coco_dir):
    out_path = tmp_path / "ort.onnx"
    pipeline = f"cleanup,insert-qdq{{profile=ort-cpu}},calibrate{{images={coco_dir},count=1}}"
    assert main(["compile", str(yolov8n_path), "-p", pipeline, "-o", str(out_path)]) == 0
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "inspect", str(out_path), "--target", "trt")
    assert code == 0 and "zero point" in out.lower()


def test_sensitivity_command_writes_table_json_and_plot(capsys, tmp_path, yolov8n_path, coco_dir):
    plot = tmp_path / "sensitivity.png"
    code, out, _ = run_cli(capsys, "sensitivity", str(yolov8n_path), "--data", str(coco_dir), "--images", "0:1",
                           "--plot", str(plot), "--json")
    assert code == 0 and plot.stat().st_size > 10_000
    data = json.loads(out)
    assert json.dumps(data).count("/model.") >= 60  # one row per quantized Conv
