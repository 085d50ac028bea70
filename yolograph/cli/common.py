"""What several commands share: JSON printing, the model argument, backend flags from backend options."""

from __future__ import annotations

import argparse
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

MODEL_HELP = "an .onnx or .pt file, or a built-in name (yolov8n ... yolov8x); default: built-in yolov8n"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of every registered backend's Options (a name several backends share is one flag).

    Defaults are None so each backend keeps its own default for what the user did not give.
    """
    from yolograph.runtime.backend import option_fields

    seen: dict[str, list[str]] = {}
    helps: dict[str, str] = {}
    kinds: dict[str, tuple[type, list[str] | None]] = {}
    for backend, field, cls in option_fields():
        seen.setdefault(field.name, []).append(backend)
        helps.setdefault(field.name, field.metadata.get("help", f"{backend} option"))
        kind, choices = _argument_type(get_type_hints(cls.Options)[field.name])
        previous = kinds.get(field.name)
        if previous:  # a shared flag offers every backend's choices, or any value if one takes any
            choices = None if previous[1] is None or choices is None else sorted({*previous[1], *choices}, key=str)
        kinds[field.name] = (kind, choices)
    group = parser.add_argument_group("backend options")
    for name, backends in seen.items():
        kind, choices = kinds[name]
        help_text = helps[name] if len(backends) == 1 else f"{helps[name]} ({', '.join(backends)})"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, choices=choices, default=None,
                           help=help_text)


def backend_values(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed backend flags, for yolograph.runtime.backend.backend_options."""
    from yolograph.runtime.backend import option_fields

    return {field.name: getattr(args, field.name, None) for _, field, _ in option_fields()}


def _argument_type(hint: Any) -> tuple[type, list[str] | None]:
    """argparse type and choices for an options field's type hint (X | None is X; Literal gives choices)."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is Literal:
        values = list(get_args(hint))
        return type(values[0]), values
    if hint is bool:
        return parse_bool, None
    if hint in (int, float, str):
        return hint, None
    return str, None


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of runs or images)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (0 meaning none or the default)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def input_shape(text: str) -> tuple[int, ...]:
    """argparse type of --input-shape: comma-separated positive dims, e.g. 1,3,640,640."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected positive dims separated by commas like 1,3,640,640, not {text!r}")
    return tuple(int(p) for p in parts)


def add_input_shape_flag(parser: argparse.ArgumentParser) -> None:
    """--input-shape N,C,H,W: the static shape a dynamic-shape ONNX model is fixed to (load_model(input_shape=))."""
    parser.add_argument("--input-shape", type=input_shape, default=None, metavar="N,C,H,W",
                        help="fix a dynamic-shape .onnx input to this shape (default: from its metadata imgsz/batch)")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def check_outputs(files: dict[str, str | None], folders: dict[str, str | None] | None = None,
                  inputs: tuple[str | None, ...] = ()) -> None:
    """Check every output path a command will write before it does any work (OutputError on the first bad one).

    A command that fails on its last write after minutes of work has wasted them; one that fails on its
    second write has left the first behind. Keys say what the path is for ('--report file'); an output
    that is one of `inputs` (the model files read) is refused too.
    """
    from pathlib import Path

    from yolograph.errors import OutputError
    from yolograph.ir.serialization import check_output_folder, check_output_path

    read = {Path(p).resolve() for p in inputs if p and Path(p).exists()}
    for what, path in files.items():
        if path:
            check_output_path(path, what)
            if Path(path).resolve() in read:
                raise OutputError(f"The {what} {path} is the input model; choose another path (the input is never modified).")
    for what, path in (folders or {}).items():
        if path:
            check_output_folder(path, what)
