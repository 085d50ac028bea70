"""The report command, and `compile --html`: one self-contained HTML page of what a pipeline did."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolograph.cli.commands_targets import add_target_flags, resolve_plan
from yolograph.cli.common import (
    MODEL_HELP,
    add_backend_flags,
    add_input_shape_flag,
    check_outputs,
    non_negative_int,
    print_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    from yolograph.runtime.backend import registered_backends

    p = sub.add_parser("report", help="run a pipeline (or --target) and write one self-contained HTML report")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("-p", "--pipeline", help="pass pipeline (or --target NAME)")
    p.add_argument("-o", "--output", required=True, help="the HTML report to write")
    p.add_argument("--artifact", help="also compile for the backend here, and measure that artifact")
    p.add_argument("--backend", default=None, choices=sorted(registered_backends()),
                   help="default: the --target's backend, else ort")
    p.add_argument("--verify", action="store_true", help="check every pass's contract against ONNX Runtime")
    p.add_argument("--bench", type=non_negative_int, default=20, metavar="N",
                   help="time N runs of each model (default 20; 0: no latency section)")
    p.add_argument("--eval-data", help="images for accuracy, per-layer error and predictions (default: --data)")
    p.add_argument("--eval-images", default=None, help="index range A:B of those images for accuracy, e.g. 32:128")
    p.add_argument("--json", action="store_true", help="print the report's numbers as JSON")
    add_report_flags(p)
    add_target_flags(p)
    add_backend_flags(p)
    add_input_shape_flag(p)
    p.set_defaults(handler=cmd_report)


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    from yolograph.inspection.report import (
        DEFAULT_PREDICT_IMAGES,
        DEFAULT_SENSITIVITY_IMAGES,
    )

    parser.add_argument("--predict-images", type=non_negative_int, default=DEFAULT_PREDICT_IMAGES, metavar="N",
                        help=f"report: images predicted by both models (default {DEFAULT_PREDICT_IMAGES})")
    parser.add_argument("--sensitivity-images", default=DEFAULT_SENSITIVITY_IMAGES, metavar="A:B",
                        help=f"report: images for per-layer sensitivity (default {DEFAULT_SENSITIVITY_IMAGES}; "
                             "'none' skips it)")


def cmd_report(args: argparse.Namespace) -> int:
    from yolograph.frontends import load_model
    from yolograph.pipeline import PassManager
    from yolograph.runtime.backend import backend_options, compile_for_backend

    check_outputs({"report (-o)": args.output, "--artifact": args.artifact}, inputs=(args.model,))
    plan = resolve_plan(args)
    manager = PassManager(plan.pipeline, verify=args.verify)
    options = backend_options(plan.backend, plan.backend_values)
    if plan.target and not args.json:
        print(plan.line(), flush=True)
    model = load_model(args.model, input_shape=args.input_shape)
    result, pipeline_report = manager.run(model)
    artifact = compile_for_backend(plan.backend, result, Path(args.artifact), options) if args.artifact else None
    report = write_report(args, model, result, pipeline_report, plan, artifact, args.output)
    if args.json:
        print_json(report_json(report, args.output))
    else:
        print(pipeline_report.table())
        print(f"wrote    {args.output}")
    return 0


def write_report(args: argparse.Namespace, model: Any, result: Any, pipeline_report: Any, plan: Any,
                 artifact: Path | None, path: str) -> Any:
    """Measure and write the HTML report (shared by `report` and `compile --html`)."""
    from yolograph.inspection.report import (
        ReportOptions,
        build_report,
        write_html_report,
    )

    data = getattr(args, "eval_data", None) or getattr(args, "data", None)
    sensitivity = args.sensitivity_images
    options = ReportOptions(data=data, eval_images=getattr(args, "eval_images", None),
                            bench_runs=getattr(args, "bench", 0) or 0, predict_images=args.predict_images,
                            sensitivity_images=None if str(sensitivity).lower() == "none" else sensitivity)
    report = build_report(model, result, pipeline_report, plan.pipeline, options=options, backend=plan.backend,
                          target=plan.target, artifact=artifact, source=args.model or "built-in yolov8n")
    write_html_report(path, report)
    return report


def report_json(report: Any, path: str) -> dict[str, Any]:
    return {"html": str(path), "pipeline": report.pipeline, "target": report.target, "backend": report.backend,
            "latency": report.latency, "accuracy": report.accuracy, "layer_error": report.layer_error,
            "pruning": report.pruning, "predictions": [name for name, _ in report.predictions],
            "sections": sorted(report.figures)}
