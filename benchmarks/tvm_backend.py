"""TVM backend benchmark: what moves yolov8n's CPU latency, against ORT in the same run (ratios).

    python benchmarks/tvm_backend.py                     # yolov8n 640: every row, 300 s tuned row, mAP (~25 min on 2 cores)
    python benchmarks/tvm_backend.py --tune-seconds 1800 # a longer tuned row
    python benchmarks/tvm_backend.py --budgets 2,6       # add MetaSchedule-only rows (NCHW, N trials per kernel)
    python benchmarks/tvm_backend.py --smoke --out /tmp/tvm.json   # seconds, on a tiny Conv graph: what the tests run

Rows, one step at a time from TVM's own default to the backend's default:
  ort-fp32                ONNX Runtime CPU (--threads intra-op threads), the reference
  tvm-naive-nchw          TVM's pipeline on the NCHW import with no schedules (analytic=False): naive loops
  tvm-naive-nhwc          the same with conv2d converted to NHWC/HWIO
  tvm-analytic-exact-exp  + yolograph's analytic CPU schedules, IEEE float (no fast-math, so no fast_exp)
  tvm-analytic            + fast-math flags and the polynomial fast_exp: the backend's default, no tuning
  tvm-tuned-<S>s          tune --tune-seconds S from a fresh database (analytic sweep, then MetaSchedule on
                          the remaining kernels); tuning wall time and the warm-database compile recorded
  tvm-metaschedule-b<N>   (--budgets) MetaSchedule alone, NCHW, N trials per kernel, naive loops elsewhere
  ort-int8 / tvm-int8 / tvm-int8-fsim   the tvm-profile QDQ model (calibrated on coco128 0-31): ORT
                          QLinear kernels; TVM integer conv2d rewrite; TVM float-simulated Q/DQ
Latency: each model is timed alone in a fresh process (yolograph.runtime.timing.isolated_times:
ORT and TVM thread pools slow each other down in one process, and a process that has just tuned
runs TVM kernels slower), the models taking turns (--rounds turns x --runs timed runs). Accuracy: max |TVM - ORT|
/ max |ORT| per output group (box rows, class rows) on a random and a real image (INT8 against ORT
INT8); mAP50-95 on coco128 32-127 for ORT and the TVM default and INT8 artifacts (--no-map skips).
Writes benchmarks/results/tvm_cpu.json (or --out) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "tvm_cpu.json"


def group_error(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """max |a - ref| / max |ref| for box rows (0-3) and class rows (4-)."""
    out = {}
    for label, rows in (("box", slice(0, 4)), ("cls", slice(4, None))):
        ref = reference[:, rows]
        out[label] = float(np.abs(actual[:, rows] - ref).max() / max(float(np.abs(ref).max()), 1e-12))
    return out


def tiny_model():
    """x[1,3,16,16] -> Conv3x3 -> SiLU -> [Conv1x1, MaxPool] -> Concat: exercises every row in seconds.

    16 channels: one AVX-512 vector, so the analytic conv schedule applies as on yolov8n.
    """
    from onnx import TensorProto, helper, numpy_helper

    from yolograph.ir.model import Model

    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.3, 16).astype(np.float32),
             "w2": rng.normal(0, 0.3, (16, 16, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Mul", ["c1", "s1"], ["a1"], name="mul1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2"),
        helper.make_node("MaxPool", ["a1"], ["p1"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c2", "p1"], ["y"], name="cat", axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return Model.from_onnx(proto, source="tiny")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny graph, short tuning, one round: checks the script runs")
    parser.add_argument("--tune-seconds", type=float, default=300.0, help="budget of the tuned row (0: no tuned row)")
    parser.add_argument("--budgets", default="", help="MetaSchedule-only rows: trials per kernel (comma list)")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (TVM uses all cores)")
    parser.add_argument("--rounds", type=int, default=4, help="turns: each model timed in a fresh process per turn")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model and turn")
    parser.add_argument("--no-naive", action="store_true", help="skip the two naive-loop rows (seconds per run)")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-map", action="store_true")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "yolograph" / "bench-tvm",
                        help="artifacts and tuning databases")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--retime", action="store_true",
                        help="re-measure the latency of the last run's models (--work, --out) on an idle machine")
    args = parser.parse_args(argv)
    if args.retime:
        return retime(args)
    if args.smoke:
        args.rounds, args.runs, args.tune_seconds, args.no_map = 1, 1, 20.0, True
        args.budgets = args.budgets or "1"

    import tvm

    from yolograph.backends import tvm as ytvm
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.backends.tvm.target import CPU_FAST_MATH, parse_target
    from yolograph.data import coco128, official_yolov8n
    from yolograph.evaluation import open_dataset
    from yolograph.evaluation.preprocess import preprocess_image
    from yolograph.frontends import load_model
    from yolograph.ir.serialization import save_model, write_bytes_atomic
    from yolograph.pipeline import run_pipeline

    work = args.work / ("smoke" if args.smoke else "full")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ["YOLOGRAPH_TVM_TUNING_DB"] = str(work / "db-none")  # untuned rows see no records,
    os.environ["YOLOGRAPH_TVM_SHIPPED_RECORDS"] = "0"  # not even the shipped ones (data/tuning)

    model = tiny_model() if args.smoke else load_model(official_yolov8n())
    model_path = work / "model.onnx"
    save_model(model, model_path)
    imgsz = tuple(model.inputs[0].shape[2:])
    coco = coco128()
    image, _ = preprocess_image(open_dataset(coco).image_paths[0], imgsz)
    inputs = {"random": np.random.default_rng(0).random(model.inputs[0].shape, dtype=np.float32), "real": image}
    host = parse_target(None)
    results: dict = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "llvm_cpu": host["mcpu"],
                    "ort_threads": args.threads, "tvm_threads": os.environ.get("TVM_NUM_THREADS", "all cores")},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "tvm_version": tvm.__version__,
        "model": "tiny Conv graph 3x16x16 (smoke)" if args.smoke else "yolov8n.onnx (COCO) 640x640",
        "smoke": args.smoke,
        "rows": {"ort-fp32": {"backend": "ort"}},
    }
    rows = results["rows"]
    manifest: dict[str, dict] = {"ort-fp32": {"kind": "ort", "path": str(model_path)}}
    ort = OrtRunner(model, OrtOptions(threads=args.threads))
    references = {name: ort.predict(x) for name, x in inputs.items()}

    def add_tvm(name: str, source, refs, **compile_kwargs) -> dict:
        start = time.perf_counter()
        path = ytvm.compile_model(source, work / f"{name}.so", **compile_kwargs)
        total = time.perf_counter() - start
        sidecar = json.loads((work / f"{name}.so.json").read_text())
        runner = ytvm.load_runner(path)
        tuning = sidecar["tuning"]
        row = {"backend": "tvm", "compile_s": round(total, 1), "target": sidecar["target"], "layout": sidecar["layout"],
               "analytic_schedules": sidecar["analytic_schedules"], "fast_exp": sidecar.get("fast_exp"),
               "kernels": tuning["tasks"], "tuned_kernels": tuning["tuned_tasks"],
               "analytic_conv_kernels": tuning["analytic_conv_tasks"], "naive_conv_kernels": tuning["naive_conv_tasks"],
               "error": {k: group_error(runner.predict(x), refs[k]) for k, x in inputs.items()}}
        for key in ("trials_run", "seconds", "cost_model", "analytic"):
            if key in tuning:
                row[f"tuning_{key}"] = tuning[key]
        rows[name] = row
        manifest[name] = {"kind": "tvm", "path": str(path)}
        print(f"{name}: compiled in {total:.0f} s", file=sys.stderr, flush=True)
        return row

    strict = json.dumps({**host, **{flag: False for flag in CPU_FAST_MATH}})
    if not args.no_naive:
        add_tvm("tvm-naive-nchw", model, references, layout="NCHW", analytic=False)
        add_tvm("tvm-naive-nhwc", model, references, layout="NHWC", analytic=False)
    add_tvm("tvm-analytic-exact-exp", model, references, target=strict)
    add_tvm("tvm-analytic", model, references)
    if args.tune_seconds:
        name = f"tvm-tuned-{args.tune_seconds:.0f}s"
        db = work / f"db-{args.tune_seconds:.0f}s"
        row = add_tvm(name, model, references, tune_seconds=args.tune_seconds, tuning_db=db)
        row["tune_seconds_budget"] = args.tune_seconds
        start = time.perf_counter()
        ytvm.compile_model(model, work / f"{name}-warm.so", tuning_db=db)
        row["warm_compile_s"] = round(time.perf_counter() - start, 1)
    for budget in [int(b) for b in args.budgets.split(",") if b.strip()]:
        from yolograph.backends.tvm.compile import lower_to_relax, resolve_options
        from yolograph.backends.tvm.coverage import extract_tasks

        db = work / f"db-b{budget}"
        options = resolve_options(model, target=None, tune_trials=0, tune_seconds=None, tuning_db=db, rpc=None,
                                  layout="NCHW", int8=None)
        kernels = len(extract_tasks(lower_to_relax(model, options)[0], tvm.target.Target(options.target)))
        trials = 2 if args.smoke else budget * kernels
        row = add_tvm(f"tvm-metaschedule-b{budget}", model, references, layout="NCHW", analytic=False,
                      tune_trials=trials, tuning_db=db)
        row["trials_per_kernel"] = budget

    if not args.no_int8:
        calibration = "count=2" if args.smoke else "range=0:32"
        placement = "profile=tvm,head_aware=false" if args.smoke else "profile=tvm"
        quantized, _ = run_pipeline(
            model, f"insert-qdq{{{placement}}},calibrate{{images={coco},{calibration},method=percentile}}", verify=False)
        quantized_path = work / "int8.onnx"
        save_model(quantized, quantized_path)
        # The reference runs the Q/DQ graph unfused (float math between exact Q/DQ): ORT's fused QLinearConv
        # on x86 without VNNI saturates its int16 pair sums (vpmaddubsw), so it is not the graph's meaning.
        ort_q = OrtRunner(quantized, OrtOptions(threads=args.threads, optimization="disable"))
        q_refs = {name: ort_q.predict(x) for name, x in inputs.items()}
        manifest["ort-int8"] = {"kind": "ort", "path": str(quantized_path)}
        rows["ort-int8"] = {"backend": "ort", "error_vs_ort_fp32": {k: group_error(q_refs[k], references[k]) for k in inputs}}
        for name, int8 in (("tvm-int8", True), ("tvm-int8-fsim", False)):
            row = add_tvm(name, quantized, q_refs, int8=int8)
            row["error_vs"] = "ort-int8"
            row["int8"] = json.loads((work / f"{name}.so.json").read_text())["int8"]

    (work / "manifest.json").write_text(json.dumps({"entries": manifest}))  # for --retime
    add_latency(rows, measure_latency(manifest, args))
    if not args.no_map:
        add_map(rows, manifest, coco, args.threads)
    write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    print(markdown(results))
    return 0


def add_latency(rows: dict, latency: dict[str, dict]) -> None:
    ort_ms = latency["ort-fp32"]["median_ms"]
    for name, stats in latency.items():
        rows[name].update(stats)
        rows[name]["speed_vs_ort_fp32"] = round(ort_ms / stats["median_ms"], 3)
    if "ort-int8" in latency:
        for name in ("tvm-int8", "tvm-int8-fsim"):
            rows[name]["speed_vs_ort_int8"] = round(latency["ort-int8"]["median_ms"] / latency[name]["median_ms"], 3)


def retime(args) -> int:
    """New latency for every model of the last run (its manifest in --work), written back into --out."""
    from yolograph.ir.serialization import write_bytes_atomic

    work = args.work / "full"
    results = json.loads(args.out.read_text())
    manifest = json.loads((work / "manifest.json").read_text())["entries"]
    add_latency(results["rows"], measure_latency(manifest, args))
    results["retimed"] = time.strftime("%Y-%m-%d %H:%M")
    write_bytes_atomic(args.out, json.dumps(results, indent=2).encode())
    print(markdown(results))
    return 0


def measure_latency(manifest: dict[str, dict], args) -> dict[str, dict]:
    """Median/p90 of every manifest entry, each timed alone in a fresh process, the entries taking turns."""
    from yolograph.runtime.timing import isolated_times, summarize_ms

    models = {name: (entry["kind"], Path(entry["path"])) for name, entry in manifest.items()}
    times = isolated_times(models, rounds=args.rounds, runs=args.runs, threads=args.threads)
    return {name: summarize_ms(values) for name, values in times.items()}


def add_map(rows: dict, manifest: dict, coco: Path, threads: int) -> None:
    """mAP50-95 on coco128 images 32-127 for ORT FP32/INT8 and the TVM default and INT8 artifacts."""
    from yolograph.backends import tvm as ytvm
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.evaluation import evaluate
    from yolograph.frontends import load_model

    for name in ("ort-fp32", "ort-int8", "tvm-analytic", "tvm-int8"):
        if name not in manifest:
            continue
        entry = manifest[name]
        runner = (OrtRunner(load_model(entry["path"]), OrtOptions(threads=threads)) if entry["kind"] == "ort"
                  else ytvm.load_runner(Path(entry["path"])))
        start = time.perf_counter()
        result = evaluate(runner.predict, coco, imgsz=(640, 640), images="32:128")
        rows[name]["map50_95"] = round(result.map50_95, 4)
        rows[name]["map50"] = round(result.map50, 4)
        print(f"{name}: mAP50-95 {result.map50_95:.4f} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)


def markdown(results: dict) -> str:
    lines = [f"{results['model']}, {results['machine']['cpu_count']} cores ({results['machine']['llvm_cpu']}), "
             f"{results['date']}, TVM {results['tvm_version']}", "",
             "| variant | median ms | p90 ms | speed vs ORT FP32 | conv kernels: analytic / naive / tuned of all | "
             "tuning | compile s | max rel. error (box / cls) | mAP50-95 |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: | --- | ---: |"]
    for name, row in results["rows"].items():
        tuning = ""
        if "tuning_seconds" in row:
            tuning = f"{row['tuning_seconds']:.0f} s, {row.get('tuning_trials_run', 0)} search trials"
            if row.get("tuning_analytic"):
                tuning += f" + {row['tuning_analytic']['candidates']} analytic candidates"
            if "warm_compile_s" in row:
                tuning += f"; warm compile {row['warm_compile_s']:.0f} s"
        kernels = (f"{row['analytic_conv_kernels']} / {row['naive_conv_kernels']} / {row['tuned_kernels']} of {row['kernels']}"
                   if "kernels" in row else "")
        errors = row.get("error") or row.get("error_vs_ort_fp32") or {}
        worst = {g: max(e[g] for e in errors.values()) for g in ("box", "cls")} if errors else None
        err = f"{worst['box']:.1e} / {worst['cls']:.1e}" if worst else ""
        if row.get("error_vs"):
            err += f" (vs {row['error_vs']})"
        elif "error_vs_ort_fp32" in row:
            err += " (vs ort-fp32)"
        map_ = f"{row['map50_95']:.4f}" if "map50_95" in row else ""
        lines.append(f"| {name} | {_ms(row.get('median_ms'))} | {_ms(row.get('p90_ms'))} | "
                     f"{row.get('speed_vs_ort_fp32', float('nan')):.3f}x | {kernels} | {tuning} | "
                     f"{row.get('compile_s', '')} | {err} | {map_} |")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if value >= 10 else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
