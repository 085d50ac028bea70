"""ORT thread sweep: FP32 vs our default INT8 yolov8n, interleaved in one run, per thread count.

On a small VM two intra-op threads can be slower than one (shared physical core, spin waits), so the
INT8/FP32 ratio depends on the thread setting; this records it for each setting side by side.

    python benchmarks/quantization_threads.py            # ~2 minutes, writes results/quantization_threads.json
    python benchmarks/quantization_threads.py --smoke    # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from yolograph.backends.benchmark import interleaved_times
from yolograph.backends.ort import OrtOptions, OrtRunner
from yolograph.data import coco128, official_yolov8n
from yolograph.frontends import load_model
from yolograph.ir.serialization import write_bytes_atomic
from yolograph.pipeline import run_pipeline
from yolograph.quantization import default_int8_pipeline

RESULTS = Path(__file__).resolve().parent / "results" / "quantization_threads.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", default="0,1,2", help="ORT intra-op thread counts (0: ORT's default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    count, rounds = (2, 2) if args.smoke else (32, args.rounds)
    float_model = load_model(official_yolov8n())
    pipeline = default_int8_pipeline(str(coco128()), count)
    quantized, _ = run_pipeline(float_model, pipeline)
    feed = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        options = OrtOptions(threads=threads)
        runners = {"fp32": OrtRunner(float_model, options), "int8": OrtRunner(quantized, options)}
        times = interleaved_times({name: (lambda r=runner: r.run(feed)) for name, runner in runners.items()},
                                  rounds=rounds, warmup=1 if args.smoke else 5)
        fp32, int8 = times["fp32"], times["int8"]
        rows.append({
            "threads": threads,
            "fp32_median_ms": float(np.median(fp32)),
            "int8_median_ms": float(np.median(int8)),
            "median_of_round_ratios": float(np.median(fp32 / int8)),
            "ratio_of_medians": float(np.median(fp32) / np.median(int8)),
        })
        print(f"threads={threads}: fp32 {rows[-1]['fp32_median_ms']:.1f} ms, int8 {rows[-1]['int8_median_ms']:.1f} ms, "
              f"{rows[-1]['median_of_round_ratios']:.2f}x (median of rounds), {rows[-1]['ratio_of_medians']:.2f}x (medians)")
    results = {"pipeline": pipeline.replace(str(coco128()), "<coco128>"), "rounds": rounds, "cpus": os.cpu_count(),
               "rows": rows}
    if not args.smoke:
        write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    return results


if __name__ == "__main__":
    main()
