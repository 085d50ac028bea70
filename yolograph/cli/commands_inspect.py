"""Commands that look at models: inspect, passes, diff."""

from __future__ import annotations

import argparse
import dataclasses
from typing import get_type_hints

from yolograph.cli.common import (
    MODEL_HELP,
    add_input_shape_flag,
    check_outputs,
    print_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="op histogram, params, MACs, inputs/outputs, YOLO facts")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--prune-groups", action="store_true", help="show the coupled channel groups pruning uses")
    p.add_argument("--target", choices=["trt", "trt11"],
                   help="also check readiness for a backend target (trt: TensorRT 10, trt11: strongly typed 11)")
    add_input_shape_flag(p)
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("passes", help="list the registered passes with their contracts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_passes)

    p = sub.add_parser("diff", help="what changed between two models")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="write a PNG of each conv's kept/removed output channels (pruning) here")
    add_input_shape_flag(p)
    p.set_defaults(handler=cmd_diff)


def cmd_inspect(args: argparse.Namespace) -> int:
    from yolograph.frontends import load_model
    from yolograph.inspection.summary import format_summary, summarize

    model = load_model(args.model, input_shape=args.input_shape)
    summary = summarize(model)
    extra_text = []
    if args.prune_groups:
        from yolograph.analysis.channel_groups import find_channel_groups
        from yolograph.inspection.channel_groups import format_groups, groups_to_json

        groups = find_channel_groups(model)
        summary["prune_groups"] = groups_to_json(groups)
        extra_text.append(format_groups(groups))
    if args.target in ("trt", "trt11"):
        from yolograph.backends.tensorrt import check_readiness, format_findings

        findings = check_readiness(model, args.target)
        summary["trt_findings"] = [vars(f) if hasattr(f, "__dict__") else f for f in findings]
        extra_text.append(format_findings(findings))
    if args.json:
        print_json(summary)
    else:
        print("\n\n".join([format_summary(summary), *extra_text]))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
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
        print_json(rows)
        return 0
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['summary']}")
        print(f"{'':<{width}}  contract: {row['contract']}")
        if row["options"]:
            print(f"{'':<{width}}  options: " + ", ".join(f"{k} ({v})" for k, v in row["options"].items()))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from yolograph.frontends import load_model
    from yolograph.inspection.diff import diff_models, format_diff, write_channel_plot

    check_outputs({"--plot file": args.plot}, inputs=(args.before, args.after))
    diff = diff_models(load_model(args.before, input_shape=args.input_shape), load_model(args.after, input_shape=args.input_shape))
    if args.plot:
        write_channel_plot(diff, args.plot)
    if args.json:
        print_json(diff)
    else:
        print(format_diff(diff))
        if args.plot:
            print(f"wrote    {args.plot}")
    return 0
