"""TensorRT verification on a GPU machine: latency, INT8 layer report and mAP, in one run.

What it does (issue "TensorRT backend", section "Verification on a GPU"):

1. Runs our pipelines on yolov8n: float = `fold-bn,cleanup`; INT8 = the same plus
   `insert-qdq{profile=trt},calibrate{...}` on coco128 images 0-31; FP16 = float + `to-fp16`; best =
   INT8 + `to-fp16` (INT8 convs, float16 elsewhere, written in the graph). Every graph must pass the
   TensorRT readiness check (target trt on TensorRT 10, trt11 on 11) with zero findings.
2. Builds, each with batch profiles 1 and 8, sharing one timing cache: on TensorRT 10 the builder-flag
   engines (fp16, int8 with FP16 fallback: today's path) and, on both majors, the strongly typed ones
   (fp16_strong from the to-fp16 graph, int8_strong from the Q/DQ graph, best_strong from INT8 +
   to-fp16). TensorRT 11 has only the strongly typed ones.
3. GPU latency of each engine at batch 1 and 8: median (and p90) over >= 200 timed runs after warm-up,
   GPU work only (inputs resident on the device), plus the host-to-host time for context.
4. mAP50-95 on coco128 images 32-127 of every engine and, on ONNX Runtime CPU, of the graphs they
   were built from (float, INT8, FP16, INT8+FP16).
5. The INT8 layer report from the engine inspector: every Conv the Q/DQ graph quantizes must run in
   INT8; Convs the profile keeps float are listed.
6. Writes benchmarks/results/tensorrt_<gpu>.json and prints a Markdown table, with the targets:
   INT8 batch-1 median <= 0.6 ms (judged on an H100 only), INT8 engine mAP within 0.3 points of ORT
   INT8 (and the best engine within 0.3 points of ORT INT8+FP16), the INT8 layer reports clean.

Run from the repository root on a machine with an NVIDIA GPU, TensorRT 10 or 11 and cuda-python
(`pip install -e '.[tensorrt,test]'`):

    python benchmarks/tensorrt_gpu.py               # about 5-10 minutes on an H100
    python benchmarks/tensorrt_gpu.py --runs 500 --int8-fp32   # also an INT8 engine with FP32 fallback

Exit code 0 when every judged target is met, 1 when one is missed, 2 when there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_INT8_B1_MS_H100 = 0.6
TARGET_MAP_POINTS = 0.3  # mAP50-95 points, i.e. 0.003 on the 0-1 scale


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from yolograph.data import coco128, official_yolov8n

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(official_yolov8n()), help="model (default: the COCO-trained yolov8n)")
    p.add_argument("--data", default=str(coco128()), help="coco128 dataset root")
    p.add_argument("--calib", default="0:32", help="calibration images (index range)")
    p.add_argument("--images", default="32:128", help="evaluation images (index range)")
    p.add_argument("--calib-method", default="percentile", help="calibrate{method=...}")
    p.add_argument("--runs", type=int, default=200, help="timed runs per latency figure (>= 200)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--batches", default="1,8", help="batch sizes (optimization profiles and latency)")
    p.add_argument("--workspace-mb", type=int, default=4096)
    p.add_argument("--int8-fp32", action="store_true", help="also build INT8 with FP32 fallback and score it")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="results folder")
    p.add_argument("--work", default=None, help="engines and timing cache (default: ~/.cache/yolograph/tensorrt/work)")
    p.add_argument("--threads", type=int, default=0, help="ORT threads for the CPU references (0: all)")
    p.add_argument("--cpu-only", action="store_true",
                   help="no GPU: run the pipelines, the readiness check and the ORT mAP references only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu_only:
        print(json.dumps(cpu_references(args), indent=2))
        return 0
    from yolograph.backends.tensorrt import gpu_available

    ok, reason = gpu_available()
    if not ok:
        print(f"No GPU run possible: {reason}.", file=sys.stderr)
        return 2
    if args.runs < 200:
        print("--runs must be at least 200 for the issue's latency figures.", file=sys.stderr)
        return 2
    results = run(args, reason)
    gpu = results["device"]["name"]
    from yolograph.backends.tensorrt.settings import slug
    from yolograph.ir.serialization import write_bytes_atomic

    path = Path(args.out) / f"tensorrt_{slug(gpu)}.json"
    write_bytes_atomic(path, (json.dumps(results, indent=2) + "\n").encode())
    print(markdown(results))
    print(f"\nwrote {path}")
    return 0 if all(t["met"] is not False for t in results["targets"].values()) else 1


def run(args: argparse.Namespace, device_line: str) -> dict:
    import numpy as np

    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.backends.tensorrt import (
        compile_model,
        int8_report,
        load_runner,
        parse_engine_information,
        read_sidecar,
    )
    from yolograph.backends.tensorrt.runtime import (
        compute_capability,
        device_name,
        import_cudart,
        import_tensorrt,
        version_major,
    )
    from yolograph.evaluation import evaluate

    trt, cudart = import_tensorrt(), import_cudart()
    gpu = device_name(cudart)
    batches = tuple(int(b) for b in args.batches.split(","))
    from yolograph.backends.tensorrt.settings import cache_dir

    work = Path(args.work) if args.work else cache_dir() / "tensorrt" / "work"
    work.mkdir(parents=True, exist_ok=True)
    cache = work / f"timing-{trt.__version__}.cache"
    float_pipeline, int8_pipeline = pipelines(args)
    major = version_major(trt.__version__)

    log(f"device: {device_line}")
    models, findings = prepare_models(args, float_pipeline, int8_pipeline, "trt11" if major >= 11 else "trt")
    float_model, int8_model = models["float"], models["int8"]

    engines = {}
    if major < 11:  # builder flags: TensorRT 10 only
        engines = {"fp16": (float_model, {"precision": "fp16"}), "int8": (int8_model, {"precision": "int8"})}
        if args.int8_fp32:
            engines["int8_fp32"] = (int8_model, {"precision": "int8", "int8_fallback": "fp32"})
    engines.update({
        "fp16_strong": (models["fp16"], {"precision": "fp16", "typing": "strong"}),
        "int8_strong": (int8_model, {"precision": "int8", "typing": "strong"}),
        "best_strong": (models["best"], {"precision": "best", "typing": "strong"}),
    })
    graph_of = {name: model for name, (model, _) in engines.items()}
    built: dict[str, dict] = {}
    for name, (model, options) in engines.items():
        path = work / f"yolov8n_{name}.engine"
        start = time.perf_counter()
        compile_model(model, path, workspace_mb=args.workspace_mb, batch_sizes=batches, timing_cache=cache, **options)
        built[name] = {"engine": str(path), "build_s": round(time.perf_counter() - start, 1),
                       "engine_mb": round(path.stat().st_size / 2**20, 2)}
        log(f"built {name} in {built[name]['build_s']} s")

    latency: dict[str, dict] = {}
    for name in built:
        runner = load_runner(built[name]["engine"])
        for batch in batches:
            gpu_only = runner.benchmark(runs=args.runs, warmup=args.warmup, batch=batch)
            host = runner.benchmark(runs=args.runs, warmup=args.warmup, batch=batch, include_copies=True)
            latency[f"{name}_b{batch}"] = {
                "batch": batch, "gpu_median_ms": gpu_only.median_ms, "gpu_p90_ms": gpu_only.p90_ms,
                "gpu_min_ms": gpu_only.min_ms, "per_image_ms": gpu_only.median_ms / batch,
                "host_to_host_median_ms": host.median_ms, "runs": gpu_only.runs, "warmup": args.warmup,
            }
            log(f"{name} b{batch}: {gpu_only}")
        if name.startswith(("int8", "best")):
            report = int8_report(graph_of[name], parse_engine_information(runner.engine_information()))
            built[name]["int8_report"] = report.to_json()
            log(report.summary())
        runner.close()

    log(f"evaluating on images {args.images}")
    ort_threads = OrtOptions(threads=args.threads)
    accuracy = ort_accuracy(args, models)
    for name in built:
        runner = load_runner(built[name]["engine"])
        accuracy[f"trt_{name}"] = evaluate(runner.predict, args.data, images=args.images).to_json()
        runner.close()
    log(json.dumps(accuracy))

    # Agreement on one image as a sanity figure (raw outputs, not mAP).
    images = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    ref = OrtRunner(float_model, ort_threads).predict(images)
    agreement = {}
    for name in ("fp16", "fp16_strong"):
        if name in built:
            fp16 = load_runner(built[name]["engine"])
            agreement[f"{name}_vs_ort_fp32_max_abs"] = float(np.max(np.abs(fp16.predict(images) - ref)))
            fp16.close()

    int8_name = "int8" if "int8" in built else "int8_strong"
    int8_b1 = latency.get(f"{int8_name}_b1", {}).get("gpu_median_ms")
    delta_points = 100 * (accuracy[f"trt_{int8_name}"]["map50_95"] - accuracy["ort_int8"]["map50_95"])
    best_points = 100 * (accuracy["trt_best_strong"]["map50_95"] - accuracy["ort_best"]["map50_95"])
    report = built[int8_name]["int8_report"]
    is_h100 = "H100" in gpu.upper()
    targets = {
        "int8_b1_latency": {"target_ms": TARGET_INT8_B1_MS_H100, "measured_ms": int8_b1,
                            "met": (int8_b1 <= TARGET_INT8_B1_MS_H100) if is_h100 and int8_b1 else None,
                            "note": "judged on an H100 only" if not is_h100 else ""},
        "int8_map_vs_ort_int8": {"engine": int8_name, "target_points": TARGET_MAP_POINTS,
                                 "delta_points": round(delta_points, 3), "met": abs(delta_points) <= TARGET_MAP_POINTS},
        "best_map_vs_ort_int8_fp16": {"target_points": TARGET_MAP_POINTS, "delta_points": round(best_points, 3),
                                      "met": abs(best_points) <= TARGET_MAP_POINTS},
        "best_int8_layers": {"met": built["best_strong"]["int8_report"]["ok"]},
        "int8_layers": {"expected_int8": len(report["expected_int8"]), "ran_int8": len(report["ran_int8"]),
                        "float_by_profile": report["float_convs"], "met": report["ok"]},
        "readiness": {"findings": len(findings), "met": not findings},
    }
    return {
        "device": {"name": gpu, "compute_capability": compute_capability(cudart), "line": device_line},
        "software": {"tensorrt": trt.__version__, "tensorrt_major": major, "python": platform.python_version(),
                     "engine_sidecar_device": read_sidecar(built[int8_name]["engine"]).device},
        "precision_modes": {name: read_sidecar(built[name]["engine"]).precision_mode for name in built},
        "model": args.model, "pipelines": {"float": float_pipeline, "int8": int8_pipeline,
                                           "fp16": f"{float_pipeline},to-fp16", "best": f"{int8_pipeline},to-fp16"},
        "calibration_images": args.calib, "evaluation_images": args.images,
        "latency_note": "GPU work only: execute_async_v3 + stream sync with inputs on the device; "
                        "host_to_host adds the copies.",
        "engines": built, "latency": latency, "accuracy": accuracy, "agreement": agreement,
        "readiness_findings": [vars(f) for f in findings], "targets": targets,
    }


def pipelines(args: argparse.Namespace) -> tuple[str, str]:
    float_pipeline = "fold-bn,cleanup"
    int8_pipeline = (f"{float_pipeline},insert-qdq{{profile=trt}},"
                     f"calibrate{{images={args.data},range={args.calib},method={args.calib_method}}}")
    return float_pipeline, int8_pipeline


def prepare_models(args: argparse.Namespace, float_pipeline: str, int8_pipeline: str, target: str = "trt"):
    """({float, int8, fp16, best} models, readiness findings of all of them for `target`)."""
    from yolograph.backends.tensorrt import check_readiness, format_findings
    from yolograph.frontends import load_model
    from yolograph.pipeline import run_pipeline

    source = load_model(args.model)
    float_model, _ = run_pipeline(source, float_pipeline)
    log(f"pipeline: {int8_pipeline}")
    int8_model, _ = run_pipeline(source, int8_pipeline)
    fp16_model, _ = run_pipeline(float_model, "to-fp16", verify=True)
    best_model, _ = run_pipeline(int8_model, "to-fp16", verify=True)
    models = {"float": float_model, "int8": int8_model, "fp16": fp16_model, "best": best_model}
    findings = []
    for name in ("int8", "fp16", "best"):
        found = check_readiness(models[name], target)
        log(f"{name} ({target}): {format_findings(found)}")
        findings += found
    return models, findings


def ort_accuracy(args: argparse.Namespace, models: dict) -> dict:
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.evaluation import evaluate

    options = OrtOptions(threads=args.threads)
    names = {"ort_fp32": "float", "ort_int8": "int8", "ort_fp16": "fp16", "ort_best": "best"}
    return {key: evaluate(OrtRunner(models[name], options).predict, args.data, images=args.images).to_json()
            for key, name in names.items()}


def cpu_references(args: argparse.Namespace) -> dict:
    """The GPU-free part: pipelines, readiness and the ORT mAPs the INT8 engine is compared with."""
    float_pipeline, int8_pipeline = pipelines(args)
    models, findings = prepare_models(args, float_pipeline, int8_pipeline, "trt11")
    return {"pipelines": {"float": float_pipeline, "int8": int8_pipeline},
            "readiness_findings": [vars(f) for f in findings],
            "evaluation_images": args.images, "accuracy": ort_accuracy(args, models)}


def markdown(results: dict) -> str:
    lines = [f"TensorRT on {results['device']['name']} (TensorRT {results['software']['tensorrt']}); precision modes: "
             + ", ".join(f"{k} {v}" for k, v in results.get("precision_modes", {}).items()), "",
             "| engine | batch | GPU median ms | p90 ms | per image ms | host-to-host ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key, row in results["latency"].items():
        lines.append(f"| {key.rsplit('_b', 1)[0]} | {row['batch']} | {row['gpu_median_ms']:.3f} | "
                     f"{row['gpu_p90_ms']:.3f} | {row['per_image_ms']:.3f} | {row['host_to_host_median_ms']:.3f} |")
    lines += ["", "| model | mAP50-95 | mAP50 |", "| --- | --- | --- |"]
    for key, row in results["accuracy"].items():
        lines.append(f"| {key} | {row['map50_95']:.4f} | {row['map50']:.4f} |")
    lines += ["", "| target | met | detail |", "| --- | --- | --- |"]
    for key, row in results["targets"].items():
        detail = {k: v for k, v in row.items() if k != "met"}
        lines.append(f"| {key} | {row['met']} | {json.dumps(detail)} |")
    return "\n".join(lines)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
