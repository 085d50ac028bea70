"""The quantization benchmark's --smoke mode runs end to end and writes well-formed results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "quantization.py"


@pytest.mark.slow
def test_quantization_benchmark_smoke(tmp_path, coco_dir):
    out = tmp_path / "quantization.json"
    env = dict(os.environ, YOLOGRAPH_PROGRESS="0")
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    variants = results["variants"]
    assert {"fp32", "fp32 + fast-dfl", "ours percentile", "ORT quantize_static minmax, decode excluded"} <= set(variants)
    for entry in variants.values():
        assert 0.0 <= entry["map50_95"] <= 1.0 and entry["latency"]["median_ms"] > 0
    # INT8 weights: the quantized model is well under half the fp32 size.
    assert variants["ours percentile"]["size_mib"] < variants["fp32"]["size_mib"] / 2
    assert results["default_pipeline_cost"]["seconds"] > 0 and results["default_pipeline_cost"]["peak_rss_mib"] > 100
    assert "| ours percentile |" in done.stdout
