"""INT8 quantization benchmark on the real yolov8n: accuracy, size, ORT CPU latency, calibration cost.

One run, side by side (issue 3): FP32; our pipelines with each calibration method and accuracy technique;
ONNX Runtime's quantize_static (all ops, and with the Detect decode excluded). Calibration on coco128
images 0-31, mAP50-95 / mAP50 on images 32-127, model size, and ORT CPU latency of every model with the
same thread count, each model timed alone in a fresh process, the models taking turns (ratio of
medians, and min/min); single-thread CPU time interleaved in one process (thread_time is not disturbed
by the other sessions). The default pipeline's calibration + quantization time and peak memory are
measured in a child process.

    python benchmarks/quantization.py            # full run, writes benchmarks/results/quantization.json
    python benchmarks/quantization.py --smoke    # 2 calibration images, 2 evaluation images, 3 variants
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from yolograph.runtime.timing import interleaved_times, isolated_times
from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.data import coco128, official_yolov8n
from yolograph.evaluation import predict_detections, resolve_dataset, score_detections
from yolograph.frontends import load_model
from yolograph.ir.model import Model
from yolograph.ir.serialization import write_bytes_atomic
from yolograph.pipeline import run_pipeline
from yolograph.evaluation.calibration_data import load_calibration_tensors

RESULTS = Path(__file__).resolve().parent / "results" / "quantization.json"
FLOAT_PREFIX = "fold-bn,cleanup,fast-dfl"


def our_variants(calib: str, count: int, smoke: bool) -> dict[str, str]:
    """Variant name -> pipeline text (all calibrate on the first `count` images of `calib`)."""
    data = f"images={calib},count={count}"

    def calibrate(method: str) -> str:
        return f"calibrate{{method={method},{data}}}"

    if smoke:
        return {"ours percentile": f"{FLOAT_PREFIX},insert-qdq,{calibrate('percentile')}"}
    return {
        "ours minmax": f"{FLOAT_PREFIX},insert-qdq,{calibrate('minmax')}",
        "ours percentile (default)": f"{FLOAT_PREFIX},insert-qdq,{calibrate('percentile')}",
        "ours entropy": f"{FLOAT_PREFIX},insert-qdq,{calibrate('entropy')}",
        "ours mse": f"{FLOAT_PREFIX},insert-qdq,{calibrate('mse')}",
        "ours percentile + bias-correction": f"{FLOAT_PREFIX},insert-qdq,bias-correction{{{data}}},{calibrate('percentile')}",
        "ours percentile + adaptive-rounding": f"{FLOAT_PREFIX},insert-qdq,adaptive-rounding{{{data}}},{calibrate('percentile')}",
        "ours minmax + bias-correction": f"{FLOAT_PREFIX},insert-qdq,bias-correction{{{data}}},{calibrate('minmax')}",
        "ours percentile + mixed-precision (<=3 float)": (
            f"{FLOAT_PREFIX},insert-qdq,mixed-precision{{budget=sqnr:25,max_float=3,{data},eval_range=0:8}},"
            f"{calibrate('percentile')}"),
        "ours percentile, SiLU as QLinearSigmoid+QLinearMul (tvm rules)": f"{FLOAT_PREFIX},insert-qdq{{profile=tvm}},{calibrate('percentile')}",
        "ours percentile, no fast-dfl": f"fold-bn,cleanup,insert-qdq,{calibrate('percentile')}",
        "ours percentile, first Conv float (speed option)": (
            f"{FLOAT_PREFIX},insert-qdq{{exclude=/model.0/conv/Conv}},{calibrate('percentile')}"),
    }


def ort_static(model: Model, calib: str, count: int, method: str, exclude_decode: bool) -> bytes:
    """ONNX Runtime's quantize_static: QDQ, per-channel, U8 activations / S8 weights."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.tensors = load_calibration_tensors(calib, count, 640)

        def get_next(self):
            tensor = next(self.tensors, None)
            return None if tensor is None else {"images": tensor}

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(model.serialize())
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method],
                        nodes_to_exclude=sorted(model.facts.decode_nodes) if exclude_decode else [])
        return target.read_bytes()


def measure_calibration_cost(calib: str, count: int) -> dict:
    """Wall time and peak memory (VmHWM: the child's own high-water mark, not inherited from this big
    process through fork) of the default pipeline: load, calibrate, quantize, save, in a child process."""
    code = (
        "import sys,time;from yolograph.frontends import load_model;from yolograph.pipeline import run_pipeline;"
        "from yolograph.quantization import default_int8_pipeline;from yolograph.ir.serialization import save_model;"
        f"m=load_model({str(official_yolov8n())!r});t=time.perf_counter();"
        f"q,_=run_pipeline(m,default_int8_pipeline({calib!r},count={count}));"
        "import tempfile,os;save_model(q,os.path.join(tempfile.mkdtemp(),'q.onnx'));"
        "hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
        "print(time.perf_counter()-t, int(hwm))"
    )
    env = dict(os.environ, YOLOGRAPH_PROGRESS="0")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    seconds, peak_kib = result.stdout.strip().splitlines()[-1].split()
    return {"seconds": round(float(seconds), 1), "peak_rss_mib": round(int(peak_kib) / 1024, 1), "images": count}


def output_sqnr(reference: bytes, candidate: bytes, data: str, images: str, threads: int) -> dict:
    """SQNR (dB) of the box rows and the score rows against FP32 over `images` (finer than mAP)."""
    from yolograph.pipeline.passes import sqnr_db

    ref_runner, new_runner = OrtRunner(reference, OrtOptions(threads=threads)), OrtRunner(candidate, OrtOptions(threads=threads))
    ref, new = [], []
    for tensor in load_calibration_tensors(data, None, 640, image_range=images):
        ref.append(ref_runner.predict(tensor))
        new.append(new_runner.predict(tensor))
    a, b = np.concatenate(ref), np.concatenate(new)
    def db(x: np.ndarray, y: np.ndarray) -> float | None:
        value = sqnr_db(x, y)
        return round(value, 2) if np.isfinite(value) else None  # None: identical outputs

    return {"boxes_db": db(a[:, :4], b[:, :4]), "scores_db": db(a[:, 4:], b[:, 4:])}


def paired_bootstrap(labels, shapes, detections, names, resamples: int, seed: int = 0) -> dict[str, list[float]]:
    """95% interval of the mAP50-95 drop (points, FP32 minus variant) over images resampled with replacement,
    the same resamples for FP32 and every variant (paired), to show what the evaluation set can resolve."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(resamples)]

    def scores(name: str) -> np.ndarray:
        return np.array([score_detections([labels[i] for i in idx], [detections[name][i] for i in idx],
                                          [shapes[i] for i in idx]).map50_95 for idx in draws])

    base = scores("fp32")
    return {name: [round(float(v), 2) for v in np.percentile((base - scores(name)) * 100, [2.5, 97.5])] for name in names}


def latency(models: dict[str, bytes], rounds: int, runs: int, threads: int) -> dict[str, dict]:
    """Median and min latency of every model, each timed alone in a fresh process per turn.

    Not interleaved in one process: alternating ORT sessions slow each other through their spinning
    thread pools (2 threads: FP32 34 ms interleaved, 27 ms alone).
    """
    with tempfile.TemporaryDirectory() as temp:
        paths = {}
        for index, (name, payload) in enumerate(models.items()):
            path = Path(temp) / f"model{index}.onnx"
            path.write_bytes(payload)
            paths[name] = ("ort", path)
        times = isolated_times(paths, rounds=rounds, runs=runs, threads=threads)
    base = times["fp32"]
    return {
        name: {
            "median_ms": round(float(np.median(t)), 2),
            "min_ms": round(float(np.min(t)), 2),
            "speedup_vs_fp32": round(float(np.median(base) / np.median(t)), 3),
            "speedup_vs_fp32_min": round(float(np.min(base) / np.min(t)), 3),
        }
        for name, t in times.items()
    }


def cpu_time_1thread(models: dict[str, bytes], rounds: int) -> dict[str, dict]:
    """Single-thread CPU time per inference (time.thread_time: ORT runs a 1-thread session on the calling
    thread), interleaved: the work each model does, much less sensitive to other jobs than wall time."""
    runners = {name: OrtRunner(data, OrtOptions(threads=1)) for name, data in models.items()}
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    times = interleaved_times({name: (lambda r=runner: r.predict(x)) for name, runner in runners.items()},
                              rounds=rounds, warmup=1, clock=time.thread_time)
    base = float(np.median(times["fp32"]))
    return {name: {"cpu_ms": round(float(np.median(t)), 2), "speedup_vs_fp32": round(base / float(np.median(t)), 3)}
            for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="latency turns: each model alone in a fresh process")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model and turn")
    parser.add_argument("--bootstrap", type=int, default=100, help="paired bootstrap resamples of the mAP drop")
    args = parser.parse_args(argv)
    calib_count, eval_range = (2, "32:34") if args.smoke else (32, "32:128")
    sqnr_range = "32:34" if args.smoke else "32:48"
    rounds, runs = (1, 2) if args.smoke else (args.rounds, args.runs)
    if args.smoke:
        args.bootstrap = 0
    data = str(coco128())
    print("[calibration cost]", file=sys.stderr, flush=True)
    cost = measure_calibration_cost(data, calib_count)
    float_model = load_model(official_yolov8n())

    models: dict[str, bytes] = {"fp32": float_model.serialize()}
    info: dict[str, dict] = {"fp32": {"pipeline": "original model"}}
    fast_dfl, _ = run_pipeline(float_model, FLOAT_PREFIX)
    models["fp32 + fast-dfl"] = fast_dfl.serialize()
    info["fp32 + fast-dfl"] = {"pipeline": FLOAT_PREFIX}
    for name, pipeline in our_variants(data, calib_count, args.smoke).items():
        print(f"[quantize] {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        quantized, report = run_pipeline(float_model, pipeline)
        info[name] = {"pipeline": pipeline.replace(data, "<coco128>"), "quantize_seconds": round(time.perf_counter() - start, 1),
                      "stats": {r.name: r.stats for r in report.records if r.name not in ("fold-bn", "cleanup")}}
        models[name] = quantized.serialize()
    ort_variants = [("minmax", True)] if args.smoke else [("minmax", False), ("minmax", True), ("percentile", True), ("entropy", True)]
    for method, exclude in ort_variants:
        name = f"ORT quantize_static {method}" + (", decode excluded" if exclude else ", all ops")
        print(f"[quantize] {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        models[name] = ort_static(float_model, data, calib_count, method, exclude)
        info[name] = {"pipeline": f"onnxruntime.quantization.quantize_static(QDQ, per_channel, U8S8, {method})",
                      "quantize_seconds": round(time.perf_counter() - start, 1)}

    dataset = resolve_dataset(data, eval_range)
    labels = [dataset.labels(i) for i in range(len(dataset))]
    detections: dict[str, list] = {}
    shapes: list = []
    for name, payload in models.items():
        print(f"[evaluate] {name}", file=sys.stderr, flush=True)
        runner = OrtRunner(payload, OrtOptions(threads=args.threads))
        detections[name], shapes = predict_detections(runner.predict, dataset.image_paths)
        result = score_detections(labels, detections[name], shapes)
        info[name].update({"map50_95": round(result.map50_95, 4), "map50": round(result.map50, 4),
                           "size_mib": round(len(payload) / 2**20, 2),
                           "output_sqnr": output_sqnr(models["fp32"], payload, data, sqnr_range, args.threads)})
    if args.bootstrap:
        print("[bootstrap]", file=sys.stderr, flush=True)
        chosen = [n for n in info if n.startswith("ours percentile") and "," not in n]
        for name, interval in paired_bootstrap(labels, shapes, detections, chosen, args.bootstrap).items():
            info[name]["map50_95_drop_points_95ci"] = interval
    print("[latency]", file=sys.stderr, flush=True)
    for name, stats in latency(models, rounds, runs, args.threads).items():
        info[name]["latency"] = stats
    print("[cpu time, 1 thread]", file=sys.stderr, flush=True)
    for name, stats in cpu_time_1thread(models, 3 if args.smoke else 20).items():
        info[name]["cpu_time_1thread"] = stats
    fp32_map = info["fp32"]["map50_95"]
    for entry in info.values():
        entry["map50_95_drop_points"] = round((fp32_map - entry["map50_95"]) * 100, 2)
    results = {
        "model": "yolov8n (shared/data/yolov8n.onnx)",
        "calibration": f"coco128 images 0:{calib_count}",
        "evaluation": f"coco128 images {eval_range}",
        "sqnr_images": f"coco128 images {sqnr_range}",
        "threads": args.threads,
        "latency_rounds": rounds,
        "latency_runs_per_round": runs,
        "latency_timing": "each model alone in a fresh process per turn",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "onnxruntime": __import__("onnxruntime").__version__,
        "default_pipeline_cost": cost,
        "variants": info,
        "smoke": args.smoke,
    }
    write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    print(markdown_table(results))
    return results


def markdown_table(results: dict) -> str:
    lines = ["| variant | mAP50-95 | mAP50 | drop (pt) | SQNR boxes / scores (dB) | size MiB | latency ms | "
             "speed-up vs FP32 (medians / min) | 1-thread CPU ms (speed-up) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, v in results["variants"].items():
        lat, sq = v["latency"], v["output_sqnr"]
        sqnr = " / ".join("exact" if v is None else f"{v:.1f}" for v in (sq["boxes_db"], sq["scores_db"]))
        lines.append(f"| {name} | {v['map50_95']:.4f} | {v['map50']:.4f} | {v['map50_95_drop_points']:+.2f} | {sqnr} | "
                     f"{v['size_mib']:.2f} | {lat['median_ms']:.1f} | {lat['speedup_vs_fp32']:.2f}x / "
                     f"{lat['speedup_vs_fp32_min']:.2f}x | {v['cpu_time_1thread']['cpu_ms']:.1f} "
                     f"({v['cpu_time_1thread']['speedup_vs_fp32']:.2f}x) |")
    cost = results["default_pipeline_cost"]
    lines.append("")
    for name, v in results["variants"].items():
        if "map50_95_drop_points_95ci" in v:
            low, high = v["map50_95_drop_points_95ci"]
            lines.append(f"- {name}: mAP50-95 drop {v['map50_95_drop_points']:+.2f} pt, paired-bootstrap 95% interval "
                         f"[{low:+.2f}, {high:+.2f}] pt")
    lines.append("")
    lines.append(f"Default pipeline calibration + quantization ({cost['images']} images): {cost['seconds']:.1f} s, "
                 f"peak memory (VmHWM) {cost['peak_rss_mib']:.0f} MiB.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
