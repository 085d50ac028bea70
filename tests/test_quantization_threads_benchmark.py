"""Smoke test of benchmarks/quantization_threads.py (the full sweep runs by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_thread_sweep_smoke(tmp_path):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "quantization_threads.py"
    spec = importlib.util.spec_from_file_location("quantization_threads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--smoke", "--threads", "1", "--out", str(tmp_path / "r.json")])
    (row,) = results["rows"]
    assert row["threads"] == 1 and row["fp32_median_ms"] > 0 and row["int8_median_ms"] > 0
    assert not (tmp_path / "r.json").exists()  # smoke runs never overwrite results
