"""The CPU INT8 benchmark's --smoke mode runs end to end (NNCF anchor included) and writes well-formed results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "cpu_int8.py"


@pytest.mark.slow
def test_cpu_int8_benchmark_smoke(tmp_path, coco_dir):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    pytest.importorskip("nncf", reason="nncf (benchmark-only) is not installed")
    out = tmp_path / "cpu_int8.json"
    env = dict(os.environ, YOLOGRAPH_PROGRESS="0")
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    rows = results["models"]["yolov8n"]["rows"]
    assert len(rows) == 9
    for name, row in rows.items():
        assert row["median_ms"] > 0 and len(row["round_medians_ms"]) == 1, name
        assert 0.0 <= row["map50_95"] <= 1.0 and row["images"] == 2, name
    assert rows["yolograph INT8 openvino profile, OpenVINO backend"]["inference_precision"] in ("f32", "bf16", "f16")
    assert set(results["targets"]) == {"best_int8_vs_nncf", "ort_int8_vs_ort_float", "openvino_backend_float_vs_plain"}
    assert "| NNCF INT8 (mixed, decode ignored), OpenVINO |" in done.stdout
