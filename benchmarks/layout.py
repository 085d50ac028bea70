"""to-nhwc benchmark: transposes before/after, ORT and TVM latency NCHW vs NHWC, uint8-input preprocessing.

    python benchmarks/layout.py                 # the full run (a few minutes on 2 cores, TVM builds included)
    python benchmarks/layout.py --no-tvm        # skip the TVM builds
    python benchmarks/layout.py --sections preprocessing   # rerun one section, keep the others in the JSON
    python benchmarks/layout.py --smoke --out /tmp/layout.json   # seconds: what the test suite runs

Sections, every speed measured side by side in one run, the variants taking turns (ORT models each
alone in a fresh process per turn; TVM modules interleaved in this process):
1. transposes on yolov8n, FP32 and INT8 (insert-qdq ort-cpu and trt profiles + calibrate on images 0-31):
   the pass's census (inserted by a naive wrap, removed, left around Conv/MaxPool, at I/O, elsewhere);
2. ORT CPU latency, NCHW vs NHWC model (FP32 and INT8 ort-cpu);
3. TVM backend (llvm, untuned: analytic schedules) latency: the NCHW model compiled NCHW; compiled NHWC
   (relax ConvertLayout, the backend's CPU default); the to-nhwc model, its wrapping absorbed
   (yolograph.backends.tvm.relax_absorb);
4. an end-to-end loop over coco128 images 32-127: read + letterbox, then either the float pipeline
   (BGR->RGB, HWC->CHW, /255 on the host, NCHW float model) or the raw letterboxed BGR uint8 frame into
   to-nhwc{input=uint8,channels=bgr} (all NHWC) and to-nhwc{internal=false,...} (only the input changed,
   which isolates the folded preprocessing); per-frame host preprocessing and total time.
Writes benchmarks/results/layout.json (or --out) and prints the Markdown tables of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "layout.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run (2 images, few timed runs, no TVM)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per latency comparison")
    parser.add_argument("--runs", type=int, default=6, help="timed runs per variant per round")
    parser.add_argument("--images", default="32:128", help="coco128 index range of the end-to-end loop")
    parser.add_argument("--no-tvm", action="store_true")
    parser.add_argument("--sections", default="transposes,ort,tvm,preprocessing",
                        help="comma list; sections not run keep their previous results in --out")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.runs, args.images, args.no_tvm = 1, 1, "32:34", True
    sections = set(args.sections.split(",")) - ({"tvm"} if args.no_tvm else set())

    from yolograph.data import coco128, official_yolov8n
    from yolograph.frontends import load_model
    from yolograph.ir.serialization import write_bytes_atomic

    coco = coco128()
    base = load_model(official_yolov8n())
    results: dict = json.loads(args.out.read_text()) if args.out.exists() and not args.smoke else {}
    results.update({
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads},
        "smoke": args.smoke,
    })
    dates = results.setdefault("dates", {})
    if sections & {"transposes", "ort"}:
        models = _models(base, coco, calibration_count=4 if args.smoke else 32)
        if "transposes" in sections:
            results["transposes"] = {name: stats for name, (_, _, stats) in models.items()}
        if "ort" in sections:
            results["ort_latency"] = _ort_latency(models, args)
    if "tvm" in sections:
        results["tvm_latency"] = _tvm_latency(base, args)
    if "preprocessing" in sections:
        results["preprocessing"] = _preprocessing(base, coco, args)
    for section in sections:
        dates[section] = time.strftime("%Y-%m-%d %H:%M")
    write_bytes_atomic(args.out, (json.dumps(results, indent=2) + "\n").encode())
    print(markdown(results))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


# -- models -------------------------------------------------------------------------------------------


def _models(base, coco, calibration_count: int) -> dict:
    """name -> (NCHW model, NHWC model, to-nhwc stats) for FP32 and the two INT8 profiles."""
    from yolograph.pipeline import run_pipeline

    out = {}
    variants = {
        "fp32": None,
        "int8-ort-cpu": "ort-cpu",
        "int8-trt": "trt",
    }
    for name, profile in variants.items():
        nchw = base
        if profile:
            calibrate = f"calibrate{{images={coco},range=0:{calibration_count},method=minmax}}"
            nchw, _ = run_pipeline(base, f"insert-qdq{{profile={profile}}},{calibrate}")
        _note(f"to-nhwc on {name}")
        nhwc, report = run_pipeline(nchw, "to-nhwc", verify=True)
        out[name] = (nchw, nhwc, report.records[0].stats)
    return out


# -- timing -------------------------------------------------------------------------------------------


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, runs: int, warmup: int = 2) -> dict[str, dict]:
    """Median/p90 ms of each call over rounds x runs, the variants taking turns every round."""
    from yolograph.runtime.timing import interleaved_times, summarize_ms

    return {name: summarize_ms(times)
            for name, times in interleaved_times(calls, rounds=rounds, runs=runs, warmup=warmup).items()}


def _ort_latency(models: dict, args) -> dict:
    """NCHW vs NHWC model on ORT, each timed alone in a fresh process (two ORT sessions alternating in one
    process slow each other through their spinning thread pools)."""
    import tempfile

    from yolograph.runtime.timing import isolated_times, summarize_ms

    result = {}
    with tempfile.TemporaryDirectory() as temp:
        for name in ("fp32", "int8-ort-cpu"):
            nchw, nhwc, _ = models[name]
            paths = {}
            for layout, model in (("nchw", nchw), ("nhwc", nhwc)):
                paths[layout] = ("ort", Path(temp) / f"{name}-{layout}.onnx")
                paths[layout][1].write_bytes(model.serialize())
            _note(f"ORT latency {name}")
            times = isolated_times(paths, rounds=args.rounds, runs=args.runs, threads=args.threads)
            stats = {layout: summarize_ms(values) for layout, values in times.items()}
            stats["nhwc_over_nchw"] = stats["nhwc"]["median_ms"] / stats["nchw"]["median_ms"]
            result[name] = stats
    return result


def _tvm_latency(base, args) -> dict:
    """The TVM backend (llvm, untuned: analytic schedules) on three layouts: the NCHW model compiled NCHW,
    the NCHW model compiled NHWC (the backend's CPU default, relax ConvertLayout), and the
    to-nhwc{nchw_ops=Resize} model (its wrapping absorbed). Each artifact is timed alone in a fresh process."""
    import tempfile

    from yolograph.runtime.timing import isolated_times, summarize_ms
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.backends.tvm import compile_model, load_runner
    from yolograph.backends.tvm.compile import lower_to_relax, resolve_options
    from yolograph.backends.tvm.relax_absorb import layout_census
    from yolograph.pipeline import run_pipeline

    nhwc_model, _ = run_pipeline(base, "to-nhwc{nchw_ops=Resize}", verify=True)
    variants = {"nchw": (base, "NCHW"), "nchw+convert_layout": (base, "NHWC"), "to-nhwc+absorb": (nhwc_model, None)}
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    reference = OrtRunner(base, OrtOptions(threads=args.threads)).predict(x)
    feeds = {"nchw": x, "nchw+convert_layout": x, "to-nhwc+absorb": np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))}
    result, paths = {}, {}
    with tempfile.TemporaryDirectory() as temp:
        for name, (model, layout) in variants.items():
            _note(f"TVM compile {name}")
            options = resolve_options(model, target=None, tune_trials=0, tune_seconds=None, tuning_db=None,
                                      rpc=None, layout=layout, int8=False, analytic=True)
            census = layout_census(lower_to_relax(model, options)[0])
            start = time.perf_counter()
            paths[name] = ("tvm", compile_model(model, Path(temp) / f"{name}.so", layout=layout, int8=False))
            output = load_runner(paths[name][1]).predict(feeds[name])
            result[name] = {
                "build_s": round(time.perf_counter() - start, 1),
                "layout": options.layout,
                "layout_ops": int(census["relax.permute_dims"] + census["relax.layout_transform"]),
                "conv2d_nhwc": int(census["conv2d:NHWC"]),
                "conv2d_nchw": int(census["conv2d:NCHW"]),
                "max_rel_diff_vs_ort": float(np.abs(output - reference).max() / np.abs(reference).max()),
            }
        _note("TVM latency (each artifact alone in a fresh process)")
        times = isolated_times(paths, rounds=args.rounds, runs=args.runs)
    for name, values in times.items():
        result[name].update(summarize_ms(values))
    result["target"] = options.target
    return result


def _preprocessing(base, coco, args) -> dict:
    """End-to-end loop: float pipeline (host /255, CHW) vs the raw letterboxed uint8 BGR frame."""
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.evaluation.dataset import open_dataset
    from yolograph.evaluation.preprocess import letterbox, read_image, to_input_tensor
    from yolograph.pipeline import run_pipeline

    frame_model, _ = run_pipeline(base, "to-nhwc{input=uint8,channels=bgr}", verify=True)
    io_model, _ = run_pipeline(base, "to-nhwc{internal=false,input=uint8,channels=bgr}", verify=True)
    # The three sessions alternate frame by frame in this process: without spinning, none of them runs
    # while another's idle workers still hold the cores.
    options = OrtOptions(threads=args.threads, spin=False)
    float_runner, frame_runner = OrtRunner(base, options), OrtRunner(frame_model, options)
    io_runner = OrtRunner(io_model, options)
    paths = open_dataset(coco).subset(args.images).image_paths
    timings = {name: [] for name in ("read_letterbox", "float_preprocess", "float_infer", "uint8_preprocess",
                                     "uint8_infer", "uint8_io_only_infer")}
    max_rel = 0.0
    for path in paths:
        start = time.perf_counter()
        frame, _ = letterbox(read_image(path), 640)
        timings["read_letterbox"].append(time.perf_counter() - start)
        start = time.perf_counter()
        tensor = to_input_tensor(frame)
        timings["float_preprocess"].append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = float_runner.run(tensor)[0]
        timings["float_infer"].append(time.perf_counter() - start)
        start = time.perf_counter()
        batch = frame[None]  # the camera frame as is: a view, no copy
        timings["uint8_preprocess"].append(time.perf_counter() - start)
        start = time.perf_counter()
        output = frame_runner.run(batch)[0]
        timings["uint8_infer"].append(time.perf_counter() - start)
        start = time.perf_counter()
        io_output = io_runner.run(frame[None])[0]
        timings["uint8_io_only_infer"].append(time.perf_counter() - start)
        for candidate in (output, io_output):
            max_rel = max(max_rel, float(np.abs(candidate - reference).max() / np.abs(reference).max()))
    ms = {name: float(np.median(values) * 1e3) for name, values in timings.items()}
    return {
        "images": len(paths),
        "median_ms": ms,
        "preprocess_saved_ms": ms["float_preprocess"] - ms["uint8_preprocess"],
        "per_frame_float_ms": ms["float_preprocess"] + ms["float_infer"],
        "per_frame_uint8_ms": ms["uint8_preprocess"] + ms["uint8_infer"],
        "per_frame_uint8_io_only_ms": ms["uint8_preprocess"] + ms["uint8_io_only_infer"],
        "max_rel_diff": max_rel,
    }


# -- report ----------------------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    lines = ["| model | transposes before | inserted (naive wrap) | removed | after | around Conv/MaxPool | I/O | elsewhere |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in results["transposes"].items():
        lines.append(f"| yolov8n {name} | {s['transposes_before']} | {s['inserted']} | {s['removed']} | "
                     f"{s['transposes_after']} | {s['around_nchw_ops']} (for {s['nchw_ops']} ops) | "
                     f"{s['io_transposes']} | {s['elsewhere']} |")
    lines += ["", "| ORT CPU | NCHW median ms | NHWC median ms | NHWC / NCHW |", "| --- | --- | --- | --- |"]
    for name, s in results["ort_latency"].items():
        lines.append(f"| {name} | {s['nchw']['median_ms']:.1f} | {s['nhwc']['median_ms']:.1f} | {s['nhwc_over_nchw']:.2f} |")
    if results.get("tvm_latency"):
        lines += ["", "| TVM backend, llvm, untuned | conv2d NHWC | layout ops | median ms | p90 ms | max rel diff vs ORT |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, s in results["tvm_latency"].items():
            if isinstance(s, dict) and "median_ms" in s:
                lines.append(f"| {name} | {s['conv2d_nhwc']}/{s['conv2d_nhwc'] + s['conv2d_nchw']} | {s['layout_ops']} | "
                             f"{s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['max_rel_diff_vs_ort']:.1e} |")
    p = results["preprocessing"]
    m = p["median_ms"]
    lines += ["", f"End-to-end loop over {p['images']} coco128 images (medians, ms per frame):", "",
              "| pipeline | host preprocess | inference | preprocess + inference |", "| --- | --- | --- | --- |",
              f"| float NCHW (BGR->RGB, CHW, /255 on host) | {m['float_preprocess']:.2f} | {m['float_infer']:.1f} | "
              f"{p['per_frame_float_ms']:.1f} |",
              f"| uint8 NHWC BGR frame (to-nhwc{{input=uint8,channels=bgr}}) | {m['uint8_preprocess']:.3f} | "
              f"{m['uint8_infer']:.1f} | {p['per_frame_uint8_ms']:.1f} |",
              f"| uint8 NHWC BGR frame, I/O only (to-nhwc{{internal=false,input=uint8,channels=bgr}}) | "
              f"{m['uint8_preprocess']:.3f} | {m['uint8_io_only_infer']:.1f} | {p['per_frame_uint8_io_only_ms']:.1f} |",
              "", f"read + letterbox (both): {m['read_letterbox']:.1f} ms; host preprocessing saved: "
              f"{p['preprocess_saved_ms']:.2f} ms/frame; outputs equal within {p['max_rel_diff']:.1e} relative."]
    return "\n".join(lines)


def _note(message: str) -> None:
    print(f"[layout] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
