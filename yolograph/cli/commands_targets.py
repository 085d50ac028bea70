"""The targets command, and how `compile --target NAME --data DIR` becomes a pipeline, a backend and its options."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from yolograph.cli.common import backend_values, print_json

# First word of a TVM target string (what `compile --target` meant before it named deployment targets).
_TVM_TARGET_KINDS = frozenset({"llvm", "cuda", "nvptx", "rocm", "vulkan", "metal", "opencl", "c", "hexagon", "webgpu"})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list the deployment targets of `compile --target` and what each needs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_targets)


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    """compile's --target / --data / --calib-images."""
    from yolograph.targets import DEFAULT_CALIBRATION_IMAGES, TARGETS

    parser.add_argument("--target", metavar="NAME",
                        help=f"deployment target: its tested pipeline and backend ({', '.join(TARGETS)}); "
                             "see `yolograph targets`")
    parser.add_argument("--data", help="calibration images of an INT8 --target (dataset root, image folder or yaml)")
    parser.add_argument("--calib-images", metavar="A:B", default=None,
                        help=f"index range of --data images to calibrate on (default {DEFAULT_CALIBRATION_IMAGES})")


def cmd_targets(args: argparse.Namespace) -> int:
    from yolograph.targets import TARGETS, format_targets

    if args.json:
        print_json([t.to_json() for t in TARGETS.values()])
    else:
        print(format_targets())
    return 0


@dataclass(frozen=True)
class Plan:
    """What compile runs: the pipeline text, the backend, its flag values, and the target (if one was named)."""

    pipeline: str
    backend: str
    backend_values: dict[str, Any]
    target: str | None = None

    def line(self) -> str:
        options = {k: v for k, v in self.backend_values.items() if v is not None}
        shown = f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""
        return f"target   {self.target}: backend {self.backend}{shown}, pipeline {self.pipeline}"


def resolve_plan(args: argparse.Namespace) -> Plan:
    """compile's pipeline and backend from -p/--backend or from --target (errors are one sentence)."""
    from yolograph.errors import BackendError, PipelineError
    from yolograph.targets import get_target

    values = backend_values(args)
    name = args.target
    if name and name not in _target_names() and _is_tvm_target_string(name):
        print(f"warning: --target {name!r} as a TVM target string is deprecated; use --tvm-target {name!r} "
              "(--target now names a deployment target, see `yolograph targets`).", file=sys.stderr)
        values["tvm_target"] = values.get("tvm_target") or name
        name = None
    if name is None:
        if not args.pipeline:
            raise PipelineError("compile needs a pipeline: give -p PIPELINE, or --target NAME for a tested one "
                                "(`yolograph targets` lists them).")
        if args.data or args.calib_images:
            raise PipelineError("--data and --calib-images fill in the calibration of a --target; with -p, name "
                                "the images in the pipeline (calibrate{images=DIR,range=0:32}).")
        return Plan(args.pipeline, args.backend or "ort", values)
    target = get_target(name)
    if args.pipeline:
        raise PipelineError(f"Give either --target {name} or -p PIPELINE, not both (the target brings its "
                            "own pipeline; `yolograph targets` shows it).")
    if args.backend and args.backend != target.backend:
        raise BackendError(f"Target {name!r} compiles with the {target.backend} backend, not {args.backend}; "
                           "drop --backend or choose another target.")
    missing = target.missing_modules()
    if missing:
        raise BackendError(f"Target {name!r} needs {', '.join(missing)}, which is not installed: "
                           f"pip install 'yolograph[{target.extra}]'.")
    if not target.needs_data and (args.data or args.calib_images):
        raise PipelineError(f"Target {name!r} does not calibrate; drop --data and --calib-images.")
    pipeline = target.pipeline_text(args.data, args.calib_images)
    merged = {**values, **{k: v for k, v in target.backend_options.items() if values.get(k) is None}}
    return Plan(pipeline, target.backend, merged, name)


def _target_names() -> set[str]:
    from yolograph.targets import TARGETS

    return set(TARGETS)


def _is_tvm_target_string(text: str) -> bool:
    words = text.split()
    return bool(words) and (words[0] in _TVM_TARGET_KINDS or text.lstrip().startswith("{"))
