"""Structured channel pruning as a library: importance, selection, error model, sensitivity, surgery,
reconstruction. The `prune` pass (passes/prune.py) chains these; the channel dependency groups they act on
come from `yolograph.analysis.channel_groups`.

| module | what |
| --- | --- |
| `importance` | one score per channel class: l1 / l2 filter norm, BN |gamma|, activation |
| `selection` | exact MAC accounting, the selection rules, threshold selection by score, step fractions |
| `error_model` | predicted post-reconstruction error per feature map; greedy selection by it |
| `sensitivity` | measured end-to-end output distortion per group (rescales the error model) |
| `surgery` | the graph edit: slicing convs, BN, Split, Resize, elementwise constants |
| `activations` | calibration moments and level-by-level runs of a model |
| `reconstruction` | ridge least-squares refits of pruned convs (local, mean-only, sequential) |
| `errors` | the typed errors raised here, in the library's own terms |
"""

from yolograph.pruning.errors import (
    NoBatchNorm,
    NothingPrunable,
    PruningError,
    TargetUnreachable,
)

__all__ = ["NoBatchNorm", "NothingPrunable", "PruningError", "TargetUnreachable"]
