"""Structured pruning benchmark: MACs, params, ORT speed-up and mAP50-95 of pruned yolov8n, no fine-tuning.

Official yolov8n (../shared/data/yolov8n.onnx), calibration images coco128 0-31 (the first 32, sorted),
evaluation images 32-127. Each configuration is one `prune{...}` pipeline (optionally followed by
insert-qdq + calibrate for INT8). Latency: after every configuration is built and evaluated, each model
(the unpruned baseline included) is timed alone in a fresh process, the models taking turns
(`isolated_times`: two ORT sessions alternating in one process slow each other through their spinning
thread pools); the speed-up is baseline median / model median from that one run.

    python benchmarks/pruning.py                       # the sweep -> benchmarks/results/pruning.json
    python benchmarks/pruning.py --only act-seq-30     # a subset (merged into the JSON; baseline re-timed)
    python benchmarks/pruning.py --smoke --out /tmp/p.json   # seconds: one tiny config, 2 eval images

The Markdown table for benchmarks/README.md is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from yolograph.runtime.timing import isolated_times
from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.data import coco128, official_yolov8n
from yolograph.evaluation import evaluate
from yolograph.frontends import load_model
from yolograph.ir.cost import model_cost
from yolograph.ir.serialization import write_bytes_atomic
from yolograph.pipeline import run_pipeline

RESULTS = Path(__file__).resolve().parent / "results" / "pruning.json"


# The matrix: every criterion (bn-gamma: see NOT_APPLICABLE) with and without reconstruction at
# every ratio. Names are criterion-reconstruction-percent, e.g. act-seq-30.
RATIOS = (10, 20, 30, 50)
CRITERIA = {"act": ("activation", "activation"), "l1": ("l1", "l1 filter norm"), "l2": ("l2", "l2 filter norm")}
RECONSTRUCTIONS = {"seq": ("", " + sequential LS"), "none": (",reconstruct=none", ", no reconstruction")}


def configurations(images: str, count: int) -> list[tuple[str, str | None, str]]:
    """(name, pipeline or None for the unpruned model, what it shows)."""
    calib = f"images={images},count={count}"
    act = f"criterion=activation,{calib}"
    int8 = f"insert-qdq,calibrate{{{calib}}}"
    matrix = []
    for short, (criterion, criterion_label) in CRITERIA.items():
        for recon, (option, recon_label) in RECONSTRUCTIONS.items():
            # l1/l2 without reconstruction read no images; everything else needs the calibration set.
            data = "" if criterion != "activation" and recon == "none" else f",{calib}"
            default = " (default)" if (short, recon) == ("act", "seq") else ""
            for percent in RATIOS:
                matrix.append((f"{short}-{recon}-{percent}",
                               f"prune{{macs={percent / 100},criterion={criterion}{data}{option}}}",
                               f"{criterion_label}{recon_label}{default}"))
    return [
        ("baseline", None, "unpruned float"),
        # The same model timed as a second one: its "speed-up" is the run's noise floor (ideally 1.00x).
        ("baseline-again", None, "unpruned float again (A/A timing control)"),
        *matrix,
        ("act-seq-budget-1.5", f"prune{{budget=map:0.015,{act}}}",
         "largest cut losing <= 1.5 pt on the calibration images (budget=map:0.015)"),
        ("act-seq-30-1step", f"prune{{macs=0.3,{act},steps=1}}", "as act-seq-30 in one step (no re-measuring)"),
        ("act-seq-30-r16", f"prune{{macs=0.3,{act},round_to=16}}", "as act-seq-30, channels kept in multiples of 16"),
        ("act-local-30", f"prune{{macs=0.3,{act},reconstruct=local}}", "activation + local LS (one run)"),
        ("act-bias-30", f"prune{{macs=0.3,{act},reconstruct=bias}}", "activation + mean compensation only"),
        ("int8", int8, "unpruned INT8 (insert-qdq + calibrate)"),
        ("act-seq-30-int8", f"prune{{macs=0.3,{act}}},{int8}", "act-seq-30 then INT8"),
    ]


NOT_APPLICABLE = {
    "bn-gamma": "the trained yolov8n.onnx has BN folded into its convs, so there are no BN gammas to rank; "
                "bn-gamma runs (and is tested) on the built-in unfolded-BN models, which have no trained weights",
}


def build_config(name, pipeline, note, base_model, args, base_cost, folder: Path) -> dict:
    """Build one configuration, evaluate it, and save it to `folder` for the latency run."""
    start = time.perf_counter()
    if pipeline is None:
        model, stats = base_model, {}
    else:
        model, report = run_pipeline(base_model, pipeline)
        stats = next((r.stats for r in report.records if r.name == "prune"), {})
    build_s = time.perf_counter() - start
    cost = model_cost(model)
    runner = OrtRunner(model, OrtOptions(threads=args.threads))
    result = evaluate(runner.predict, args.data, images=args.eval_images)
    write_bytes_atomic(folder / f"{name}.onnx", model.serialize())
    return {
        "name": name,
        "pipeline": pipeline or "",
        "what": note,
        "macs": cost.macs,
        "params": cost.params,
        "macs_removed": round(1 - cost.macs / base_cost.macs, 4),
        "params_removed": round(1 - cost.params / base_cost.params, 4),
        "map50_95": round(result.map50_95, 4),
        "map50": round(result.map50, 4),
        "eval_images": result.images,
        "build_seconds": round(build_s, 1),
        "layers": stats.get("layers", {}),
        "convs_narrowed": stats.get("convs_narrowed"),
        "steps": stats.get("steps", []),
        "budget_search": {k: stats[k] for k in ("budget_map_before", "budget_map_drop", "budget_trials") if k in stats},
    }


def add_latency(rows: dict[str, dict], names: list[str], folder: Path, args) -> None:
    """Median latency of every model in `names` (baseline first), each alone in a fresh process per turn."""
    times = isolated_times({name: ("ort", folder / f"{name}.onnx") for name in names},
                           rounds=args.rounds, runs=args.per_round, threads=args.threads)
    base_ms = float(np.median(times["baseline"]))
    for name in names:
        ms = float(np.median(times[name]))
        rows[name].update(latency_ms=round(ms, 2), baseline_latency_ms=round(base_ms, 2),
                          speedup=round(base_ms / ms, 3), latency="isolated")


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["name"] == "baseline"), None)
    lines = ["| config | what | MACs (G) | MACs removed | params (M) | speed-up (ORT, 2 thr) | mAP50-95 | Δ vs float |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        delta = f"{100 * (r['map50_95'] - base['map50_95']):+.1f}" if base else ""
        lines.append(f"| {r['name']} | {r['what']} | {r['macs'] / 1e9:.2f} | {100 * r['macs_removed']:.1f}% | "
                     f"{r['params'] / 1e6:.2f} | {r['speedup']:.2f}x | {100 * r['map50_95']:.1f} | {delta} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(official_yolov8n()))
    parser.add_argument("--data", default=str(coco128()))
    parser.add_argument("--eval-images", default="32:128")
    parser.add_argument("--count", type=int, default=32, help="calibration images (the first N)")
    parser.add_argument("--only", default="", help="comma-separated config names (merged into the JSON)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--smoke", action="store_true", help="one fast config on 2 images (for the test suite)")
    args = parser.parse_args(argv)
    configs = configurations(args.data, args.count)
    if args.smoke:
        args.eval_images, args.rounds, args.per_round = "32:34", 1, 1
        configs = [configs[0], ("l1-none-20", "prune{macs=0.2,criterion=l1,reconstruct=none}", "smoke")]
    elif args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in configs if c[0] in wanted or c[0] == "baseline"]
    base_model = load_model(args.model)
    base_cost = model_cost(base_model)
    out = Path(args.out)
    previous = json.loads(out.read_text())["configs"] if out.exists() and args.only and not args.smoke else []
    rows = {r["name"]: r for r in previous}
    order = [c[0] for c in configurations(args.data, args.count)]
    with tempfile.TemporaryDirectory() as temp:
        for name, pipeline, note in configs:
            print(f"[pruning] {name}: {pipeline or 'unpruned'}", file=sys.stderr, flush=True)
            rows[name] = build_config(name, pipeline, note, base_model, args, base_cost, Path(temp))
            print(f"[pruning] {name}: mAP50-95 {rows[name]['map50_95']:.4f}, "
                  f"MACs -{100 * rows[name]['macs_removed']:.1f}%", file=sys.stderr, flush=True)
        print("[pruning] latency: each model alone in a fresh process", file=sys.stderr, flush=True)
        add_latency(rows, [c[0] for c in configs], Path(temp), args)
    ordered = sorted(rows.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    payload = {
        "model": Path(args.model).name,
        "calibration": f"first {args.count} images of {Path(args.data).name}",
        "evaluation": f"images {args.eval_images}",
        "threads": args.threads,
        "not_applicable": NOT_APPLICABLE,
        "configs": ordered,
    }
    write_bytes_atomic(out, (json.dumps(payload, indent=1) + "\n").encode())
    print(table(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
