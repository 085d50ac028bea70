"""ORT thread sweep: FP32 vs our default INT8 yolov8n, per thread count, each model timed alone.

The INT8/FP32 ratio depends on the thread setting; this records it for each setting. Every model is
timed in a fresh process per turn (yolograph.runtime.timing.isolated_times): two ORT sessions
alternating in one process slow each other through their spinning thread pools (2 threads: FP32
measured 34 ms that way, 28 ms alone), which once made two threads look slower than one here.

    python benchmarks/quantization_threads.py            # ~2 minutes, writes results/quantization_threads.json
    python benchmarks/quantization_threads.py --smoke    # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from yolograph.runtime.timing import isolated_times
from yolograph.data import coco128, official_yolov8n
from yolograph.frontends import load_model
from yolograph.ir.serialization import save_model, write_bytes_atomic
from yolograph.pipeline import run_pipeline
from yolograph.quantization import default_int8_pipeline

RESULTS = Path(__file__).resolve().parent / "results" / "quantization_threads.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rounds", type=int, default=4, help="turns: each model timed in a fresh process per turn")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model and turn")
    parser.add_argument("--threads", default="0,1,2", help="ORT intra-op thread counts (0: ORT's default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    count, rounds, runs = (2, 1, 2) if args.smoke else (32, args.rounds, args.runs)
    float_model = load_model(official_yolov8n())
    pipeline = default_int8_pipeline(str(coco128()), count)
    quantized, _ = run_pipeline(float_model, pipeline)
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        models = {"fp32": ("ort", Path(temp) / "fp32.onnx"), "int8": ("ort", Path(temp) / "int8.onnx")}
        save_model(float_model, models["fp32"][1])
        save_model(quantized, models["int8"][1])
        for threads in (int(t) for t in args.threads.split(",")):
            times = isolated_times(models, rounds=rounds, runs=runs, threads=threads)
            fp32, int8 = times["fp32"], times["int8"]
            rows.append({
                "threads": threads,
                "fp32_median_ms": float(np.median(fp32)),
                "int8_median_ms": float(np.median(int8)),
                "ratio_of_medians": float(np.median(fp32) / np.median(int8)),
            })
            print(f"threads={threads}: fp32 {rows[-1]['fp32_median_ms']:.1f} ms, int8 {rows[-1]['int8_median_ms']:.1f} ms, "
                  f"{rows[-1]['ratio_of_medians']:.2f}x")
    results = {"pipeline": pipeline.replace(str(coco128()), "<coco128>"), "rounds": rounds, "runs_per_round": runs,
               "timing": "each model alone in a fresh process per turn", "cpus": os.cpu_count(), "rows": rows}
    if not args.smoke:
        write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    return results


if __name__ == "__main__":
    main()
