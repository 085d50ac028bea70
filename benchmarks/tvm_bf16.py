"""TVM bfloat16 accuracy: yolov8n compiled with --precision bf16 against TVM fp32 and ONNX Runtime.

    python benchmarks/tvm_bf16.py                      # yolov8n 640, mAP50-95 on coco128 32-127 (~10 min on 2 cores)
    python benchmarks/tvm_bf16.py --smoke --out /tmp/b.json   # a tiny conv graph, no mAP: checks the script runs

Rows: ort-fp32 (the reference), tvm-fp32 (the backend's default) and tvm-bf16 (conv2d on bf16 operands,
float32 accumulation and decode; backends/tvm/bf16.py). On a host without AVX512_BF16/AMX-BF16 the bf16
row is compiled with bf16_emulate: the same bf16 roundings in float32 arithmetic, so its accuracy is the
accuracy a bf16 CPU gets and its speed means nothing; the script then records that speed was not
measured. Accuracy: max |TVM - ORT| / max |ORT| per output group (box rows, class rows) on a random and a
real image; mAP50-95 on coco128 images 32-127 (the bar: bf16 within 0.1 point of fp32).
The box error is also given on confident anchors (class score >= 0.25), in pixels: the
boxes that survive NMS. native_build: the bf16 compile for an AVX512_BF16 CPU (sapphirerapids), built
here and never run: how many convs get the vdpbf16ps kernel. Writes benchmarks/results/tvm_bf16.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "tvm_bf16.json"
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
MAP_BAR = 0.001  # bf16 mAP50-95 within 0.1 point of fp32
CONFIDENT = 0.25  # class score above which an anchor is a detection (the box error that matters)
NATIVE_TARGET = "llvm -mcpu=sapphirerapids -num-cores=2"  # an AVX512_BF16 + AMX-BF16 CPU, built here, never run


def cpu_flags() -> dict[str, bool]:
    """The SIMD flags of this host that decide what the bf16 row means (from /proc/cpuinfo)."""
    from yolograph.runtime.host import cpu_flags as host_flags

    present = host_flags()
    return {} if present is None else {flag: flag in present for flag in CPU_FLAGS}


def confident_box_error(actual: np.ndarray, reference: np.ndarray) -> dict[str, float | int]:
    """Box error (pixels) on the anchors the reference scores >= CONFIDENT: the boxes NMS keeps."""
    confident = reference[0, 4:].max(axis=0) >= CONFIDENT
    if not confident.any():
        return {"anchors": 0}
    delta = np.abs(actual[0, :4, confident] - reference[0, :4, confident])
    return {"anchors": int(confident.sum()), "max_px": round(float(delta.max()), 3),
            "mean_px": round(float(delta.mean()), 4)}


def native_build(model) -> dict:
    """Build-only on an AVX512_BF16 target: how many convs get the vdpbf16ps kernel, and the instructions emitted."""
    from yolograph.backends.tvm.compile import build, lower_to_relax, resolve_options
    from yolograph.backends.tvm.target import validate_target

    start = time.perf_counter()
    options = resolve_options(model, target=NATIVE_TARGET, tune_trials=0, tune_seconds=None, tuning_db=None,
                              rpc=None, layout=None, int8=None, precision="bf16")
    mod, facts = lower_to_relax(model, options)
    library = build(mod, validate_target(options.target), None).mod.imports[0]
    return {"target": NATIVE_TARGET, "precision": facts["precision"],
            "vdpbf16ps_instructions": library.inspect_source("asm").count("vdpbf16ps"),
            "build_s": round(time.perf_counter() - start, 1)}


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny conv graph and no mAP: checks the script runs")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (TVM uses all cores)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "yolograph" / "bench-tvm-bf16")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import tvm

    from yolograph.backends import tvm as ytvm
    from yolograph.backends.tvm.bf16 import bf16_features
    from yolograph.backends.tvm.target import parse_target, validate_target
    from yolograph.data import coco128, official_yolov8n
    from yolograph.evaluation import evaluate, open_dataset
    from yolograph.evaluation.preprocess import preprocess_image
    from yolograph.frontends import load_model
    from yolograph.ir.serialization import write_bytes_atomic
    from yolograph.runtime import OrtOptions, OrtRunner

    sys.path.insert(0, str(REPO / "benchmarks"))
    from tvm_backend import group_error, tiny_model

    work = args.work / ("smoke" if args.smoke else "full")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["YOLOGRAPH_TVM_TUNING_DB"] = str(work / "db-none")  # untuned: the analytic schedules only
    os.environ["YOLOGRAPH_TVM_SHIPPED_RECORDS"] = "0"

    model = tiny_model() if args.smoke else load_model(official_yolov8n())
    imgsz = tuple(model.inputs[0].shape[2:])
    coco = coco128()
    image, _ = preprocess_image(open_dataset(coco).image_paths[0], imgsz)
    inputs = {"random": np.random.default_rng(0).random(model.inputs[0].shape, dtype=np.float32), "real": image}
    host = parse_target(None)
    native = bool(bf16_features(validate_target(host)))
    ort = OrtRunner(model, OrtOptions(threads=args.threads))
    references = {name: ort.predict(x) for name, x in inputs.items()}
    results: dict = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "llvm_cpu": host["mcpu"],
                    "cpu_flags": cpu_flags(), "load_before": load_average()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "tvm_version": tvm.__version__,
        "model": "tiny Conv graph 3x16x16 (smoke)" if args.smoke else "yolov8n.onnx (COCO) 640x640",
        "evaluation": None if args.smoke else "coco128 images 32-127, mAP50-95",
        "bf16_kernels": "native" if native else "emulated",
        "speed": ("not measured here: timing rows belong to benchmarks/tvm_backend.py" if native else
                  "not measurable on this host: it has no AVX512_BF16/AMX-BF16, so the bf16 kernels are emulated "
                  "(bf16 roundings in float32 arithmetic)"),
        "rows": {},
    }
    runners = {"ort-fp32": ort.predict}
    for name, precision in (("tvm-fp32", "fp32"), ("tvm-bf16", "bf16")):
        start = time.perf_counter()
        path = ytvm.compile_model(model, work / f"{name}.so", precision=precision,
                                  bf16_emulate=precision == "bf16" and not native)
        sidecar = json.loads((work / f"{name}.so.json").read_text())
        runner = ytvm.load_runner(path)
        runners[name] = runner.predict
        results["rows"][name] = {
            "compile_s": round(time.perf_counter() - start, 1), "precision": sidecar["precision"],
            "analytic_conv_kernels": sidecar["tuning"]["analytic_conv_tasks"],
            "naive_conv_kernels": sidecar["tuning"]["naive_conv_tasks"],
            "error_vs_ort": {k: group_error(runner.predict(x), references[k]) for k, x in inputs.items()},
        }
        if not args.smoke:
            results["rows"][name]["confident_box_error_vs_ort"] = {
                k: confident_box_error(runner.predict(x), references[k]) for k, x in inputs.items()}
        print(f"{name}: compiled in {results['rows'][name]['compile_s']:.0f} s", file=sys.stderr, flush=True)
    results["native_build"] = native_build(model)
    print(f"native build: {results['native_build']}", file=sys.stderr, flush=True)
    if not args.smoke:
        results["rows"]["ort-fp32"] = {}
        for name, predict in runners.items():
            start = time.perf_counter()
            result = evaluate(predict, coco, imgsz=imgsz, images="32:128")
            results["rows"][name].update(map50_95=round(result.map50_95, 4), map50=round(result.map50, 4))
            print(f"{name}: mAP50-95 {result.map50_95:.4f} ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
                  flush=True)
        drop = results["rows"]["tvm-fp32"]["map50_95"] - results["rows"]["tvm-bf16"]["map50_95"]
        results["bf16_map_drop"] = round(drop, 4)
        results["bf16_within_bar"] = drop <= MAP_BAR
    results["machine"]["load_after"] = load_average()
    write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
