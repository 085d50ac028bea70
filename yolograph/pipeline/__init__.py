"""Pass infrastructure: the pass API, pipeline parsing, properties, verification and the manager."""

from yolograph.pipeline.context import PassContext
from yolograph.pipeline.manager import PassManager, PipelineReport, run_pipeline
from yolograph.pipeline.parse import parse_pipeline
from yolograph.pipeline.passes import (
    Contract,
    NoOptions,
    Pass,
    PassResult,
    get_pass,
    register_pass,
    registered_passes,
)

__all__ = [
    "Contract",
    "NoOptions",
    "Pass",
    "PassContext",
    "PassManager",
    "PassResult",
    "PipelineReport",
    "get_pass",
    "parse_pipeline",
    "register_pass",
    "registered_passes",
    "run_pipeline",
]
