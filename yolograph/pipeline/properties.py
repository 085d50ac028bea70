"""Model properties that passes require, establish and remove, so pass order can be checked.

A property is a name with a probe that reads it off a model. The manager probes the input model
once, then simulates each pass's `requires`/`establishes`/`removes` to reject a bad order before
anything runs. Passes that introduce a new property register its probe here.
"""

from __future__ import annotations

from collections.abc import Callable

from yolograph.ir import metadata
from yolograph.ir.metadata import QDQ_UNCALIBRATED as UNCALIBRATED_KEY
from yolograph.ir.model import Model

_PROBES: dict[str, tuple[Callable[[Model], bool], str]] = {}


def register_property(name: str, description: str) -> Callable:
    """Register `probe(model) -> bool` for property `name`, described for error messages."""

    def decorate(probe: Callable[[Model], bool]) -> Callable[[Model], bool]:
        _PROBES[name] = (probe, description)
        return probe

    return decorate


def describe(name: str) -> str:
    return _PROBES[name][1] if name in _PROBES else name


def model_properties(model: Model) -> set[str]:
    return {name for name, (probe, _) in _PROBES.items() if probe(model)}


@register_property("batchnorm", "unfolded BatchNormalization nodes")
def _has_batchnorm(model: Model) -> bool:
    return any(n.op == "BatchNormalization" for n in model.graph.nodes)


@register_property("qdq", "QuantizeLinear/DequantizeLinear nodes")
def _has_qdq(model: Model) -> bool:
    return any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.nodes)


@register_property("calibrated", "calibrated Q/DQ scales")
def _is_calibrated(model: Model) -> bool:
    return _has_qdq(model) and model.metadata.get(UNCALIBRATED_KEY) != "1"


@register_property("nhwc", "NHWC layout")
def _is_nhwc(model: Model) -> bool:
    return model.metadata.get(metadata.LAYOUT) == "NHWC"
