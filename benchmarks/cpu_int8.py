"""CPU INT8 side by side: yolograph on ONNX Runtime and OpenVINO against OpenVINO + NNCF (issue 20).

Rows, for the official yolov8n and the builder's yolov8s (random weights: speed only), batch 1:
float on ONNX Runtime; plain OpenVINO on the same ONNX (its default precision, bf16 on AVX512_BF16
CPUs, and f32); yolograph's OpenVINO backend on the float ONNX; NNCF INT8 (mixed preset, Detect decode
ignored, 32 calibration images; built here) on OpenVINO; yolograph INT8 with the ort-cpu profile on ONNX
Runtime and compiled by the OpenVINO backend; yolograph INT8 with the openvino profile on the OpenVINO
backend; ONNX Runtime quantize_static (decode excluded). With --tvm (issue 18), the TVM backend's rows too:
float32 (analytic schedules for the host's vector width), bf16 (where the CPU has AVX512_BF16/AMX-BF16)
and INT8 (the tvm profile's Q/DQ graph on the integer conv kernels: VNNI vpdpbusd, else exact int16
pairs), each compiled for the host. Calibration on coco128 images 0-31 (yolov8s,
timed only: 0-7), mAP50-95 on images 32-127 (yolov8n only), scored after all latency rounds.

Latency: every model alone in a fresh process per turn, all models taking turns for --rounds rounds.
yolograph rows go through `yolograph.runtime.isolated_times` (the backend's own runner); the peers
(plain OpenVINO, NNCF) through a bare OpenVINO process (`core.compile_model` + `infer`, nothing of
ours), so "within 5% of plain OpenVINO" includes our runner. Reported: median of all runs, and the
per-round ratios of medians against the anchors.

    pip install 'yolograph[openvino]' nncf      # nncf is for this benchmark only, never a runtime dependency
    python benchmarks/cpu_int8.py                # writes benchmarks/results/cpu_int8.json, prints the table
    python benchmarks/cpu_int8.py --smoke        # yolov8n, 2 calibration and 2 evaluation images, 1 round
    python benchmarks/cpu_int8.py --tvm          # also the TVM backend's float32, bf16 and INT8 rows (issue 18)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from yolograph.data import coco128, official_yolov8n
from yolograph.evaluation import evaluate
from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.frontends import load_model
from yolograph.ir.model import Model
from yolograph.ir.serialization import save_model, write_bytes_atomic
from yolograph.pipeline import run_pipeline
from yolograph.runtime import isolated_times
from yolograph.runtime.ort import OrtOptions, OrtRunner

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_int8.json"
ORT_FLOAT = "float, ONNX Runtime"
OV_DEFAULT = "OpenVINO default precision (plain)"
OV_F32 = "OpenVINO f32 (plain)"
OURS_OV_FLOAT = "yolograph float, OpenVINO backend"
NNCF = "NNCF INT8 (mixed, decode ignored), OpenVINO"
OURS_ORT = "yolograph INT8 ort-cpu, ONNX Runtime"
OURS_ORT_ON_OV = "yolograph INT8 ort-cpu graph, OpenVINO backend"
OURS_OV = "yolograph INT8 openvino profile, OpenVINO backend"
ORT_STATIC = "ORT quantize_static (decode excluded), ONNX Runtime"
TVM_FLOAT = "yolograph float32, TVM backend"
TVM_BF16 = "yolograph bf16, TVM backend"
OURS_TVM = "yolograph INT8 tvm profile, TVM backend"
# Rows scored in this order (the results are rewritten after each: the targets' rows come first).
MAP_ORDER = [NNCF, OURS_OV, OURS_ORT, OURS_TVM, TVM_BF16, ORT_FLOAT, OV_DEFAULT, ORT_STATIC, OURS_ORT_ON_OV, OURS_OV_FLOAT,
             OV_F32, TVM_FLOAT]


def pipelines(calib: str, calib_range: str) -> dict[str, str]:
    data = f"calibrate{{images={calib},range={calib_range}}}"
    return {OURS_ORT: f"fold-bn,cleanup,fast-dfl,insert-qdq{{profile=ort-cpu}},{data}",
            # No fast-dfl: OpenVINO runs the DFL MatMul as an f32 FullyConnected, slower than the DFL conv.
            OURS_OV: f"fold-bn,cleanup,insert-qdq{{profile=openvino}},{data}",
            OURS_TVM: f"fold-bn,cleanup,insert-qdq{{profile=tvm}},{data}"}


def calibration_tensors(calib: str, calib_range: str) -> list[np.ndarray]:
    return list(CalibrationSource(images=calib, range=calib_range).tensors((640, 640)))


def nncf_int8(onnx_path: Path, model: Model, calib: str, calib_range: str, output: Path) -> float:
    """NNCF post-training INT8 as Ultralytics' OpenVINO export does it; returns its seconds."""
    import nncf
    import openvino as ov

    converted = ov.convert_model(str(onnx_path))
    names = {op.get_friendly_name() for op in converted.get_ops()}
    ignored = sorted(n for n in model.facts.decode_nodes if n in names)
    data = calibration_tensors(calib, calib_range)
    start = time.perf_counter()
    quantized = nncf.quantize(converted, nncf.Dataset(data), preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(data), ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    seconds = time.perf_counter() - start
    ov.save_model(quantized, str(output), compress_to_fp16=False)
    return seconds


def ort_static(onnx_path: Path, model: Model, calib: str, calib_range: str, output: Path) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.tensors = iter(calibration_tensors(calib, calib_range))

        def get_next(self):
            tensor = next(self.tensors, None)
            return None if tensor is None else {model.inputs[0].name: tensor}

    quantize_static(str(onnx_path), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=sorted(model.facts.decode_nodes))


def tvm_artifact(model: Model, output: Path, **options) -> dict:
    """Compile for the host with the TVM backend: the row's spec, with compile time and what it ran."""
    from yolograph.backends.tvm import compile_model

    start = time.perf_counter()
    path = compile_model(model, output, **options)
    sidecar = json.loads(Path(str(path) + ".json").read_text())
    return {"kind": "tvm", "path": path, "compile_seconds": round(time.perf_counter() - start, 1),
            "target": sidecar["target"], **{k: sidecar[k] for k in ("precision", "int8") if k in sidecar}}


def tvm_rows(name: str, model: Model, quantized: Model, folder: Path) -> dict[str, dict]:
    from yolograph.errors import BackendError

    rows = {TVM_FLOAT: tvm_artifact(model, folder / f"{name}-tvm-fp32.so")}
    try:
        rows[TVM_BF16] = tvm_artifact(model, folder / f"{name}-tvm-bf16.so", precision="bf16")
    except BackendError as exc:  # no AVX512_BF16 here: emulated bf16 would time the casts, not the kernels
        print(f"[{name}] no {TVM_BF16} row: {exc}", file=sys.stderr, flush=True)
    rows[OURS_TVM] = tvm_artifact(quantized, folder / f"{name}-tvm-int8.so", int8=True)
    return rows


def build_rows(name: str, model: Model, calib: str, calib_range: str, folder: Path, threads: int,
               tvm: bool = False) -> dict[str, dict]:
    """Every row's artifact for one model: {row: {kind, path, note}} (kind: ort | openvino | tvm | raw)."""
    from yolograph.backends.openvino import compile_model
    from yolograph.backends.openvino.settings import RuntimeConfig

    folder.mkdir(parents=True, exist_ok=True)
    float_onnx = save_model(model, folder / f"{name}.onnx")
    rows: dict[str, dict] = {
        ORT_FLOAT: {"kind": "ort", "path": float_onnx},
        OV_DEFAULT: {"kind": "raw", "path": float_onnx, "precision": None},
        OV_F32: {"kind": "raw", "path": float_onnx, "precision": "f32"},
    }
    rows[OURS_OV_FLOAT] = {"kind": "openvino", "path": compile_model(model, folder / f"{name}-float.xml",
                                                                     RuntimeConfig(threads=threads), quiet=True)}
    print(f"[{name}] nncf", file=sys.stderr, flush=True)
    seconds = nncf_int8(float_onnx, model, calib, calib_range, folder / f"{name}-nncf.xml")
    rows[NNCF] = {"kind": "raw", "path": folder / f"{name}-nncf.xml", "precision": None,
                  "quantize_seconds": round(seconds, 1)}
    for row, pipeline in pipelines(calib, calib_range).items():
        if row == OURS_TVM and not tvm:
            continue
        print(f"[{name}] {row}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        quantized, _ = run_pipeline(model.copy(), pipeline)
        info = {"pipeline": pipeline.replace(calib, "<coco128>"), "quantize_seconds": round(time.perf_counter() - start, 1)}
        if row == OURS_TVM:
            print(f"[{name}] TVM compiles", file=sys.stderr, flush=True)
            tvm_built = tvm_rows(name, model, quantized, folder)
            tvm_built[OURS_TVM].update(info)
            rows.update(tvm_built)
        elif row == OURS_ORT:
            rows[row] = {"kind": "ort", "path": save_model(quantized, folder / f"{name}-ort-cpu.onnx"), **info}
            rows[OURS_ORT_ON_OV] = {"kind": "openvino", **info, "path": compile_model(
                quantized, folder / f"{name}-ort-cpu.xml", RuntimeConfig(threads=threads), quiet=True)}
        else:
            xml = compile_model(quantized, folder / f"{name}-openvino.xml", RuntimeConfig(threads=threads), quiet=True)
            rows[row] = {"kind": "openvino", "path": xml, **info,
                         "inference_precision": json.loads(Path(str(xml) + ".json").read_text())["inference_precision"]}
    print(f"[{name}] quantize_static", file=sys.stderr, flush=True)
    ort_static(float_onnx, model, calib, calib_range, folder / f"{name}-ort-static.onnx")
    rows[ORT_STATIC] = {"kind": "ort", "path": folder / f"{name}-ort-static.onnx"}
    return rows


def raw_openvino_times(path: Path, precision: str | None, runs: int, warmup: int, threads: int) -> list[float]:
    """Time a model in a fresh process that uses bare OpenVINO only (the peer rows)."""
    with tempfile.TemporaryDirectory() as temp:
        out = Path(temp) / "times.json"
        subprocess.run([sys.executable, __file__, "--time-raw", str(path), "--runs", str(runs), "--warmup", str(warmup),
                        "--threads", str(threads), "--precision", precision or "", "--out", str(out)], check=True)
        return json.loads(out.read_text())


def _time_raw(args: argparse.Namespace) -> int:
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}
    if args.precision:
        config["INFERENCE_PRECISION_HINT"] = args.precision
    compiled = core.compile_model(str(args.time_raw), "CPU", config)
    request = compiled.create_infer_request()
    shape = [d.get_length() for d in compiled.inputs[0].get_partial_shape()]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(args.warmup):
        request.infer({0: x})
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        request.infer({0: x})
        times.append((time.perf_counter() - start) * 1e3)
    args.out.write_text(json.dumps(times))
    return 0


def latency(rows: dict[str, dict], rounds: int, runs: int, warmup: int, threads: int) -> dict[str, list[list[float]]]:
    """Per row, the timed runs of each round (every row alone in a fresh process, rows taking turns)."""
    times: dict[str, list[list[float]]] = {row: [] for row in rows}
    for turn in range(rounds):
        print(f"[latency] round {turn + 1}/{rounds}", file=sys.stderr, flush=True)
        for row, spec in rows.items():
            if spec["kind"] == "raw":
                times[row].append(raw_openvino_times(spec["path"], spec.get("precision"), runs, warmup, threads))
            else:
                result = isolated_times({row: (spec["kind"], spec["path"])}, rounds=1, runs=runs, threads=threads,
                                        warmup=warmup)
                times[row].append([float(t) for t in result[row]])
    return times


def accuracy(rows: dict[str, dict], calib: str, images: str, threads: int) -> dict[str, dict]:
    from yolograph.backends.openvino.runner import OpenVinoRunner
    from yolograph.backends.openvino.settings import RuntimeConfig

    scores = {}
    for row, spec in rows.items():
        print(f"[mAP] {row}", file=sys.stderr, flush=True)
        if spec["kind"] == "ort":
            predict = OrtRunner(load_model(str(spec["path"])), OrtOptions(threads=threads)).predict
        elif spec["kind"] == "raw":
            predict = OpenVinoRunner(spec["path"], config=RuntimeConfig(threads=threads,
                                                                        inference_precision=spec.get("precision"))).predict
        elif spec["kind"] == "tvm":
            from yolograph.backends.tvm import load_runner

            predict = load_runner(spec["path"], threads=threads).predict
        else:
            predict = OpenVinoRunner(spec["path"], threads=threads).predict
        result = evaluate(predict, calib, images=images)
        scores[row] = {"map50_95": round(result.map50_95, 4), "map50": round(result.map50, 4), "images": result.images}
    return scores


def summarize(times: dict[str, list[list[float]]]) -> dict[str, dict]:
    medians = {row: [float(np.median(r)) for r in rounds] for row, rounds in times.items()}
    out = {}
    for row, rounds in times.items():
        flat = [t for r in rounds for t in r]
        entry = {"median_ms": round(float(np.median(flat)), 2), "min_ms": round(float(np.min(flat)), 2),
                 "round_medians_ms": [round(m, 2) for m in medians[row]]}
        for anchor, key in ((NNCF, "speedup_vs_nncf_per_round"), (ORT_FLOAT, "speedup_vs_ort_float_per_round"),
                            (OV_DEFAULT, "speedup_vs_plain_openvino_per_round")):
            if anchor in medians and row != anchor:
                entry[key] = [round(a / b, 3) for a, b in zip(medians[anchor], medians[row])]
        out[row] = entry
    return out


def targets(result: dict) -> dict:
    """The issue's three targets, from yolov8n's rows (ratio of medians; per-round range beside it)."""
    rows = result["models"]["yolov8n"]["rows"]

    def ratio(a: str, b: str) -> float:
        return round(rows[a]["median_ms"] / rows[b]["median_ms"], 3)

    ours = [r for r in (OURS_OV, OURS_ORT, OURS_ORT_ON_OV, OURS_TVM) if r in rows]
    best = min(ours, key=lambda r: rows[r]["median_ms"])  # its best CPU backend
    maps = {r: rows[r].get("map50_95") for r in (best, NNCF)}
    found = {} if OURS_TVM not in rows else {"tvm": tvm_targets(rows, ratio)}
    return {**found,
        "best_int8_vs_nncf": {"row": best, "speedup": ratio(NNCF, best), "target": 1.1,
                              "map50_95": maps[best], "nncf_map50_95": maps[NNCF],
                              "met": ratio(NNCF, best) >= 1.1 and (maps[best] or 0) >= (maps[NNCF] or 0)},
        "ort_int8_vs_ort_float": {"speedup": ratio(ORT_FLOAT, OURS_ORT), "target": 2.0,
                                  "met": ratio(ORT_FLOAT, OURS_ORT) >= 2.0},
        "openvino_backend_float_vs_plain": {"slowdown": round(1 / ratio(OV_DEFAULT, OURS_OV_FLOAT), 3),
                                            "target": 1.05, "met": 1 / ratio(OV_DEFAULT, OURS_OV_FLOAT) <= 1.05},
    }


def tvm_targets(rows: dict[str, dict], ratio) -> dict:
    """Issue 18's targets from the --tvm rows: INT8 vs TVM float and NNCF (mAP within 0.3 point of
    yolograph's ORT INT8), float32 vs OpenVINO f32, bf16 vs OpenVINO's default precision."""
    int8_map, ort_map = rows[OURS_TVM].get("map50_95"), rows[OURS_ORT].get("map50_95")
    found = {
        "int8_vs_tvm_float": {"speedup": ratio(TVM_FLOAT, OURS_TVM), "target": 1.5, "met": ratio(TVM_FLOAT, OURS_TVM) >= 1.5},
        "int8_vs_nncf": {"speedup": ratio(NNCF, OURS_TVM), "target": 1.1, "map50_95": int8_map,
                         "ort_int8_map50_95": ort_map, "met": ratio(NNCF, OURS_TVM) >= 1.1 and None not in (int8_map, ort_map)
                         and int8_map >= ort_map - 0.003},
        "float32_vs_openvino_f32": {"speedup": ratio(OV_F32, TVM_FLOAT), "target": 1.0,
                                    "met": ratio(OV_F32, TVM_FLOAT) >= 1.0},
    }
    if TVM_BF16 in rows:
        found["bf16_vs_openvino_default"] = {"speedup": ratio(OV_DEFAULT, TVM_BF16), "target": 1.0,
                                             "map50_95": rows[TVM_BF16].get("map50_95"),
                                             "met": ratio(OV_DEFAULT, TVM_BF16) >= 1.0}
    return found


def markdown_table(result: dict) -> str:
    lines = []
    for name, entry in result["models"].items():
        lines += [f"**{name}** ({entry['weights']})", "",
                  "| model / runtime | median ms | min ms | per-round speed-up vs NNCF | vs ORT float | mAP50-95 |",
                  "| --- | ---: | ---: | --- | --- | ---: |"]
        for row, r in entry["rows"].items():
            nncf = ", ".join(f"{x:.2f}" for x in r.get("speedup_vs_nncf_per_round", [])) or "—"
            ort = ", ".join(f"{x:.2f}" for x in r.get("speedup_vs_ort_float_per_round", [])) or "—"
            score = f"{r['map50_95']:.4f}" if r.get("map50_95") is not None else "—"
            lines.append(f"| {row} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {nncf} | {ort} | {score} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="latency turns: each model alone in a fresh process")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model and turn")
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--models", default="yolov8n,yolov8s")
    parser.add_argument("--tvm", action="store_true", help="add the TVM backend's float32, bf16 and INT8 rows")
    parser.add_argument("--time-raw", type=Path, help=argparse.SUPPRESS)  # the bare-OpenVINO timing process
    parser.add_argument("--precision", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_raw:
        raise SystemExit(_time_raw(args))
    import openvino

    calib_range, eval_range = ("0:2", "32:34") if args.smoke else ("0:32", "32:128")
    if args.smoke:
        args.rounds, args.runs, args.warmup, args.models = 1, 2, 1, "yolov8n"
    calib = str(coco128())
    result: dict = {"host": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                             "note": "shared 2-core VM: read ratios within one run, not absolute ms"},
                    "openvino": openvino.__version__, "evaluation": f"coco128 {eval_range}",
                    "rounds": args.rounds, "runs": args.runs, "models": {}}
    with tempfile.TemporaryDirectory() as temp:
        built = {}
        for name in args.models.split(","):
            # yolov8s has random weights (speed only): 8 calibration images are enough to time it.
            model_range = calib_range if name == "yolov8n" else ("0:2" if args.smoke else "0:8")
            model = load_model(str(official_yolov8n()) if name == "yolov8n" else name)
            built[name] = build_rows(name, model, calib, model_range, Path(temp) / name, args.threads, tvm=args.tvm)
            result["models"][name] = {"weights": "COCO-trained" if name == "yolov8n" else "random (speed only)",
                                      "calibration": f"coco128 {model_range}", "rows": {}}
        for name, rows in built.items():
            summary = summarize(latency(rows, args.rounds, args.runs, args.warmup, args.threads))
            for row, spec in rows.items():
                summary[row].update({k: v for k, v in spec.items() if k not in ("kind", "path")})
            result["models"][name]["rows"] = summary
        write_bytes_atomic(args.out, json.dumps(result, indent=2).encode())  # latency first: mAP takes longest
        if "yolov8n" in built:
            rows = built["yolov8n"]
            for row in sorted(rows, key=lambda r: MAP_ORDER.index(r)):
                result["models"]["yolov8n"]["rows"][row].update(accuracy({row: rows[row]}, calib, eval_range,
                                                                         args.threads)[row])
                result["targets"] = targets(result)
                write_bytes_atomic(args.out, json.dumps(result, indent=2).encode())
    print(markdown_table(result))
    print(json.dumps(result.get("targets", {}), indent=2))
    return result


if __name__ == "__main__":
    main()
