"""Training on the IR: a torch emitter, distillation losses, augmentation and the training loop.

PyTorch is the optional extra `yolograph[train]`; `require_torch()` is the one place that says how to
install it. Nothing else in yolograph imports torch (the `.pt` frontend reads checkpoints without it).
"""

from __future__ import annotations

from yolograph.errors import PipelineError

INSTALL_HINT = "pip install 'yolograph[train]'"


def require_torch(what: str = "distill"):
    """The torch module, or a PipelineError saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise PipelineError(f"{what} trains with PyTorch, which is not installed; install it with "
                            f"{INSTALL_HINT} (CPU wheels: --extra-index-url https://download.pytorch.org/whl/cpu).") from exc
    return torch
