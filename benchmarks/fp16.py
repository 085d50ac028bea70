"""to-fp16 accuracy benchmark on ONNX Runtime (CPU): mAP and per-group SQNR, float vs float16.

Trained yolov8n (../shared/data/yolov8n.onnx): mAP50-95 / mAP50 on coco128 images 32-127 of the float
model, of `to-fp16`, of the trt-profile INT8 Q/DQ graph (calibrated on images 0-31) and of that INT8
graph with `to-fp16` on top (INT8 convs, float16 elsewhere: TensorRT's "best" mode in the graph). Every
pipeline runs with --verify, so each row's pass contracts held; the per-group SQNR is the pass's own
measurement (seeded random probe images, against the model before the pass) plus the SQNR against the
float model on the first evaluation images.

Random-weight fixtures (../shared/data/fixtures/variants/): `to-fp16` with --verify, its per-group SQNR,
and label-free agreement with the float model's confident predictions on coco128 images 32-63 (the
task's measure; a copy of the float model scores 1.0).

    python benchmarks/fp16.py                 # -> benchmarks/results/fp16.json, prints the README tables
    python benchmarks/fp16.py --smoke --out /tmp/f.json   # seconds: 2 evaluation images, one variant
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from yolograph.data import coco128, data_root, official_yolov8n
from yolograph.evaluation import evaluate
from yolograph.evaluation.fidelity import agreement
from yolograph.frontends import load_model
from yolograph.ir.serialization import write_bytes_atomic
from yolograph.pipeline import run_pipeline
from yolograph.pipeline.passes import sqnr_db
from yolograph.pipeline.verify import labelled_output_groups
from yolograph.runtime import OrtRunner

RESULTS = Path(__file__).resolve().parent / "results" / "fp16.json"
VARIANTS = ("yolov8n-seg-rand", "yolov8n-pose-rand", "yolov8n-obb-rand", "yolov8n-cls-rand", "yolo11n-rand",
            "yolo26n-rand")


def yolov8n_rows(images: str, eval_range: str, probe_images: int) -> list[dict]:
    calib = f"calibrate{{images={images},range=0:32}}"
    configs = [
        ("float", None),
        ("fp16", "to-fp16"),
        ("int8 (trt profile)", f"cleanup,insert-qdq{{profile=trt}},{calib}"),
        ("int8 + fp16", f"cleanup,insert-qdq{{profile=trt}},{calib},to-fp16"),
    ]
    base = load_model(official_yolov8n())
    reference_runner = OrtRunner(base)
    probe = _probe_tensors(images, eval_range, probe_images)
    reference_outputs = [reference_runner.run(t) for t in probe]
    rows = []
    for name, pipeline in configs:
        start = time.perf_counter()
        model, report = (base, None) if pipeline is None else run_pipeline(base, pipeline, verify=True)
        runner = OrtRunner(model)
        result = evaluate(runner.predict, images, images=eval_range)
        row = {"config": name, "pipeline": pipeline, "map50_95": result.map50_95, "map50": result.map50,
               "images": result.images, "seconds": round(time.perf_counter() - start, 1)}
        row["sqnr_vs_float_db"] = _group_sqnr(base, reference_outputs, [runner.run(t) for t in probe])
        if report is not None:
            fp16 = [r for r in report.records if r.name == "to-fp16"]
            if fp16:
                row["to_fp16_stats"] = fp16[0].stats
            row["verified"] = [r.verified for r in report.records]
        rows.append(row)
        print(f"{name:<20} mAP50-95 {row['map50_95']:.4f}  mAP50 {row['map50']:.4f}  "
              f"vs float {row['sqnr_vs_float_db']}", flush=True)
    return rows


def variant_rows(images: str, agreement_range: str, names: tuple[str, ...]) -> list[dict]:
    rows = []
    for name in names:
        path = data_root() / "fixtures" / "variants" / f"{name}.onnx"
        base = load_model(path)
        start = time.perf_counter()
        model, report = run_pipeline(base, "to-fp16", verify=True)
        stats = report.records[0].stats
        score = agreement(model, base, images, agreement_range)
        row = {"model": name, "task": base.facts.task, "verified": report.records[0].verified,
               "group_sqnr_db": stats["group_sqnr_db"], "groups": _labels(base),
               "float32_islands": stats["float32_islands"], "casts": stats["casts"],
               "agreement": score.to_json(), "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{name:<20} {row['verified']}  dB {row['group_sqnr_db']}  {score.metric} {score.value:.4f}", flush=True)
    return rows


def _probe_tensors(images: str, eval_range: str, count: int) -> list[np.ndarray]:
    from yolograph.evaluation.calibration_data import load_calibration_tensors

    start = int(eval_range.split(":")[0])
    return list(load_calibration_tensors(images, None, (640, 640), image_range=f"{start}:{start + count}"))


def _group_sqnr(model, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict[str, float]:
    ref = [labelled_output_groups(model, outs) for outs in reference]
    new = [labelled_output_groups(model, outs) for outs in candidate]
    result = {}
    for index, (label, _) in enumerate(ref[0]):
        a = np.stack([groups[index][1] for groups in ref])
        b = np.stack([groups[index][1] for groups in new])
        result[label] = round(sqnr_db(a, b), 2)
    return result


def _labels(model) -> list[str]:
    from yolograph.pipeline.verify import group_labels

    return group_labels(model)


def markdown(results: dict) -> str:
    lines = ["| model | mAP50-95 | mAP50 | Δ mAP50-95 (points) | SQNR vs float (dB, per group) |",
             "| --- | ---: | ---: | ---: | --- |"]
    rows = results["yolov8n"]
    floats = rows[0]["map50_95"]
    for row in rows:
        db = ", ".join(f"{k.split(':')[-1]} {v}" for k, v in row["sqnr_vs_float_db"].items())
        lines.append(f"| {row['config']} | {row['map50_95']:.4f} | {row['map50']:.4f} | "
                     f"{100 * (row['map50_95'] - floats):+.2f} | {db} |")
    lines += ["", "| fixture | task | verify | to-fp16 SQNR (dB, per group) | agreement with float |",
              "| --- | --- | --- | --- | --- |"]
    for row in results["variants"]:
        db = ", ".join(f"{label.split(':')[-1]} {value}" for label, value in zip(row["groups"], row["group_sqnr_db"]))
        score = row["agreement"]
        lines.append(f"| {row['model']} | {row['task']} | {row['verified']} | {db} | "
                     f"{score['metric']} {score['value']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    images = str(coco128())
    eval_range, agree_range = ("32:34", "32:34") if args.smoke else ("32:128", "32:64")
    names = VARIANTS[-1:] if args.smoke else VARIANTS
    results = {
        "host": "2-core shared VM, ONNX Runtime CPU",
        "eval_images": eval_range,
        "agreement_images": agree_range,
        "yolov8n": yolov8n_rows(images, eval_range, 2 if args.smoke else 4),
        "variants": variant_rows(images, agree_range, names),
    }
    write_bytes_atomic(args.out, (json.dumps(results, indent=2) + "\n").encode())
    print(markdown(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
