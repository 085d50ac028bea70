"""The `yolograph` command line: a thin layer over the Python API.

Every user error is a YoloGraphError: printed as one line `error: ...` with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from yolograph.errors import YoloGraphError

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except YoloGraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolograph",
        description="Compile YOLOv8 through ordered graph passes and run it on ONNX Runtime, TVM or TensorRT.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = "an .onnx or .pt file, or a built-in name (yolov8n ... yolov8x); default: built-in yolov8n"

    p = sub.add_parser("inspect", help="op histogram, params, MACs, inputs/outputs, YOLO facts")
    p.add_argument("model", nargs="?", help=model_help)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--prune-groups", action="store_true", help="show the coupled channel groups pruning uses")
    p.add_argument("--target", choices=["trt"], help="also check readiness for a backend target")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("passes", help="list the registered passes with their contracts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_passes)

    p = sub.add_parser("compile", help="run a pass pipeline and write the result (ONNX or a backend artifact)")
    p.add_argument("model", nargs="?", help=model_help)
    p.add_argument("-p", "--pipeline", required=True, help="e.g. 'fold-bn,cleanup,insert-qdq{profile=trt}'")
    p.add_argument("-o", "--output", required=True, help="output .onnx (ort) or backend artifact path")
    p.add_argument("--verify", action="store_true", help="check every pass's contract against ONNX Runtime")
    p.add_argument("--verify-input", action="append", default=[], metavar="NPY",
                   help="extra .npy input tensor for --verify (repeatable)")
    p.add_argument("--report", help="write the per-pass report as JSON")
    p.add_argument("--dump-dir", help="write the model after each pass into this folder")
    p.add_argument("--backend", default="ort", choices=["ort", "tvm", "tensorrt"])
    p.add_argument("--target", help="tvm: 'llvm -mcpu=... -num-cores=N' or 'cuda -arch=sm_90'")
    p.add_argument("--tune-trials", type=int, default=0, help="tvm: tune: measure the analytic CPU schedules, then N MetaSchedule trials "
                   "on the remaining kernels (0: no tuning; untuned CPU kernels get the analytic schedules)")
    p.add_argument("--tune-seconds", type=float, help="tvm: tuning time budget in seconds")
    p.add_argument("--tuning-db", help="tvm: tuning database folder, reused across compiles")
    p.add_argument("--rpc", help="tvm: measure on remote devices through an RPC tracker host:port:key")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="tvm: conv2d layout to compile (default NHWC on CPU)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16", help="tensorrt precision")
    p.add_argument("--workspace-mb", type=int, default=4096, help="tensorrt workspace limit")
    p.add_argument("--batch", default="1", help="tensorrt optimization-profile batch sizes, e.g. 1,8")
    p.add_argument("--timing-cache", help="tensorrt timing cache file, reused across builds")
    p.add_argument("--bench", type=int, default=0, metavar="N",
                   help="time N runs of the input and the output model side by side (ort)")
    p.add_argument("--eval-data", help="also score mAP50-95 of the input and output model on this dataset (ort)")
    p.add_argument("--eval-images", help="index range A:B of --eval-data images, e.g. 32:128")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser("eval", help="mAP50-95 and mAP50 on a YOLO-format dataset")
    p.add_argument("model", help=model_help + ", a TensorRT .engine or a TVM artifact")
    p.add_argument("--data", required=True, help="dataset root, images folder or ultralytics dataset yaml")
    p.add_argument("--images", help="index range A:B of the sorted images, e.g. 32:128")
    p.add_argument("--threads", type=int, default=0, help="ORT threads (0: default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("bench", help="latency: warm-up, N runs, median and p90")
    p.add_argument("model", nargs="?", help=model_help + ", a TensorRT .engine or a TVM artifact")
    p.add_argument("--backend", default=None, choices=["ort", "tvm", "tensorrt"],
                   help="default: from the file type (.engine: tensorrt, TVM artifact: tvm, else ort)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="ORT threads (0: default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("diff", help="what changed between two models")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="write a PNG of each conv's kept/removed output channels (pruning) here")
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser("sensitivity", help="per-layer quantization error (SQNR) table and plot")
    p.add_argument("model", nargs="?", help=model_help)
    p.add_argument("--data", required=True, help="calibration/evaluation images (dataset root or folder)")
    p.add_argument("--images", default="0:8", help="index range of images to use (default 0:8)")
    p.add_argument("--plot", help="write a PNG plot of per-layer SQNR here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_sensitivity)
    return parser


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_inspect(args: argparse.Namespace) -> int:
    from yolograph.frontends import load_model
    from yolograph.inspection.summary import format_summary, summarize

    model = load_model(args.model)
    summary = summarize(model)
    extra_text = []
    if args.prune_groups:
        from yolograph.analysis.channel_groups import find_channel_groups, format_groups, groups_to_json

        groups = find_channel_groups(model)
        summary["prune_groups"] = groups_to_json(groups)
        extra_text.append(format_groups(groups))
    if args.target == "trt":
        from yolograph.backends.tensorrt import check_readiness, format_findings

        findings = check_readiness(model)
        summary["trt_findings"] = [vars(f) if hasattr(f, "__dict__") else f for f in findings]
        extra_text.append(format_findings(findings))
    if args.json:
        _print_json(summary)
    else:
        print("\n\n".join([format_summary(summary), *extra_text]))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    import dataclasses
    from typing import get_type_hints

    from yolograph.pipeline import registered_passes
    from yolograph.pipeline.parse import describe_type

    rows = []
    for name, cls in registered_passes().items():
        hints = get_type_hints(cls.Options)
        rows.append({
            "name": name,
            "summary": cls.summary(),
            "contract": cls.contract.describe(),
            "options": {f.name: describe_type(hints[f.name]) for f in dataclasses.fields(cls.Options)},
        })
    if args.json:
        _print_json(rows)
        return 0
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['summary']}")
        print(f"{'':<{width}}  contract: {row['contract']}")
        if row["options"]:
            print(f"{'':<{width}}  options: " + ", ".join(f"{k} ({v})" for k, v in row["options"].items()))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    import numpy as np

    from yolograph.backends import compile_for_backend
    from yolograph.errors import DataError
    from yolograph.frontends import load_model
    from yolograph.inspection.summary import format_summary, summarize
    from yolograph.ir.serialization import write_bytes_atomic
    from yolograph.pipeline import PassManager

    manager = PassManager(args.pipeline, verify=args.verify, dump_dir=args.dump_dir)  # parse before loading
    model = load_model(args.model)
    verify_inputs = []
    for path in args.verify_input:
        try:
            array = np.load(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read verification input {path}: {exc}.") from exc
        verify_inputs.append({model.inputs[0].name: array.astype(model.inputs[0].dtype)})
    manager.verify_inputs = verify_inputs
    result, report = manager.run(model)
    artifact = compile_for_backend(args.backend, result, Path(args.output), args)
    summary = summarize(result)
    output: dict[str, Any] = {"output": str(artifact), "backend": args.backend, "summary": summary,
                              "report": report.to_json()}
    comparison = None
    if args.bench or args.eval_data:
        from yolograph.inspection.compare import compare_models

        comparison = compare_models(model, result, bench_runs=args.bench, data=args.eval_data,
                                    images=args.eval_images)
        output["comparison"] = comparison.to_json()
    if args.report:
        write_bytes_atomic(args.report, json.dumps(report.to_json(), indent=2, default=str).encode())
    if args.json:
        _print_json(output)
        return 0
    print(report.table())
    print()
    print(format_summary(summary))
    for line in comparison.lines() if comparison else []:
        print(line)
    print(f"wrote    {artifact}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from yolograph.backends import open_runner
    from yolograph.evaluation import evaluate, open_dataset, parse_index_range

    runner, imgsz = open_runner(args.model, threads=args.threads)
    dataset = open_dataset(args.data)
    result = evaluate(runner.predict, dataset, imgsz=imgsz, images=parse_index_range(args.images))
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"mAP50-95 {result.map50_95:.4f}  mAP50 {result.map50:.4f}  images {result.images}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from yolograph.backends import open_runner

    runner, _ = open_runner(args.model, threads=args.threads, backend=args.backend)
    stats = runner.benchmark(runs=args.runs, warmup=args.warmup)
    if args.json:
        _print_json(stats.to_json())
    else:
        print(stats)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from yolograph.frontends import load_model
    from yolograph.inspection.diff import diff_models, format_diff, write_channel_plot

    diff = diff_models(load_model(args.before), load_model(args.after))
    if args.plot:
        write_channel_plot(diff, args.plot)
    if args.json:
        _print_json(diff)
    else:
        print(format_diff(diff))
        if args.plot:
            print(f"wrote    {args.plot}")
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from yolograph.frontends import load_model
    from yolograph.quantization.sensitivity import run_sensitivity

    report = run_sensitivity(load_model(args.model), args.data, images=args.images,
                             plot=Path(args.plot) if args.plot else None)
    if args.json:
        _print_json(report.to_json())
    else:
        print(report.table())
        if args.plot:
            print(f"wrote    {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
