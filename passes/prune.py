"""prune: structured channel pruning with automatic dependency groups and post-training reconstruction.

Removes whole conv output channels, together with every channel they are coupled to (residual Adds,
Concat offsets, C2f Split sections, SPPF's MaxPool chain, depthwise convs, BN), as found by
`yolograph.analysis.channel_groups`; model outputs and the Detect head's box/class channels are never
touched. Channels are ranked by importance (l1 / l2 filter norm, BN |gamma|, or activation: each
consumer's weight norm times the channel's RMS on calibration images), removed until `macs` of the
conv MACs (or `ratio` of the prunable channels) are gone, and consumer convs are refit by ridge least
squares on calibration activations (see `yolograph.analysis.reconstruction`). No training.

Preserves: input/output names, shapes and dtypes; the graph stays valid for ONNX Runtime. Changes
accuracy on purpose: its contract is an output SQNR floor (see `Prune.contract`), and the accuracy cost
is measured by benchmarks/pruning.py (benchmarks/README.md, "Pruning").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.analysis.channel_groups import ChannelAnalysis, analyze_channels
from yolograph.analysis.pruning import (
    SelectionRules,
    candidate_groups,
    class_importance,
    conv_sites,
    error_models,
    greedy_select,
    remove_classes,
    removed_roots,
    select_classes,
    set_constant,
)
from yolograph.analysis.reconstruction import (
    apply_channel_map,
    channel_map,
    collect_cross_moments,
    collect_moments,
    local_statistics,
    mean_only_map,
)
from yolograph.errors import DataError, PassError
from yolograph.ir.cost import model_cost
from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass


@dataclass(frozen=True)
class PruneOptions:
    macs: float = 0.0  # remove channels until this fraction of the conv MACs is gone
    ratio: float = 0.0  # or: remove this fraction of the prunable channels
    criterion: Literal["l1", "l2", "bn-gamma", "activation"] = "activation"
    scope: Literal["global", "per-layer"] = "global"
    round_to: int = 8  # kept channels per group are a multiple of this
    min_channels: int = 8  # never keep fewer channels in a group
    exclude: tuple[str, ...] = ()  # node-name patterns (fnmatch or substring) whose groups stay whole
    images: str = ""  # calibration images (dataset root, image folder or yaml); default: coco128 from the data root
    count: int = 32  # the first `count` images (sorted) are used
    reconstruct: Literal["lstsq", "bias", "none"] = "lstsq"
    rounds: int = 2  # lstsq rounds: 1 = local refit of consumers, 2+ = sequential refit of every conv
    ridge: float = 1e-2  # ridge strength, relative to the mean input channel energy


# Measured on yolov8n (coco128 0-31, activation criterion, lstsq): min class-score SQNR ~ 19 dB at
# macs=0.1 and ~ 12 dB at macs=0.3 on the verifier's random inputs; box rows stay > 30 dB. The floor is
# set below the 50% point so the check catches broken graphs (wrong channel wiring gives < 3 dB), not
# the intended accuracy loss, which the pruning benchmark measures as mAP.
SQNR_FLOOR_DB = 6.0


@register_pass("prune")
class Prune(Pass):
    """Structured channel pruning (macs= or ratio=) with dependency groups and least-squares reconstruction."""

    Options = PruneOptions
    contract = Contract.sqnr(SQNR_FLOOR_DB, note="removes channels; accuracy cost measured in benchmarks/pruning.py")

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"batchnorm"}) if self.options.criterion == "bn-gamma" else frozenset()

    def run(self, model: Model) -> PassResult:
        options = self.options
        target, amount = _target(options)
        before = model_cost(model)
        analysis = analyze_channels(model)
        rules = SelectionRules(options.round_to, options.min_channels, tuple(options.exclude))
        images = _calibration_images(model, options) if _needs_images(options) else []
        consumer_inputs = _consumer_inputs(model, analysis)
        moments = collect_moments(model, consumer_inputs, images) if images else None
        original = model.copy() if options.reconstruct == "lstsq" and options.rounds > 1 else None

        sites = conv_sites(model, analysis)
        if options.criterion == "activation" and options.scope == "global":
            errors = error_models(model, analysis, moments, options.ridge)
            removed = greedy_select(analysis.groups, analysis, errors, sites, target=target, amount=amount, rules=rules)
            plan = _plan_of(analysis, removed)
        else:
            scores = class_importance(model, analysis, options.criterion, moments)
            plan = select_classes(analysis.groups, scores, sites, target=target, amount=amount,
                                  scope=options.scope, rules=rules)
            removed = removed_roots(analysis.groups, scores, plan)
        if not removed:
            return PassResult(changed=False, stats={"removed_channels": 0})
        refit = _local_refit(options, moments) if options.reconstruct != "none" else None
        removal = remove_classes(model, analysis, removed, refit)
        self.removal = removal  # kept channel indices per feature map, for callers that compare models
        refit_convs = 0
        if original is not None:
            refit_convs = _sequential_refit(original, model, removal.kept, consumer_inputs, images, options)
        after = model_cost(model)
        return PassResult(changed=True, stats={
            "macs_before": before.macs,
            "macs_after": after.macs,
            "macs_removed": round(1 - after.macs / before.macs, 4),
            "params_before": before.params,
            "params_after": after.params,
            "params_removed": round(1 - after.params / before.params, 4),
            "groups_pruned": sum(1 for n in plan.values() if n),
            "candidate_groups": len(candidate_groups(analysis.groups, rules)),
            "removed_channels": len(removed),
            "calibration_images": len(images),
            "refit_convs": refit_convs,
            "layers": {name: {"kept": kept, "removed": gone} for name, (kept, gone) in removal.layers.items()},
        })


def _plan_of(analysis: ChannelAnalysis, removed: set[int]) -> dict[int, int]:
    return {g.id: sum(1 for r in g.classes if r in removed) for g in analysis.groups}


def _target(options: PruneOptions) -> tuple[str, float]:
    if (options.macs > 0) == (options.ratio > 0):
        raise PassError("prune needs exactly one target: macs=FRACTION (e.g. macs=0.3) or ratio=FRACTION (e.g. ratio=0.3).")
    amount = options.macs or options.ratio
    if not 0 < amount < 1:
        raise PassError(f"prune target {amount} is not a fraction in (0, 1); use e.g. macs=0.3.")
    if options.round_to < 1 or options.min_channels < 1:
        raise PassError("prune round_to and min_channels must be at least 1.")
    return ("macs" if options.macs > 0 else "ratio"), amount


def _needs_images(options: PruneOptions) -> bool:
    return options.criterion == "activation" or options.reconstruct != "none"


def _calibration_images(model: Model, options: PruneOptions) -> list[np.ndarray]:
    """The first `count` calibration images, preprocessed exactly as evaluation does (kept in memory:
    statistics are gathered in several passes over them)."""
    from yolograph.data import coco128
    from yolograph.quantization.calibration_data import load_calibration_tensors

    if options.count < 1:
        raise PassError("prune count must be at least 1 (the number of calibration images).")
    shape = model.inputs[0].shape
    try:
        return list(load_calibration_tensors(options.images or str(coco128()), options.count, (shape[2], shape[3])))
    except DataError as exc:
        raise DataError(f"prune needs calibration images for criterion={options.criterion} / "
                        f"reconstruct={options.reconstruct}: {exc} Pass images=DIR, or reconstruct=none with "
                        "criterion=l1|l2|bn-gamma.") from exc


def _consumer_inputs(model: Model, analysis: ChannelAnalysis) -> list[str]:
    """Feature maps read by ordinary (group=1) convs: what importance and reconstruction look at."""
    return [
        node.inputs[0].name
        for node in model.nodes_by_op("Conv")
        if int(node.attrs.get("group", 1)) == 1 and node.inputs[0].name in analysis.tensor_atoms
    ]


def _local_refit(options: PruneOptions, moments):
    """Round 1: replace each removed input channel by its prediction from the kept ones (or its mean)."""

    def refit(conv, keep_in: np.ndarray, gone_in: np.ndarray):
        weight = constant_value(conv.inputs[1])
        bias = constant_value(conv.inputs[2]) if len(conv.inputs) > 2 else None
        stats = moments.get(conv.inputs[0].name) if moments else None
        if stats is None:
            return np.asarray(weight)[:, keep_in], bias
        if options.reconstruct == "bias":
            mapping = mean_only_map(stats, keep_in)
        else:
            mapping = channel_map(*local_statistics(stats, keep_in), keep_in, options.ridge)
        return apply_channel_map(weight, bias, mapping)

    return refit


def _sequential_refit(original: Model, pruned: Model, kept: dict[str, np.ndarray], names: list[str],
                      images, options: PruneOptions) -> int:
    """Rounds 2+: refit every conv so that, fed the pruned model's activations, it matches the original."""
    reference = {n.name: n for n in original.nodes_by_op("Conv")}
    refit = 0
    for _ in range(options.rounds - 1):
        stats = collect_cross_moments(original, pruned, names, images)
        refit = 0
        for conv in pruned.nodes_by_op("Conv"):
            source = conv.inputs[0].name
            ref = reference.get(conv.name)
            if int(conv.attrs.get("group", 1)) != 1 or source not in stats or ref is None:
                continue
            cross, gram = stats[source]
            keep_in = kept.get(source, np.arange(cross.shape[0]))
            if len(keep_in) != gram.shape[0] - 1:
                raise PassError(f"Internal error: prune lost track of the kept channels of {source!r}.")
            weight = np.asarray(constant_value(ref.inputs[1]))
            bias = constant_value(ref.inputs[2]) if len(ref.inputs) > 2 else None
            keep_out = kept.get(conv.outputs[0].name, np.arange(weight.shape[0]))
            bias = np.asarray(bias)[keep_out] if bias is not None else None
            new_weight, new_bias = apply_channel_map(weight[keep_out], bias, channel_map(cross, gram, keep_in, options.ridge))
            set_constant(pruned.graph, conv, 1, new_weight)
            if len(conv.inputs) > 2:
                set_constant(pruned.graph, conv, 2, new_bias)
            else:
                conv.inputs.append(gs.Constant(f"{conv.name}.bias", new_bias))
            refit += 1
        pruned.invalidate()
    return refit
