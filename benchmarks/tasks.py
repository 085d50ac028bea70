"""Every YOLO task through the main pipelines: the issue-16 matrix, per output group.

Models: the random-weight fixtures of every task (detect, segment, pose, obb, classify, YOLO11n,
YOLO26n), read from their Ultralytics ONNX export and from their `.pt` checkpoint. Pipelines:
fold-bn+cleanup (--verify), INT8 ort-cpu and INT8 trt (insert-qdq + calibrate on coco128 images 0-31,
--verify: calibrate's per-group SQNR floor), to-nhwc (--verify) and prune{macs=0.1}. For each row:
zero crashes expected; the SQNR of each output group against the float model loaded from the same
file on images 32-63 (anchor-wise groups where the float model scores >= 0.05); label-free agreement
with the float model on images 32-127 (yolograph.evaluation.fidelity: box mAP for detect, mask mAP for
segment, OKS mAP for pose, rotated-IoU mAP for obb, top-1 for classify); the pipeline's time and the
row's peak memory (each row runs in a fresh child process, so ru_maxrss is that row's peak).

Targets (INT8 rows): every coordinate-like group (box, mask coefficients, prototypes, keypoint x/y,
angle) within 3 dB of the model's box group or better, every score-like group >= 5 dB.

    python benchmarks/tasks.py                      # full run -> benchmarks/results/tasks.json
    python benchmarks/tasks.py --smoke              # 2 calibration / 2 measured images, no agreement
    python benchmarks/tasks.py --models segment,obb --sources onnx --pipelines int8-trt
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "tasks.json"

MODELS = {
    "detect": "yolov8n-rand",
    "segment": "variants/yolov8n-seg-rand",
    "pose": "variants/yolov8n-pose-rand",
    "obb": "variants/yolov8n-obb-rand",
    "classify": "variants/yolov8n-cls-rand",
    "yolo11n": "variants/yolo11n-rand",
    "yolo26n": "variants/yolo26n-rand",
}
INT8_TARGET_GAP_DB = 3.0  # coordinate-like groups: at most this far below the box group
INT8_TARGET_SCORE_DB = 5.0  # score-like groups: at least this
CONFIDENT = 0.05  # anchor-wise groups are measured where the float model's best score reaches this


def pipelines(calib: str, calib_range: str, calib_count: int) -> dict[str, tuple[str, bool]]:
    """Row name -> (pipeline text, verify)."""
    calibrate = f"calibrate{{images={calib},range={calib_range}}}"
    return {
        "fold-bn+cleanup": ("fold-bn,cleanup", True),
        # INT8 rows run unverified and check calibrate's contract afterwards (the `contract` column), so a
        # contract miss on the verifier's noise inputs is recorded next to the measured groups, not a crash.
        "int8-ort-cpu": (f"fold-bn,cleanup,insert-qdq{{profile=ort-cpu}},{calibrate}", False),
        "int8-trt": (f"fold-bn,cleanup,insert-qdq{{profile=trt}},{calibrate}", False),
        "to-nhwc": ("cleanup,to-nhwc", True),
        "prune-0.1": (f"fold-bn,cleanup,prune{{macs=0.1,images={calib},count={calib_count}}}", False),
    }


def model_path(key: str, source: str) -> Path:
    from yolograph.data import fixtures

    return fixtures() / f"{MODELS[key]}.{source}"


def run_row(model_key: str, source: str, row: str, options: dict[str, Any]) -> dict[str, Any]:
    """One matrix cell, in this (fresh) process: pipeline, per-group SQNR, agreement, time, peak memory."""
    result: dict[str, Any] = {"model": model_key, "source": source, "pipeline": row}
    try:
        result.update(_measure(model_key, source, row, options))
        result["status"] = "ok"
    except Exception as exc:  # a crash is a result of this benchmark: recorded, never hidden
        result["status"] = "error"
        result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
        result["traceback"] = traceback.format_exc().splitlines()[-3:]
    result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _measure(model_key: str, source: str, row: str, options: dict[str, Any]) -> dict[str, Any]:
    import os

    os.environ.setdefault("YOLOGRAPH_PROGRESS", "0")
    from yolograph.evaluation.calibration_data import CalibrationSource
    from yolograph.frontends import load_model
    from yolograph.pipeline import run_pipeline
    from yolograph.pipeline.verify import confident_group_sqnr
    from yolograph.runtime import OrtRunner

    path = model_path(model_key, source)
    model = load_model(path)
    text, verify = pipelines(options["calib"], options["calib_range"], options["calib_count"])[row]
    start = time.perf_counter()
    optimized, report = run_pipeline(model, text, verify=verify)
    seconds = time.perf_counter() - start
    images = list(CalibrationSource(options["calib"], range=options["measure_range"]).tensors(model.facts.imgsz))
    float_runner, new_runner = OrtRunner(model), OrtRunner(optimized)
    reference = [float_runner.run({model.inputs[0].name: x}) for x in images]
    candidate = [new_runner.run({optimized.inputs[0].name: _as_input(x, optimized)}) for x in images]
    groups = confident_group_sqnr(model, reference, candidate, CONFIDENT)
    out: dict[str, Any] = {
        "task": model.facts.task,
        "pipeline_text": text,
        "seconds": round(seconds, 2),
        "verified": [record.verified for record in report.records] if verify else None,
        "groups_db": {label: round(db, 2) for label, db in groups.items()},
        "group_kinds": {g.label: g.kind for g in model.facts.output_groups},
        "macs_ratio": round(report.output.macs / report.input.macs, 4) if report.input.macs else None,
    }
    if row.startswith("int8"):
        out["contract"] = _calibrate_contract(model, optimized)
    if options.get("agreement_range"):
        out["agreement"] = _agreement(optimized, model, options)
    return out


def _calibrate_contract(reference, candidate) -> str:
    """calibrate's contract (per-group SQNR floor) on the verifier's seeded noise inputs: ok or the miss."""
    from yolograph.passes.calibrate import Calibrate
    from yolograph.pipeline.verify import group_labels, run_groups, verification_inputs

    feeds = verification_inputs(reference)
    failure = Calibrate.contract.check(run_groups(reference, feeds), run_groups(candidate, feeds))
    if failure is None:
        return "ok"
    index = int(failure.split()[2]) if failure.startswith("output group") else None
    labels = group_labels(reference)
    return f"{labels[index]}: {failure}" if index is not None and index < len(labels) else failure


def _as_input(tensor, model):
    """The NCHW image as `model` takes it (to-nhwc's io option makes the input NHWC)."""
    return tensor.transpose(0, 2, 3, 1).copy() if tuple(model.inputs[0].shape) == (1, *tensor.shape[2:], 3) else tensor


def _agreement(candidate, reference, options) -> dict[str, Any] | None:
    try:
        from yolograph.evaluation.fidelity import agreement
    except ImportError:
        return None
    score = agreement(candidate, reference, options["calib"], options["agreement_range"], threads=options["threads"])
    data = score.to_json() if hasattr(score, "to_json") else dict(vars(score))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in data.items()}


def target_check(row: dict[str, Any]) -> list[str]:
    """The INT8 target's misses of one row (empty when met)."""
    if not row["pipeline"].startswith("int8") or row.get("status") != "ok":
        return []
    groups, kinds = row["groups_db"], row["group_kinds"]
    box = next((db for label, db in groups.items() if label.endswith(":box")), None)
    misses = []
    for label, db in groups.items():
        kind = kinds.get(label)
        if kind == "score" and db < INT8_TARGET_SCORE_DB:
            misses.append(f"{label} {db:.1f} dB < {INT8_TARGET_SCORE_DB:g}")
        if kind == "coordinate" and box is not None and not label.endswith(":box") and db < box - INT8_TARGET_GAP_DB:
            misses.append(f"{label} {db:.1f} dB more than {INT8_TARGET_GAP_DB:g} below box {box:.1f}")
    return misses


def run_matrix(models: list[str], sources: list[str], rows: list[str], options: dict[str, Any],
               log=print, on_row=None) -> list[dict[str, Any]]:
    """Every (model, source, row), each in a fresh child process."""
    context = multiprocessing.get_context("spawn")
    results = []
    for model_key in models:
        for source in sources:
            for row in rows:
                with context.Pool(1, maxtasksperchild=1) as pool:
                    result = pool.apply(run_row, (model_key, source, row, options))
                result["target_misses"] = target_check(result)
                results.append(result)
                log(format_row(result), flush=True)
                if on_row is not None:
                    on_row(results)
    return results


def format_row(row: dict[str, Any]) -> str:
    head = f"{row['model']:<9} {row['source']:<4} {row['pipeline']:<16}"
    if row["status"] != "ok":
        return f"{head} ERROR {row['error']}"
    groups = " ".join(f"{label.split(':')[-1]}={db:.1f}" for label, db in row["groups_db"].items())
    agreement = row.get("agreement") or {}
    score = agreement.get("value")
    extra = f" agree={score:.3f}" if score is not None else ""
    contract = f"  contract: {row['contract']}" if row.get("contract") not in (None, "ok") else ""
    misses = f"  MISSES: {'; '.join(row['target_misses'])}" if row.get("target_misses") else ""
    return f"{head} {groups}{extra}  {row['seconds']:.0f}s {row['peak_mb']:.0f}MB{misses}{contract}"


def main(argv: list[str] | None = None) -> int:
    from yolograph.data import coco128

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sources", default="onnx,pt")
    parser.add_argument("--pipelines", default=",".join(pipelines("", "", 1)))
    parser.add_argument("--calib-range", default="0:32")
    parser.add_argument("--measure-range", default="32:64")
    parser.add_argument("--agreement-range", default="32:128", help="empty: no agreement scoring")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.calib_range, args.measure_range, args.agreement_range = "0:2", "32:34", ""
    start, stop = (int(v) for v in args.calib_range.split(":"))
    options = {"calib": str(coco128()), "calib_range": args.calib_range, "calib_count": stop - start,
               "measure_range": args.measure_range, "agreement_range": args.agreement_range or None,
               "threads": args.threads}
    from yolograph.ir.serialization import write_bytes_atomic

    def save(results: list[dict[str, Any]]) -> dict[str, Any]:  # after every row: a long run keeps what it did
        payload = {
            "options": options,
            "host": {"machine": platform.machine(), "processor": platform.processor(),
                     "python": sys.version.split()[0], "note": "shared host: times are indicative"},
            "rows": results,
            "crashes": sum(r["status"] != "ok" for r in results),
            "target_misses": sum(bool(r["target_misses"]) for r in results),
        }
        write_bytes_atomic(args.output, (json.dumps(payload, indent=1) + "\n").encode())
        return payload

    results = run_matrix(args.models.split(","), args.sources.split(","), args.pipelines.split(","), options,
                         on_row=save)
    payload = save(results)
    print(f"{len(results)} rows, {payload['crashes']} crashes, {payload['target_misses']} rows missing the INT8 target"
          f" -> {args.output}")
    return 1 if payload["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
