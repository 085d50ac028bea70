"""The predict command: run a model on images or a video, write annotated pictures and a JSON of predictions."""

from __future__ import annotations

import argparse

from yolograph.cli.common import MODEL_HELP, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from yolograph.runtime.backend import registered_backends

    p = sub.add_parser("predict", help="draw a model's predictions on an image, a folder of images or a video")
    p.add_argument("model", help=MODEL_HELP + ", or a compiled backend artifact")
    p.add_argument("source", help="an image file, a folder of images or a video file")
    p.add_argument("-o", "--output", required=True, help="folder for the annotated images/video and predictions.json")
    p.add_argument("--conf", type=float, default=0.25, help="minimum score of a drawn prediction (default 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--backend", default=None, choices=sorted(registered_backends()),
                   help="default: from the file (a compiled artifact: its backend, else ort)")
    p.add_argument("--compare", metavar="OTHER_MODEL",
                   help="also run this model (e.g. the float model next to INT8) and draw both side by side")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after this many frames")
    p.add_argument("--threads", type=int, default=0, help="threads (0: the runtime's default)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from yolograph.errors import DataError
    from yolograph.evaluation.inference import TaskModel
    from yolograph.inspection.predict import run_predict, source_kind

    if not 0.0 <= args.conf <= 1.0:
        raise DataError(f"--conf {args.conf} is not a score; give a value between 0 and 1, e.g. 0.25.")
    from pathlib import Path

    source_kind(Path(args.source))  # a bad source fails before any model is loaded
    model = TaskModel.open(args.model, backend=args.backend, threads=args.threads, name=f"the model {args.model}")
    other = None
    if args.compare:
        other = TaskModel.open(args.compare, threads=args.threads, name=f"the model {args.compare}")
    run = run_predict(model, args.source, args.output, conf=args.conf, iou=args.iou, compare=other,
                      max_frames=args.max_frames)
    if args.json:
        print_json({"written": [str(p) for p in run.written], "images": run.images, "detections": run.detections,
                    "task": model.task})
        return 0
    found = "top-5 classes" if model.task == "classify" else f"{run.detections} predictions"
    print(f"{model.layout.describe()}: {found} on {run.images} image(s)")
    for path in run.written:
        print(f"wrote    {path}")
    return 0
