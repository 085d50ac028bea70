"""Accuracy budgets of passes that trade accuracy for speed or size (mixed-precision, prune).

A budget is written ``KIND:VALUE``: ``map:0.015`` allows a mAP50-95 drop of 0.015 (1.5 points) on
labelled images, ``sqnr:20`` asks every output group to keep an SQNR of at least 20 dB.
"""

from __future__ import annotations

from yolograph.errors import DataError, PassError
from yolograph.ir.model import Model
from yolograph.runtime.ort import PASS_THREADS, OrtOptions, OrtRunner

BUDGET_KINDS = ("sqnr", "map")


def parse_budget(text: str, kinds: tuple[str, ...] = BUDGET_KINDS, owner: str = "budget") -> tuple[str, float]:
    """("map", 0.015) from "map:0.015"; a PassError that shows the accepted forms otherwise."""
    kind, _, value = str(text).partition(":")
    try:
        number = float(value)
    except ValueError:
        number = None
    if kind not in kinds or number is None or number < 0:
        forms = {"sqnr": "sqnr:20 (dB)", "map": "map:0.015 (mAP50-95 drop, 0.015 = 1.5 points)"}
        raise PassError(f"{owner} budget={text!r} is not understood; write "
                        f"{' or '.join('budget=' + forms[k] for k in kinds)}.")
    return kind, number


def require_labels(data: str, images: str) -> None:
    """A mAP budget measured on unlabelled images would read 0 for every model and accept anything."""
    from yolograph.evaluation import resolve_dataset

    dataset = resolve_dataset(data, images)
    if not any(len(dataset.labels(i)) for i in range(len(dataset))):
        raise DataError(f"A map: budget needs labelled images, but images {images} of {data} have no YOLO "
                        "label files (labels/<name>.txt); point images= at a labelled dataset.")


def labelled_map(model: Model, data: str, images: str, threads: int = PASS_THREADS) -> float:
    """mAP50-95 of `model` on ONNX Runtime over the labelled images `images` (a range such as "0:32")."""
    from yolograph.evaluation import evaluate

    return evaluate(OrtRunner(model, OrtOptions(threads=threads)).predict, data, images=images).map50_95
