"""Commands that measure models: eval (mAP), bench (latency), sensitivity (per-layer quantization error)."""

from __future__ import annotations

import argparse
from pathlib import Path

from yolograph.cli.common import (
    MODEL_HELP,
    add_input_shape_flag,
    check_outputs,
    non_negative_int,
    positive_int,
    print_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    from yolograph.runtime.backend import registered_backends

    p = sub.add_parser("eval", help="accuracy of any task on labelled images, or agreement with a reference model")
    p.add_argument("model", help=MODEL_HELP + ", or a compiled backend artifact")
    p.add_argument("--data", required=True, help="dataset root, images folder or ultralytics dataset yaml "
                   "(classify: a folder per class)")
    p.add_argument("--reference", help="label-free: score against this model's predictions with score >= 0.25 "
                   "(e.g. the float model), so no labels are needed")
    p.add_argument("--images", help="index range A:B of the sorted images, e.g. 32:128")
    p.add_argument("--threads", type=non_negative_int, default=0, help="threads (0: the runtime's default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("bench", help="latency: warm-up, N runs, median and p90")
    p.add_argument("model", nargs="?", help=MODEL_HELP + ", or a compiled backend artifact")
    p.add_argument("--backend", default=None, choices=sorted(registered_backends()),
                   help="default: from the file (a compiled artifact: its backend, else ort)")
    p.add_argument("--runs", type=positive_int, default=50)
    p.add_argument("--warmup", type=non_negative_int, default=5)
    p.add_argument("--threads", type=non_negative_int, default=0, help="threads (0: the runtime's default)")
    p.add_argument("--json", action="store_true")
    add_input_shape_flag(p)
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("sensitivity", help="per-layer quantization error (SQNR) table and plot")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--data", required=True, help="calibration/evaluation images (dataset root or folder)")
    p.add_argument("--images", default="0:8", help="index range of images to use (default 0:8)")
    p.add_argument("--plot", help="write a PNG plot of per-layer SQNR here")
    p.add_argument("--json", action="store_true")
    add_input_shape_flag(p)
    p.set_defaults(handler=cmd_sensitivity)


def cmd_eval(args: argparse.Namespace) -> int:
    from yolograph.evaluation import evaluate, open_dataset, parse_index_range
    from yolograph.evaluation.fidelity import agreement, evaluate_task
    from yolograph.evaluation.inference import TaskModel

    model = TaskModel.open(args.model, threads=args.threads, name=f"the model {args.model}")
    if args.reference:
        score = agreement(model, args.reference, args.data, args.images, threads=args.threads)
        if args.json:
            print_json({**score.to_json(), "agreement": score.value, "reference": args.reference})
        else:
            print(f"agreement with {args.reference}: {score.line()}")
        return 0
    if model.task != "detect":
        score = evaluate_task(model, args.data, args.images)
        if args.json:
            print_json({**score.to_json(), **({"map50_95": score.value, "map50": score.value50}
                                              if score.value50 is not None else {})})
        else:
            print(score.line())
        return 0
    dataset = open_dataset(args.data)
    result = evaluate(model.runner.predict, dataset, imgsz=model.imgsz, images=parse_index_range(args.images))
    if args.json:
        print_json(result.to_json())
    else:
        print(f"mAP50-95 {result.map50_95:.4f}  mAP50 {result.map50:.4f}  images {result.images}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from yolograph.runtime.backend import open_runner

    runner, _ = open_runner(args.model, threads=args.threads, backend=args.backend, input_shape=args.input_shape)
    stats = runner.benchmark(runs=args.runs, warmup=args.warmup)
    if args.json:
        print_json(stats.to_json())
    else:
        print(stats)
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from yolograph.frontends import load_model
    from yolograph.quantization.sensitivity import run_sensitivity

    check_outputs({"--plot file": args.plot}, inputs=(args.model,))
    report = run_sensitivity(load_model(args.model, input_shape=args.input_shape), args.data, images=args.images,
                             plot=Path(args.plot) if args.plot else None)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.table())
        if args.plot:
            print(f"wrote    {args.plot}")
    return 0
