"""The one exception hierarchy of yolograph.

Every error a user can cause derives from :class:`YoloGraphError`; the CLI prints its message
as one line and exits with code 2. Messages are sentences that name the problem and the fix.
"""

from __future__ import annotations


class YoloGraphError(Exception):
    """Base class of every error yolograph raises on purpose."""


class ModelError(YoloGraphError):
    """The model file or graph is missing, corrupt, unsupported or has the wrong shape."""


class PipelineError(YoloGraphError):
    """A pipeline cannot be parsed or cannot run in the given order (unknown pass, bad option, order)."""


class PassError(YoloGraphError):
    """A pass failed on a model it accepted."""


class ContractViolation(PassError):
    """A pass broke its stated contract when verified against ONNX Runtime."""


class DataError(YoloGraphError):
    """A dataset, calibration set or input tensor is empty, unreadable or of the wrong shape."""


class OutputError(YoloGraphError):
    """An output path cannot be written (an existing folder, a read-only place, the input model)."""


class BackendError(YoloGraphError):
    """A backend is unavailable on this machine or failed to compile or run a model."""
