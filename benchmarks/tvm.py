"""TVM backend benchmark: ORT vs TVM untuned vs TVM tuned (trial budgets), INT8, NHWC — one run, ratios.

    python benchmarks/tvm.py                       # yolov8n 640; budgets 2,8 trials per kernel (~30-60 min on 2 cores)
    python benchmarks/tvm.py --budgets 4 --no-int8 # one budget only
    python benchmarks/tvm.py --smoke --out /tmp/tvm.json   # seconds, on a tiny Conv graph: what the test suite runs
    python benchmarks/tvm.py --map-only                     # adds mAP50-95 (coco128 32:128) of the artifacts
                                                            # of the last full run to its JSON (~5 min)

Rows, all measured in this one process with interleaved rounds (other processes share the CPU, so
a slow spell hits every variant alike):
  ort-fp32            ONNX Runtime CPU, the reference
  tvm-untuned-strict  TVM llvm for this CPU, no tuning, IEEE float (no fast-math)
  tvm-untuned         the same with yolograph's default fast-math flags (FMA contraction, reassociation)
  tvm-tuned-bN        MetaSchedule with N trials per kernel (N x kernels in total), fresh database each;
                      tuning wall time and the compile time with the warm database are recorded
  tvm-nhwc-untuned    conv2d in NHWC via ConvertLayout (layout transforms left are counted)
  ort-int8 / tvm-int8 / tvm-int8-fsim   the tvm-profile QDQ model (calibrated on coco128 0-31) on ORT
                      (QLinear kernels), on TVM with the integer conv2d rewrite, and on TVM float-simulated
Accuracy: max |TVM - ORT| / max |ORT| per output group (box rows, class rows) on a random and a real
image; INT8 against ORT's QDQ output. Writes benchmarks/results/tvm_cpu.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# This file is named tvm.py: keep its folder off sys.path so `import tvm` finds Apache TVM.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "tvm_cpu.json"


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, runs: int, warmup: int = 1) -> dict[str, dict]:
    """Median/p90 ms of each call over rounds x runs, the variants taking turns every round."""
    from yolograph.backends.benchmark import interleaved_times, summarize_ms

    return {name: summarize_ms(times)
            for name, times in interleaved_times(calls, rounds=rounds, runs=runs, warmup=warmup).items()}


def group_error(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """max |a - ref| / max |ref| for box rows (0-3) and class rows (4-)."""
    out = {}
    for label, rows in (("box", slice(0, 4)), ("cls", slice(4, None))):
        ref = reference[:, rows]
        out[label] = float(np.abs(actual[:, rows] - ref).max() / max(float(np.abs(ref).max()), 1e-12))
    return out


def tiny_model():
    """x[1,3,16,16] -> Conv3x3 -> SiLU -> [Conv1x1, MaxPool] -> Concat: exercises every row in seconds."""
    from onnx import TensorProto, helper, numpy_helper

    from yolograph.ir.model import Model

    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.3, 8).astype(np.float32),
             "w2": rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Mul", ["c1", "s1"], ["a1"], name="mul1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2"),
        helper.make_node("MaxPool", ["a1"], ["p1"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c2", "p1"], ["y"], name="cat", axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return Model.from_onnx(proto, source="tiny")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny Conv/SiLU/MaxPool/Concat graph, 2 tuning trials, one round: checks the script runs")
    parser.add_argument("--budgets", default="2,8", help="tuning budgets, trials per kernel (comma list)")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (TVM uses all cores)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tune-seconds", type=float, default=None,
                        help="also a row tuned for this wall-clock budget (fresh database)")
    parser.add_argument("--no-strict", action="store_true", help="skip the strict-IEEE untuned row")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-nhwc", action="store_true")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "yolograph" / "bench-tvm",
                        help="artifacts and per-budget tuning databases")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--artifacts", help="NAME=PATH,...: only time these TVM artifacts against ORT FP32 "
                        "(e.g. ones compiled with shipped records), interleaved, into --out")
    parser.add_argument("--map-only", action="store_true",
                        help="evaluate mAP of the last full run's artifacts (ORT FP32/INT8, best tuned TVM, TVM INT8) into --out")
    args = parser.parse_args(argv)
    if args.map_only:
        return add_map(args)
    if args.artifacts:
        return time_artifacts(args)
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    if args.smoke:
        args.rounds, args.runs, budgets = 1, 1, [1]

    import tvm

    from yolograph.backends import tvm as ytvm
    from yolograph.backends.ort import OrtOptions, OrtRunner
    from yolograph.backends.tvm.target import CPU_FAST_MATH, parse_target
    from yolograph.data import coco128, official_yolov8n
    from yolograph.evaluation import open_dataset
    from yolograph.evaluation.preprocess import preprocess_image
    from yolograph.frontends import load_model
    from yolograph.ir.serialization import write_bytes_atomic
    from yolograph.pipeline import run_pipeline

    work = args.work / ("smoke" if args.smoke else "full" if not args.tune_seconds else "timed")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ["YOLOGRAPH_TVM_TUNING_DB"] = str(work / "db-none")  # untuned rows see no records,
    os.environ["YOLOGRAPH_TVM_SHIPPED_RECORDS"] = "0"  # not even the shipped ones (data/tuning)

    if args.smoke:
        model = tiny_model()
    else:
        model = load_model(official_yolov8n())
    imgsz = model.inputs[0].shape[2:]
    coco = coco128()
    image, _ = preprocess_image(open_dataset(coco).image_paths[0], tuple(imgsz))
    inputs = {"random": np.random.default_rng(0).random(model.inputs[0].shape, dtype=np.float32), "real": image}
    host = parse_target(None)
    results: dict = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "llvm_cpu": host["mcpu"],
                    "ort_threads": args.threads, "tvm_threads": os.environ.get("TVM_NUM_THREADS", "all cores")},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "tvm_version": tvm.__version__,
        "model": "tiny Conv graph 3x16x16 (smoke)" if args.smoke else "yolov8n.onnx (COCO) 640x640",
        "smoke": args.smoke,
        "rows": {},
    }
    rows = results["rows"]
    runners: dict[str, Callable[[], object]] = {}
    references = {}

    ort = OrtRunner(model, OrtOptions(threads=args.threads))
    references = {name: ort.predict(x) for name, x in inputs.items()}
    runners["ort-fp32"] = lambda: ort.predict(inputs["random"])
    rows["ort-fp32"] = {"backend": "ort"}

    def add_tvm(name: str, source, **compile_kwargs) -> dict:
        start = time.perf_counter()
        path = ytvm.compile_model(source, work / f"{name}.so", **compile_kwargs)
        total = time.perf_counter() - start
        sidecar = json.loads((work / f"{name}.so.json").read_text())
        runner = ytvm.load_runner(path)
        row = {"backend": "tvm", "compile_s": round(total, 1), "target": sidecar["target"],
               "tuned_kernels": f"{sidecar['tuning']['tuned_tasks']}/{sidecar['tuning']['tasks']}"}
        if source is model:
            row["error_vs_ort"] = {k: group_error(runner.predict(x), references[k]) for k, x in inputs.items()}
        runners[name] = lambda: runner.predict(inputs["random"])
        rows[name] = row
        print(f"{name}: compiled in {total:.0f} s", file=sys.stderr, flush=True)
        return row

    strict = {**host, **{flag: False for flag in CPU_FAST_MATH}}
    if not args.no_strict:
        add_tvm("tvm-untuned-strict", model, target=json.dumps(strict))
    add_tvm("tvm-untuned", model)

    if args.tune_seconds:
        name = f"tvm-tuned-{args.tune_seconds:.0f}s"
        db = work / f"db-{args.tune_seconds:.0f}s"
        row = add_tvm(name, model, tune_seconds=args.tune_seconds, tuning_db=db)
        sidecar = json.loads((work / f"{name}.so.json").read_text())["tuning"]
        row.update(tune_seconds_budget=args.tune_seconds, trials=sidecar.get("trials_run"),
                   tuning_s=sidecar.get("seconds"), failed_trials=sidecar.get("failed_trials"),
                   cost_model=sidecar.get("cost_model"))
        start = time.perf_counter()
        ytvm.compile_model(model, work / f"{name}-warm.so", tuning_db=db)
        row["warm_compile_s"] = round(time.perf_counter() - start, 1)

    for budget in budgets:
        name = f"tvm-tuned-b{budget}"
        db = work / f"db-b{budget}"
        from yolograph.backends.tvm.compile import lower_to_relax, resolve_options
        from yolograph.backends.tvm.tuning import extract_tasks

        options = resolve_options(model, target=None, tune_trials=0, tune_seconds=None, tuning_db=db, rpc=None,
                                  layout=None, int8=None)
        kernels = len(extract_tasks(lower_to_relax(model, options)[0], tvm.target.Target(options.target)))
        trials = 2 if args.smoke else budget * kernels
        row = add_tvm(name, model, tune_trials=trials, tuning_db=db)
        sidecar = json.loads((work / f"{name}.so.json").read_text())["tuning"]
        row.update(trials_per_kernel=budget, trials=sidecar.get("trials_run"), tuning_s=sidecar.get("seconds"),
                   failed_trials=sidecar.get("failed_trials"), cost_model=sidecar.get("cost_model"))
        start = time.perf_counter()
        ytvm.compile_model(model, work / f"{name}-warm.so", tuning_db=db)
        row["warm_compile_s"] = round(time.perf_counter() - start, 1)

    if not args.no_nhwc:
        row = add_tvm("tvm-nhwc-untuned", model, layout="NHWC")
        row["layout_stats"] = json.loads((work / "tvm-nhwc-untuned.so.json").read_text())["layout_stats"]

    if not args.no_int8:
        calibration = "count=2" if args.smoke else "range=0:32"
        placement = "profile=tvm,head_aware=false" if args.smoke else "profile=tvm"
        quantized, _ = run_pipeline(
            model, f"insert-qdq{{{placement}}},calibrate{{images={coco},{calibration},method=percentile}}", verify=False)
        ort_q = OrtRunner(quantized, OrtOptions(threads=args.threads))
        q_refs = {name: ort_q.predict(x) for name, x in inputs.items()}
        runners["ort-int8"] = lambda: ort_q.predict(inputs["random"])
        rows["ort-int8"] = {"backend": "ort", "error_vs_ort_fp32": {k: group_error(q_refs[k], references[k]) for k in inputs}}
        for name, int8 in (("tvm-int8", True), ("tvm-int8-fsim", False)):
            row = add_tvm(name, quantized, int8=int8)
            runner = ytvm.load_runner(work / f"{name}.so")
            row["error_vs_ort_int8"] = {k: group_error(runner.predict(x), q_refs[k]) for k, x in inputs.items()}
            row["int8"] = json.loads((work / f"{name}.so.json").read_text())["int8"]

    latency = interleaved(runners, args.rounds, args.runs)
    ort_ms = latency["ort-fp32"]["median_ms"]
    for name, stats in latency.items():
        rows[name].update(stats)
        rows[name]["speed_vs_ort_fp32"] = round(ort_ms / stats["median_ms"], 3)
    if "ort-int8" in latency:
        for name in ("tvm-int8", "tvm-int8-fsim"):
            rows[name]["speed_vs_ort_int8"] = round(latency["ort-int8"]["median_ms"] / latency[name]["median_ms"], 3)

    write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    print(markdown(results))
    return 0


def time_artifacts(args) -> int:
    """ORT FP32 vs the named TVM artifacts of yolov8n, interleaved; max rel. error on a random image."""
    from yolograph.backends import tvm as ytvm
    from yolograph.backends.ort import OrtOptions, OrtRunner
    from yolograph.data import official_yolov8n
    from yolograph.frontends import load_model
    from yolograph.ir.serialization import write_bytes_atomic

    model = load_model(official_yolov8n())
    x = np.random.default_rng(0).random(model.inputs[0].shape, dtype=np.float32)
    ort = OrtRunner(model, OrtOptions(threads=args.threads))
    reference = ort.predict(x)
    calls = {"ort-fp32": lambda: ort.predict(x)}
    rows: dict[str, dict] = {"ort-fp32": {"backend": "ort"}}
    for item in args.artifacts.split(","):
        name, _, path = item.partition("=")
        runner = ytvm.load_runner(Path(path))
        calls[name] = (lambda r: lambda: r.predict(x))(runner)
        rows[name] = {"backend": "tvm", "artifact": path, "target": runner.sidecar["target"],
                      "tuning": runner.sidecar["tuning"], "error_vs_ort": {"random": group_error(runner.predict(x), reference)}}
    for name, stats in interleaved(calls, args.rounds, args.runs).items():
        rows[name].update(stats)
    ort_ms = rows["ort-fp32"]["median_ms"]
    for row in rows.values():
        row["speed_vs_ort_fp32"] = round(ort_ms / row["median_ms"], 3)
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": "yolov8n.onnx (COCO) 640x640",
               "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()}, "rows": rows}
    write_bytes_atomic(args.out, json.dumps(results, indent=2, default=str).encode())
    for name, row in rows.items():
        print(f"{name}: median {row['median_ms']:.1f} ms, {row['speed_vs_ort_fp32']:.3f}x ORT")
    return 0


def add_map(args) -> int:
    """mAP50-95 on coco128 images 32-127 for ORT FP32, ORT INT8 and the TVM artifacts of the last full run."""
    from yolograph.backends import tvm as ytvm
    from yolograph.backends.ort import OrtOptions, OrtRunner
    from yolograph.data import coco128, official_yolov8n
    from yolograph.evaluation import evaluate
    from yolograph.frontends import load_model
    from yolograph.ir.serialization import write_bytes_atomic
    from yolograph.pipeline import run_pipeline

    results = json.loads(args.out.read_text())
    work = args.work / "full"
    coco = coco128()
    model = load_model(official_yolov8n())
    quantized, _ = run_pipeline(
        model, f"insert-qdq{{profile=tvm}},calibrate{{images={coco},range=0:32,method=percentile}}", verify=False)
    predictors = {"ort-fp32": OrtRunner(model, OrtOptions(threads=args.threads)).predict,
                  "ort-int8": OrtRunner(quantized, OrtOptions(threads=args.threads)).predict}
    tuned = sorted((n for n in results["rows"] if n.startswith("tvm-tuned-b")), key=lambda n: int(n.rsplit("b", 1)[1]))
    for name in [*tuned[-1:], "tvm-int8"]:
        if (work / f"{name}.so").exists():
            predictors[name] = ytvm.load_runner(work / f"{name}.so").predict
    for name, predict in predictors.items():
        start = time.perf_counter()
        result = evaluate(predict, coco, imgsz=(640, 640), images="32:128")
        results["rows"][name]["map50_95"] = round(result.map50_95, 4)
        results["rows"][name]["map50"] = round(result.map50, 4)
        print(f"{name}: mAP50-95 {result.map50_95:.4f} mAP50 {result.map50:.4f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    results["map_images"] = "coco128 32:128"
    write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    return 0


def markdown(results: dict) -> str:
    lines = [f"{results['model']}, {results['machine']['cpu_count']} cores ({results['machine']['llvm_cpu']}), "
             f"{results['date']}, TVM {results['tvm_version']}", "",
             "| variant | median ms | p90 ms | speed vs ORT FP32 | tuning | compile s | max rel. error (box/cls) |",
             "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for name, row in results["rows"].items():
        tuning = ""
        if "trials" in row:
            tuning = f"{row['trials']} trials, {row['tuning_s']:.0f} s, warm compile {row['warm_compile_s']:.0f} s"
        elif row.get("tuned_kernels"):
            tuning = f"kernels tuned {row['tuned_kernels']}"
        errors = row.get("error_vs_ort") or row.get("error_vs_ort_int8") or row.get("error_vs_ort_fp32") or {}
        worst = {g: max(e[g] for e in errors.values()) for g in ("box", "cls")} if errors else None
        err = f"{worst['box']:.1e} / {worst['cls']:.1e}" if worst else ""
        if "error_vs_ort_int8" in row:
            err += " (vs ORT INT8)"
        elif "error_vs_ort_fp32" in row:
            err += " (vs ORT FP32)"
        lines.append(f"| {name} | {_ms(row.get('median_ms'))} | {_ms(row.get('p90_ms'))} | "
                     f"{row.get('speed_vs_ort_fp32', float('nan')):.3f}x | {tuning} | {row.get('compile_s', '')} | {err} |")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if value >= 10 else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
