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
    python benchmarks/pruning.py --only act-seq-30-distill-5,act-seq-30-distill-10   # distill rows (torch)

Distill rows (`prune{...},distill{...}`) learn from the same calibration images 0-31 only, with the unpruned
model as the teacher; they also record the distill time and the process's peak resident memory while the
row was built, and the 30% rows are plotted (distill minutes vs mAP50-95) into results/distill_curve.png.

The Markdown table for benchmarks/README.md is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
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


# Distill rows: (macs percent, minutes, then INT8?). The teacher is the unpruned model (--model).
DISTILL_ROWS = ((30, 5, False), (30, 10, False), (30, 20, False), (20, 10, False), (50, 5, False), (50, 10, False),
                (30, 10, True))
DISTILL_OPTIONS = "batch=4,lr=3e-5"  # lr=3e-4 lost 10 points in 7 steps (see benchmarks/README.md)
# The pruned model distill starts from: the default prune (act-seq-N rows) or, where the 4-step prune's
# sensitivity passes do not fit the time at hand, one step without sensitivity measurement (act-quick-N,
# with its own undistilled row as the curve's 0-minute point).
DISTILL_STARTS = {"seq": "", "quick": ",steps=1,sensitivity=0"}


def distill_configurations(images: str, count: int, teacher: str, start: str = "seq") -> list[tuple[str, str, str]]:
    calib = f"images={images},count={count}"
    rows = []
    for percent, minutes, int8 in DISTILL_ROWS:
        prune = f"prune{{macs={percent / 100},criterion=activation,{calib}{DISTILL_STARTS[start]}}}"
        if start != "seq" and (percent, 0) not in [(r[3], r[4]) for r in rows]:
            rows.append((f"act-{start}-{percent}", prune, f"activation, one step, no sensitivity ({start} start)",
                         percent, 0))
        pipeline = f"{prune},distill{{teacher={teacher},{calib},minutes={minutes},{DISTILL_OPTIONS}}}"
        name = f"act-{start}-{percent}-distill-{minutes}"
        what = f"act-{start}-{percent} + distill {minutes} min (teacher: unpruned)"
        if int8:
            pipeline, name, what = (pipeline + f",insert-qdq,calibrate{{{calib}}}", name + "-int8",
                                    what + ", then INT8")
        rows.append((name, pipeline, what, percent, minutes))
    return [row[:3] for row in rows]


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
    distill = {}
    if pipeline is None:
        model, stats = base_model, {}
    else:
        with _peak_rss() as peak:
            model, report = _run_cached_prune(base_model, pipeline)
        stats = next((r.stats for r in report.records if r.name == "prune"), {})
        distilled = next((r for r in report.records if r.name == "distill"), None)
        if distilled is not None:
            distill = {"distill_seconds": round(distilled.seconds, 1), "peak_rss_mb": round(peak[0] / 2**20),
                       "distill": distilled.stats}
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
        **distill,
    }


_PREFIXES: dict[tuple[str, ...], tuple] = {}  # pass specs -> (model, records): distill rows share prunes


def _run_cached_prune(base_model, pipeline: str):
    """run_pipeline, reusing the longest leading run of passes (a prune, prune + distill) already run here."""
    from yolograph.pipeline.manager import PipelineReport
    from yolograph.pipeline.parse import parse_pipeline

    passes = parse_pipeline(pipeline)
    if passes[0].name != "prune":
        return run_pipeline(base_model, pipeline)
    specs = tuple(p.spec() for p in passes)
    done = max((k for k in range(len(specs) + 1) if k == 0 or specs[:k] in _PREFIXES), default=0)
    model, records = _PREFIXES[specs[:done]] if done else (base_model, [])
    for k in range(done, len(passes)):
        model, report = run_pipeline(model, passes[k:k + 1])
        records = [*records, *report.records]
        if passes[k].name in ("prune", "distill"):  # the expensive ones
            _PREFIXES[specs[:k + 1]] = (model, records)
    return model, PipelineReport(records, records[0].before, records[-1].after)


@contextmanager
def _peak_rss(interval: float = 0.5):
    """The process's peak resident memory (bytes) while the block runs, sampled from /proc."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):
                return
            peak[0] = max(peak[0], rss)
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def plot_distill_curve(rows: list[dict], out: Path) -> Path | None:
    """Distill minutes vs mAP50-95 of the 30% rows (0 minutes: the undistilled prune), beside the float baseline."""
    curves = {}
    for start in DISTILL_STARTS:
        curves[start] = sorted(
            (0 if r["name"] == f"act-{start}-30" else int(r["name"].rsplit("-", 1)[1]), 100 * r["map50_95"])
            for r in rows if r["name"] == f"act-{start}-30" or
            (r["name"].startswith(f"act-{start}-30-distill-") and r["name"][-1].isdigit()))
    curves = {start: points for start, points in curves.items() if len(points) >= 2}
    base = next((r for r in rows if r["name"] == "baseline"), None)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    for start, points in curves.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"act-{start}-30 + distill")
    if base is not None:
        axes.axhline(100 * base["map50_95"], color="grey", ls="--", label="unpruned")
        axes.axhline(100 * base["map50_95"] - 1.5, color="grey", ls=":", label="target (-1.5)")
    axes.set_xlabel("distill minutes (2-core CPU)")
    axes.set_ylabel("mAP50-95 (coco128 32-127)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


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
    every = (configurations(args.data, args.count)
             + [row for start in DISTILL_STARTS for row in distill_configurations(args.data, args.count, args.model, start)])
    configs = every
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
    order = [c[0] for c in every]
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
    if not args.smoke:
        plot_distill_curve(ordered, out.parent / "distill_curve.png")
    print(table(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
