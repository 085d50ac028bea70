"""Textual pipelines: `fold-bn,cleanup,insert-qdq{profile=trt},calibrate{method=entropy,count=32}`.

Options are typed by the pass's options dataclass: bool (true/false), int, float, str,
Literal[...] choices, Optional[...] (`none`), and tuples separated by `|` whose elements are
converted to the tuple's element type (`tuple[int, ...]`: integers). Every option is checked here,
when the pipeline is parsed (the dataclass's __post_init__, then the pass's validate()), so a bad
option fails before any pass has run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from yolograph.errors import PipelineError, YoloGraphError
from yolograph.pipeline.passes import Pass, get_pass


def parse_pipeline(text: str) -> list[Pass]:
    """Parse pipeline text into configured pass instances; errors list what is valid."""
    steps = _split_top_level(text.strip())
    if not steps:
        raise PipelineError("The pipeline is empty; give passes separated by commas, e.g. 'fold-bn,cleanup'.")
    return [_parse_step(step) for step in steps]


def _split_top_level(text: str) -> list[str]:
    steps, depth, current = [], 0, []
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"Unbalanced '}}' in pipeline {text!r}.")
        if char == "," and depth == 0:
            steps.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise PipelineError(f"Unbalanced '{{' in pipeline {text!r}.")
    steps.append("".join(current).strip())
    if any(not s for s in steps) and text:
        raise PipelineError(f"Empty step in pipeline {text!r}; remove the doubled or trailing comma.")
    return [s for s in steps if s]


def _parse_step(step: str) -> Pass:
    name, _, rest = step.partition("{")
    name = name.strip()
    if rest and not rest.endswith("}"):
        raise PipelineError(f"Options of {name!r} must be closed by '}}': {step!r}.")
    pass_cls = get_pass(name)
    raw = _parse_options_text(name, rest[:-1]) if rest else {}
    pass_ = pass_cls(build_options(pass_cls, raw))
    pass_.validate()
    return pass_


def _parse_options_text(name: str, text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise PipelineError(f"Option {item!r} of pass {name!r} must be written key=value.")
        options[key.strip()] = value.strip()
    return options


def build_options(pass_cls: type[Pass], raw: dict[str, Any]) -> Any:
    """An instance of the pass's options dataclass from string (or typed) values."""
    fields = {f.name: f for f in dataclasses.fields(pass_cls.Options)}
    hints = get_type_hints(pass_cls.Options)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            valid = ", ".join(f"{n} ({describe_type(hints[n])})" for n in fields) or "none"
            raise PipelineError(f"Pass {pass_cls.name!r} has no option {key!r}; valid options: {valid}.")
        values[key] = convert_value(pass_cls.name, key, value, hints[key]) if isinstance(value, str) else value
    try:
        return pass_cls.Options(**values)
    except PipelineError:
        raise
    except (TypeError, ValueError, YoloGraphError) as exc:
        reason = str(exc).rstrip(".")
        raise PipelineError(f"Bad options for pass {pass_cls.name!r}: {reason}.") from exc


def describe_type(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "|".join(map(str, get_args(hint)))
    if _is_optional(hint):
        return describe_type(_non_none(hint)) + " or none"
    if origin in (tuple, list):
        return "values separated by |"
    return getattr(hint, "__name__", str(hint))


def convert_value(pass_name: str, key: str, text: str, hint: Any) -> Any:
    def fail(expected: str) -> PipelineError:
        return PipelineError(f"Option {key!r} of pass {pass_name!r} expects {expected}, got {text!r}.")

    if _is_optional(hint):
        if text.lower() in ("none", "null", ""):
            return None
        return convert_value(pass_name, key, text, _non_none(hint))
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise fail("one of " + ", ".join(map(str, choices)))
    if origin in (tuple, list):
        element = _element_type(hint)
        return tuple(convert_value(pass_name, key, part, element) for part in text.split("|") if part)
    if hint is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise fail("true or false")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise fail("an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise fail("a number") from None
    return text


def _element_type(hint: Any) -> Any:
    """The element type of tuple[X, ...] / list[X] (str when unparameterised or heterogeneous)."""
    args = [a for a in get_args(hint) if a is not Ellipsis]
    return args[0] if len(set(args)) == 1 else str


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _non_none(hint: Any) -> Any:
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
