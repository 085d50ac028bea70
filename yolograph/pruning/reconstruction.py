"""Post-training reconstruction of pruned convs by ridge least squares on calibration activations.

A consumer conv computes y = W * x. After pruning it sees only x' (its kept input channels, and
upstream pruning has perturbed those too). Reconstruction fits, per conv, a channel map
A = argmin E||x - A [x'; 1]||^2 + lam ||A - A0||^2 (A0 = plain slicing) and sets
W'[:, :, tap] = W[:, :, tap] @ A[:, :k] and b' = b + sum_tap W[:, :, tap] @ A[:, k]: every removed
channel is replaced by its best linear prediction from the kept ones, plus its mean (the intercept,
which is the "compensate the removed channels' mean into the bias" step). For 1x1 convs this is exactly
the output least-squares fit min E||W x - W' x' - b'||^2; for k x k convs it is the same fit with a
map shared by all taps (channel-level, so it needs only (C+1)^2 statistics, not im2col patches).

"local" (`local_refit`) uses the unpruned model's activations for both sides, from one run
(`yolograph.pruning.activations.collect_moments`); "bias" only folds the removed channels' means into
the consumer biases. "sequential" (`sequential_refit`) runs the unpruned and the pruned model side by
side, level by level, and refits every conv so that its output computed from the *pruned* model's input
(upstream convs already refit) matches the unpruned output, which corrects error accumulated upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.progress import track
from yolograph.pruning.activations import LevelRunner, accumulate_cross
from yolograph.pruning.errors import PruningError
from yolograph.pruning.importance import Moments
from yolograph.pruning.surgery import set_constant
from yolograph.runtime import PASS_THREADS


def channel_map(cross: np.ndarray, gram: np.ndarray, keep: np.ndarray, ridge: float) -> np.ndarray:
    """A (C x (k+1)): ridge least-squares map from [x'; 1] to x, shrunk toward plain slicing."""
    k = len(keep)
    prior = np.zeros_like(cross)
    prior[keep, np.arange(k)] = 1.0
    diag = np.diag(gram)[:k]
    lam = ridge * float(diag.mean()) if k and diag.mean() > 0 else ridge
    reg = np.eye(k + 1) * lam
    reg[k, k] = 0.0  # never shrink the intercept
    return np.linalg.solve(gram + reg, (cross + lam * prior).T).T


def local_statistics(moments: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E[x z^T], E[z z^T]) for z = [x_keep; 1], read off the unpruned model's augmented moments."""
    channels = moments.shape[0] - 1
    columns = np.append(keep, channels)
    return moments[:channels][:, columns], moments[np.ix_(columns, columns)]


def mean_only_map(moments: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """A that keeps the kept channels and replaces each removed one by its mean (bias compensation)."""
    channels = moments.shape[0] - 1
    mapping = np.zeros((channels, len(keep) + 1))
    mapping[keep, np.arange(len(keep))] = 1.0
    removed = np.setdiff1d(np.arange(channels), keep)
    mapping[removed, -1] = moments[removed, -1]
    return mapping


def apply_channel_map(weight: np.ndarray, bias: np.ndarray | None, mapping: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New (weight over the k kept inputs, bias) of a conv whose input x is replaced by A [x'; 1]."""
    w = np.asarray(weight, np.float64)
    new_weight = np.einsum("ochw,ck->okhw", w, mapping[:, :-1])
    shift = np.einsum("ochw,c->o", w, mapping[:, -1])
    base = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
    dtype = np.asarray(weight).dtype
    return new_weight.astype(dtype), (base + shift).astype(dtype)




# -- the refits ------------------------------------------------------------------------------------

Refit = Callable[[gs.Node, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]]
REFIT_MODES = ("least-squares", "mean")


def local_refit(moments: Moments | None, mode: str, ridge: float) -> Refit:
    """A `remove_classes` refit that replaces each removed input channel of a conv by its prediction
    from the kept ones (mode "least-squares") or by its mean ("mean"), from the unpruned model's moments;
    convs whose input has no moments are plainly sliced."""
    if mode not in REFIT_MODES:
        raise PruningError(f"Unknown refit mode {mode!r}; use one of {', '.join(REFIT_MODES)}.")

    def refit(conv: gs.Node, keep_in: np.ndarray, gone_in: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        weight = constant_value(conv.inputs[1])
        bias = constant_value(conv.inputs[2]) if len(conv.inputs) > 2 else None
        stats = moments.get(conv.inputs[0].name) if moments else None
        if stats is None:
            return np.asarray(weight)[:, keep_in], bias
        if mode == "mean":
            mapping = mean_only_map(stats, keep_in)
        else:
            mapping = channel_map(*local_statistics(stats, keep_in), keep_in, ridge)
        return apply_channel_map(weight, bias, mapping)

    return refit


def sequential_refit(original: Model, pruned: Model, kept: dict[str, np.ndarray], readers: Sequence[str],
                     images: Sequence[np.ndarray], ridge: float, threads: int = PASS_THREADS) -> int:
    """Refit every conv of `pruned` that reads one of `readers`, level by level, so that fed the *pruned*
    model's activations (upstream already refit) it reproduces the `original` conv output; corrects
    error that accumulates through the network. `kept`: the kept channel indices of each feature map
    (relative to `original`). Returns the number of convs refit."""
    reference = {n.name: n for n in original.nodes_by_op("Conv")}
    reading = set(readers)
    decode = original.facts.decode_nodes
    convs = [n for n in pruned.nodes_by_op("Conv") if int(n.attrs.get("group", 1)) == 1
             and n.inputs[0].name in reading and n.name not in decode and n.name in reference]
    ref_runner, cand_runner = LevelRunner(original, images, threads), LevelRunner(pruned, images, threads)
    refit = 0
    for level in track(conv_levels(pruned, convs), "prune: sequential reconstruction"):
        targets = list(dict.fromkeys(conv.inputs[0].name for conv in level))
        ref_values, cand_values = ref_runner.run_until(targets), cand_runner.run_until(targets)
        stats = {t: accumulate_cross(ref_values, cand_values, t) for t in targets}
        for conv in level:
            source = conv.inputs[0].name
            cross, gram = stats[source]
            keep_in = kept.get(source, np.arange(cross.shape[0]))
            if len(keep_in) != gram.shape[0] - 1:
                raise PruningError(f"Internal error: the kept channels of {source!r} do not match the pruned model.")
            ref = reference[conv.name]
            weight = np.asarray(constant_value(ref.inputs[1]))
            bias = constant_value(ref.inputs[2]) if len(ref.inputs) > 2 else None
            keep_out = kept.get(conv.outputs[0].name, np.arange(weight.shape[0]))
            bias = np.asarray(bias)[keep_out] if bias is not None else None
            mapping = channel_map(cross, gram, keep_in, ridge)
            new_weight, new_bias = apply_channel_map(weight[keep_out], bias, mapping)
            set_constant(pruned.graph, conv, 1, new_weight)
            if len(conv.inputs) > 2:
                set_constant(pruned.graph, conv, 2, new_bias)
            else:
                conv.inputs.append(gs.Constant(f"{conv.name}.bias", new_bias))
            refit += 1
    pruned.invalidate()
    return refit


def conv_levels(model: Model, convs: list[gs.Node]) -> list[list[gs.Node]]:
    """Convs grouped so that no conv depends on another of its own or a later group."""
    view = model.nx_graph
    chosen = {c.name: c for c in convs}
    level: dict[str, int] = {}
    for name in nx.topological_sort(view):
        if name in chosen:
            upstream = [level[a] for a in nx.ancestors(view, name) if a in level]
            level[name] = 1 + max(upstream, default=-1)
    groups: dict[int, list[gs.Node]] = {}
    for name, value in level.items():
        groups.setdefault(value, []).append(chosen[name])
    return [groups[k] for k in sorted(groups)]
