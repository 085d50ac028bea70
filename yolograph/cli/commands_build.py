"""The compile command: run a pass pipeline, write ONNX or a backend artifact, show what it cost."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from yolograph.cli.commands_report import add_report_flags, write_report
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

    p = sub.add_parser("compile", help="run a pass pipeline and write the result (ONNX or a backend artifact)")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("-p", "--pipeline", help="e.g. 'fold-bn,cleanup,insert-qdq{profile=trt}' (or --target NAME)")
    p.add_argument("-o", "--output", required=True, help="output .onnx (ort) or backend artifact path")
    p.add_argument("--verify", action="store_true", help="check every pass's contract against ONNX Runtime")
    p.add_argument("--verify-input", action="append", default=[], metavar="NPY",
                   help="extra .npy input tensor for --verify (repeatable)")
    p.add_argument("--report", help="write the per-pass report as JSON")
    p.add_argument("--dump-dir", help="write the model after each pass into this folder")
    p.add_argument("--backend", default=None, choices=sorted(registered_backends()),
                   help="default: the --target's backend, else ort")
    p.add_argument("--bench", type=non_negative_int, default=0, metavar="N",
                   help="time N runs of the input model (ort) and the written artifact (on its backend) side by side")
    p.add_argument("--eval-data", help="also score the input model (ort) and the written artifact (on its backend) "
                   "on these images: labelled accuracy "
                   "where they have labels, and the output model's agreement with the input model (no labels needed)")
    p.add_argument("--eval-images", help="index range A:B of --eval-data images, e.g. 32:128")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--html", metavar="REPORT.html",
                   help="also write one self-contained HTML report (passes, diff, per-layer error, latency, accuracy, "
                        "predictions; see `yolograph report`)")
    add_report_flags(p)
    add_target_flags(p)
    add_backend_flags(p)
    add_input_shape_flag(p)
    p.set_defaults(handler=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    import numpy as np

    from yolograph.errors import DataError
    from yolograph.frontends import load_model
    from yolograph.inspection.summary import format_summary, summarize
    from yolograph.ir.serialization import write_bytes_atomic
    from yolograph.pipeline import PassManager
    from yolograph.runtime.backend import backend_options, compile_for_backend

    check_outputs({"output (-o)": args.output, "--report file": args.report, "--html file": args.html},
                  {"--dump-dir folder": args.dump_dir},
                  inputs=(args.model,))
    plan = resolve_plan(args)
    manager = PassManager(plan.pipeline, verify=args.verify, dump_dir=args.dump_dir)  # parse before loading
    options = backend_options(plan.backend, plan.backend_values)
    if plan.target and not args.json:
        print(plan.line(), flush=True)  # before the work: the user sees what runs
    model = load_model(args.model, input_shape=args.input_shape)
    from yolograph.ir.sanity import check_pipeline

    for line in check_pipeline(model, manager.passes):
        print(f"warning: {line}", file=sys.stderr)
    verify_inputs = []
    for path in args.verify_input:
        try:
            array = np.load(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read verification input {path}: {exc}.") from exc
        verify_inputs.append({model.inputs[0].name: array.astype(model.inputs[0].dtype)})
    manager.verify_inputs = verify_inputs
    result, report = manager.run(model)
    artifact = compile_for_backend(plan.backend, result, Path(args.output), options)
    summary = summarize(result)
    output: dict[str, Any] = {"output": str(artifact), "backend": plan.backend, "summary": summary,
                              "report": report.to_json(), "target": plan.target, "pipeline": plan.pipeline}
    facts = artifact_facts(plan.backend, artifact)
    if facts:
        output["artifact"] = facts
    comparison = None
    if args.bench or args.eval_data:
        from yolograph.inspection.compare import compare_models
        from yolograph.runtime.backend import get_backend

        # The artifact as deployed: its backend's runner (the ort backend's artifact is the ONNX itself).
        runner = None if plan.backend == "ort" else get_backend(plan.backend).load_runner(artifact)
        comparison = compare_models(model, result, bench_runs=args.bench, data=args.eval_data,
                                    images=args.eval_images, agreement=bool(args.eval_data),
                                    after_runner=runner, runtime_after=plan.backend)
        output["comparison"] = comparison.to_json()
    if args.html:
        write_report(args, model, result, report, plan, artifact if plan.backend != "ort" else None, args.html)
        output["html"] = args.html
    if args.report:
        write_bytes_atomic(args.report, json.dumps(report.to_json(), indent=2, default=str).encode())
    if args.json:
        print_json(output)
        return 0
    print(report.table())
    print()
    print(format_summary(summary))
    if facts:
        print(f"artifact {plan.backend}: {artifact_line(facts)}")
    for line in comparison.lines() if comparison else []:
        print(line)
    print(f"wrote    {artifact}")
    if args.html:
        print(f"wrote    {args.html}")
    return 0


# What a backend's sidecar (<artifact>.json, written by every backend that has one) says about how the
# artifact runs: the precision a runtime resolved on its own (OpenVINO picks bf16 on AVX512_BF16 CPUs)
# belongs in the compile result, not only on stderr.
_ARTIFACT_KEYS = ("inference_precision", "precision", "execution_devices", "device")


def artifact_facts(backend: str, artifact: Path) -> dict[str, Any]:
    """The precision / device facts of `artifact`'s sidecar ({} for ort or an artifact without one)."""
    sidecar = artifact.with_name(artifact.name + ".json")
    if backend == "ort" or not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}  # the backend reads (and rejects) its own sidecar when the artifact is run
    if not isinstance(data, dict):
        return {}
    runtime = data.get("runtime") if isinstance(data.get("runtime"), dict) else {}
    facts = {key: data[key] for key in _ARTIFACT_KEYS if data.get(key) not in (None, [], {})}
    if "device" not in facts and runtime.get("device"):
        facts["device"] = runtime["device"]
    if "inference_precision" in facts:
        facts["inference_precision_requested"] = runtime.get("inference_precision") or "device default"
    return facts


def artifact_line(facts: dict[str, Any]) -> str:
    """`on CPU (ran on CPU), inference precision f32 (asked: device default)` from artifact_facts."""
    parts = []
    if facts.get("device"):
        ran = facts.get("execution_devices")
        parts.append(f"on {facts['device']}" + (f" (runs on {', '.join(map(str, ran))})" if ran else ""))
    if facts.get("inference_precision"):
        parts.append(f"inference precision {facts['inference_precision']} "
                     f"(asked: {facts.get('inference_precision_requested', 'device default')})")
    if facts.get("precision") is not None:
        parts.append(f"precision {facts['precision']}")
    return ", ".join(parts)
