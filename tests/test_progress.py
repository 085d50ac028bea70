"""Progress lines: on stderr only, off with YOLOGRAPH_PROGRESS=0 or --quiet, never in --json output."""

from __future__ import annotations

import json

import pytest

from yolograph import progress
from yolograph.cli import main


@pytest.fixture(autouse=True)
def _environment_decides(monkeypatch):
    progress.set_enabled(None)
    yield
    progress.set_enabled(None)


def test_track_yields_every_item_and_prints_nothing_when_off(monkeypatch, capsys):
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", "0")
    assert list(progress.track(range(5), "work")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_track_prints_on_stderr_when_on(monkeypatch, capsys):
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", "1")
    assert list(progress.track(iter(range(3)), "calibrate: images", total=3)) == [0, 1, 2]
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith("calibrate: images: 1/3 (")
    assert lines[-1].startswith("calibrate: images: 3/3 (")


def test_last_count_shown_when_the_iterator_ends_early(monkeypatch, capsys):
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", "yes")
    list(progress.track(iter(range(4)), "eval", total=10))
    assert capsys.readouterr().err.splitlines()[-1].startswith("eval: 4/10 (")


@pytest.mark.parametrize("value", ["0", "false", "off", "No", ""])
def test_environment_off_values(monkeypatch, value):
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", value)
    assert not progress.enabled()


def test_set_enabled_overrides_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", "1")
    progress.set_enabled(False)
    list(progress.track(range(3), "quiet"))
    assert capsys.readouterr().err == ""
    progress.set_enabled(None)
    assert progress.enabled()


def _bench(args, monkeypatch, capsys, model):
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", "1")
    code = main([*args, "bench", str(model), "--runs", "3", "--warmup", "0", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out), captured.err  # stdout is exactly the JSON document


def test_cli_json_stdout_stays_clean_while_progress_goes_to_stderr(monkeypatch, capsys, yolov8n_path):
    stats, err = _bench([], monkeypatch, capsys, yolov8n_path)
    assert stats["runs"] == 3
    assert "bench ort: 3/3" in err


def test_cli_quiet_silences_progress(monkeypatch, capsys, yolov8n_path):
    stats, err = _bench(["--quiet"], monkeypatch, capsys, yolov8n_path)
    assert stats["runs"] == 3
    assert "bench" not in err
    assert progress.enabled()  # --quiet lasts for that command only


def test_quiet_after_the_command_name_works_too(monkeypatch, capsys, yolov8n_path):
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", "1")
    assert main(["bench", str(yolov8n_path), "--runs", "2", "--warmup", "0", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["runs"] == 2 and "bench" not in captured.err


def test_calibration_progress_goes_to_stderr_not_into_compile_json(monkeypatch, capsys, tmp_path, coco_dir):
    from yolograph.frontends.builder import build_builtin
    from yolograph.ir.serialization import save_model

    model = tmp_path / "small.onnx"
    save_model(build_builtin("n", num_classes=3, imgsz=160), model)
    monkeypatch.setenv("YOLOGRAPH_PROGRESS", "1")
    code = main(["compile", str(model), "--target", "ort-int8", "--data", str(coco_dir), "--calib-images", "0:2",
                 "-o", str(tmp_path / "int8.onnx"), "--bench", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["target"] == "ort-int8"
    assert "calibrate" in captured.err and "2/2" in captured.err  # calibration images, then the bench runs
