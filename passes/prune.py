"""prune: structured channel pruning with automatic dependency groups and post-training reconstruction.

Removes whole conv output channels, together with every channel they are coupled to (residual Adds,
Concat offsets, C2f Split sections, SPPF's MaxPool chain, depthwise convs, BN), as found by
`yolograph.analysis.channel_groups`; model outputs and every head branch's final convs (box, class, mask
coefficients, prototypes, keypoints, angle, classifier) are never touched, so each task's outputs keep
their shape. Channels are ranked by importance and removed until `macs` of the conv MACs (or `ratio` of the
prunable channels) are gone, or, with `budget=map:DROP`, as many MACs as keep the mAP50-95 drop on the
labelled calibration images within DROP (the fraction found by bisection); no training. Criteria: l1 /
l2 filter norm or BN |gamma| (ranked per group, one global threshold), or activation (default): greedy
removal of the chunk whose predicted error after least-squares reconstruction, per MAC saved, is lowest,
with each group's prediction rescaled by its measured end-to-end output sensitivity (`sensitivity`
images) and at most `max_fraction` of any group removed. Then convs are refit by ridge least squares on
calibration activations, level by level on the pruned model's own activations
(`yolograph.pruning.reconstruction`). The cut is made in `steps` equal steps, each re-measuring on the
model the previous one left.

Preserves: input/output names, shapes and dtypes; the graph stays valid for ONNX Runtime. Changes
accuracy on purpose: its contract is an output SQNR floor (see `Prune.contract`), and the accuracy cost
is measured by benchmarks/pruning.py (benchmarks/README.md, "Pruning").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np

from yolograph.analysis.channel_groups import ChannelAnalysis, analyze_channels
from yolograph.errors import DataError, PassError
from yolograph.evaluation.budget import labelled_map, parse_budget, require_labels
from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.ir.cost import model_cost
from yolograph.ir.model import Model
from yolograph.pipeline.context import PassContext
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.progress import track
from yolograph.pruning import NoBatchNorm, NothingPrunable, TargetUnreachable
from yolograph.pruning.activations import collect_moments
from yolograph.pruning.error_model import ErrorGreedy, error_models
from yolograph.pruning.importance import class_importance
from yolograph.pruning.reconstruction import local_refit, sequential_refit
from yolograph.pruning.selection import (
    SelectionRules,
    candidate_groups,
    conv_sites,
    removed_roots,
    select_classes,
    step_fraction,
)
from yolograph.pruning.sensitivity import group_sensitivity
from yolograph.pruning.surgery import Removal, remove_classes
from yolograph.quantization.collect import model_input_size


@dataclass(frozen=True)
class PruneOptions(CalibrationSource):
    # images / count / range / npy (CalibrationSource): the calibration data for the activation
    # criterion, reconstruction and budget= (which needs labelled images)
    macs: float = 0.0  # remove channels until this fraction of the conv MACs is gone
    ratio: float = 0.0  # or: remove this fraction of the prunable channels
    # or: remove as many MACs as this budget allows, e.g. map:0.015 = at most 1.5 points of mAP50-95
    # lost on the (labelled) calibration images
    budget: str | None = None
    criterion: Literal["l1", "l2", "bn-gamma", "activation"] = "activation"
    scope: Literal["global", "per-layer"] = "global"
    round_to: int = 8  # kept channels per group are a multiple of this
    min_channels: int = 8  # never keep fewer channels in a group
    # never remove more than this fraction of a group: spreading the cut keeps every layer alive
    # (yolov8n, macs=0.3, one step, session 1: 26.8 mAP50-95 at 0.5, 16.4 unlimited)
    max_fraction: float = 0.5
    exclude: tuple[str, ...] = ()  # node-name patterns (fnmatch or substring) whose groups stay whole
    # sequential: refit every conv level by level on the pruned model's own activations (best);
    # local: refit only the consumers of removed channels, from the unpruned activations (one run);
    # bias: only fold the removed channels' means into consumer biases; none: plain slicing.
    reconstruct: Literal["sequential", "local", "bias", "none"] = "sequential"
    ridge: float = 1e-2  # ridge strength, relative to the mean input channel energy
    # prune in this many equal steps, re-measuring importance and sensitivity on the model each step left
    # (reconstruction always fits the original model's outputs). yolov8n, macs=0.3, mAP50-95 on the
    # calibration images (eval images): 1 step 44.1 (25.4), 2: 46.8 (30.1), 3: 48.6 (33.1),
    # 4: 50.8 (34.4), 5: 50.5 (35.7), 10: 49.2 (34.2); 4 chosen on the calibration images
    steps: int = 4
    # activation criterion: measure each group's end-to-end output sensitivity on this many calibration
    # images (0: trust the per-layer error prediction alone)
    sensitivity: int = 4


# The verifier feeds uniform-noise images, on which a pruned yolov8n's outputs measured (activation
# criterion): box rows 35 dB (macs=0.1, local) and 25 dB (macs=0.3, sequential); class-score rows only
# 5.8 dB and -8.2 dB, because noise images give near-zero scores whose few peaks move. Class-score SQNR is
# therefore no proxy for mAP here (real images, macs=0.2: 1.1 dB yet mAP within a few points), so the
# floor only catches gross breakage (shape changes, wiring errors that destroy every output); the
# accuracy cost itself is the measured budget in benchmarks/README.md ("Pruning").
SQNR_FLOOR_DB = -20.0


@register_pass("prune")
class Prune(Pass):
    """Structured channel pruning (macs=, ratio= or budget=map:) with dependency groups and least-squares reconstruction."""

    Options = PruneOptions
    contract = Contract.sqnr(SQNR_FLOOR_DB, note="gross-breakage floor; the mAP cost is the budget measured by "
                                                 "benchmarks/pruning.py")

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"batchnorm"}) if self.options.criterion == "bn-gamma" else frozenset()

    def run(self, model: Model) -> PassResult:
        options = self.options
        target, amount = _target(options)
        before = model_cost(model)
        with _library_errors(options):
            setup = _prepare(model, options)
            search: dict = {}
            if target == "budget":
                amount, search = _search_budget(model, setup, amount, options)
                target = "macs"
            pruned = _prune_in_steps(model, setup, target, amount, options) if amount > 0 else None
        if pruned is None:
            return PassResult(changed=False, stats={"removed_channels": 0, **search})
        self.removal = pruned.removal  # kept channel indices per feature map, for callers that compare models
        after = model_cost(model)
        return PassResult(changed=True, stats={
            "macs_before": before.macs,
            "macs_after": after.macs,
            "macs_removed": round(1 - after.macs / before.macs, 4),
            "params_before": before.params,
            "params_after": after.params,
            "params_removed": round(1 - after.params / before.params, 4),
            "convs_narrowed": sum(1 for _, gone in pruned.removal.layers.values() if gone),
            "candidate_groups": len(candidate_groups(setup.analysis.groups, setup.rules)),
            "removed_channels": pruned.removed_channels,
            "calibration_images": len(setup.images),
            "sensitivity_groups": setup.sensitivity_groups,
            "refit_convs": pruned.refit_convs,
            "steps": pruned.steps,
            **search,
            "layers": {name: {"kept": kept, "removed": gone} for name, (kept, gone) in pruned.removal.layers.items()},
        })


@contextmanager
def _library_errors(options: PruneOptions) -> Iterator[None]:
    """The pruning library's errors, reworded in this pass's options."""
    try:
        yield
    except TargetUnreachable as exc:
        raise PassError(
            f"prune cannot remove {exc.amount:.0%} of the {exc.what}: the most it can is {exc.reached:.1%} with "
            f"round_to={options.round_to}, min_channels={options.min_channels}, max_fraction={options.max_fraction} "
            "and the exclusions given; lower the target or relax them."
        ) from exc
    except NothingPrunable as exc:
        raise PassError("prune cannot remove anything: no channel group is prunable after min_channels/exclude; "
                        "relax exclude= or min_channels=.") from exc
    except NoBatchNorm as exc:
        raise PassError("prune criterion=bn-gamma needs BatchNormalization nodes, but the model has none (BN was "
                        "folded); run prune before fold-bn or choose criterion=l1|l2|activation.") from exc


@dataclass
class _Setup:
    """What every pruning of one model shares, whatever the amount: the channel analysis, the calibration
    data and its statistics, and the selection (importance computed once)."""

    analysis: ChannelAnalysis
    rules: SelectionRules
    images: list[np.ndarray]
    consumer_inputs: list[str]
    moments: dict[str, np.ndarray] | None
    select: Callable[[str, float], set[int]]  # (target, amount) -> the channel classes to remove
    sensitivity_groups: int = 0  # groups whose end-to-end sensitivity was measured


def _prepare(model: Model, options: PruneOptions) -> _Setup:
    analysis = analyze_channels(model)
    rules = SelectionRules(options.round_to, options.min_channels, tuple(options.exclude), options.max_fraction)
    images = _calibration_images(model, options) if _needs_images(options) else []
    threads = _threads()
    consumer_inputs = _consumer_inputs(model, analysis)
    moments = collect_moments(model, consumer_inputs, images, threads) if images else None
    sites = conv_sites(model, analysis)
    if options.criterion == "activation" and options.scope == "global":
        greedy = ErrorGreedy(analysis.groups, analysis, error_models(model, analysis, moments, options.ridge),
                             sites, rules)
        weights = (group_sensitivity(model, analysis, greedy, _refit(options, moments),
                                     images[: options.sensitivity], threads)
                   if options.sensitivity else None)

        def select(target: str, amount: float) -> set[int]:
            return greedy.select(target=target, amount=amount, weights=weights)

        return _Setup(analysis, rules, images, consumer_inputs, moments, select, len(weights or {}))
    scores = class_importance(model, analysis, options.criterion, moments)

    def select(target: str, amount: float) -> set[int]:
        plan = select_classes(analysis.groups, scores, sites, target=target, amount=amount,
                              scope=options.scope, rules=rules)
        return removed_roots(analysis.groups, scores, plan)

    return _Setup(analysis, rules, images, consumer_inputs, moments, select)


@dataclass
class _Pruned:
    removal: Removal  # from the model the pass was given to the one it returns
    removed_channels: int
    refit_convs: int
    steps: list[dict]  # per step: its target and what it removed


def _prune_in_steps(model: Model, first: _Setup, target: str, amount: float, options: PruneOptions) -> _Pruned | None:
    """Prune `model` in place in `options.steps` steps to `amount` (of its MACs, or of its prunable
    channels); None when nothing was removed.

    Each step after the first re-analyses the model the previous one left (statistics, sensitivity,
    selection), so later choices see the damage earlier ones did. Sequential reconstruction always fits
    the original model's conv outputs, through the kept indices composed over the steps.
    """
    original = model.copy() if options.reconstruct == "sequential" else None
    base_macs = model_cost(model).macs
    total: Removal | None = None
    removed_channels = refit_convs = 0
    record = []
    for step in range(1, options.steps + 1):
        setup = first if step == 1 else _prepare(model, options)
        fraction = step_fraction(target, amount, step, options.steps, base_macs, model_cost(model).macs)
        if fraction <= 0:
            continue  # earlier steps overshot (whole chunks) past this step's goal
        removed = setup.select(target, fraction)
        if not removed:
            continue
        refit = _refit(options, setup.moments) if options.reconstruct != "none" else None
        removal = remove_classes(model, setup.analysis, removed, refit)
        total = removal if total is None else total.then(removal)
        if original is not None:
            refit_convs = sequential_refit(original, model, total.kept, setup.consumer_inputs, setup.images,
                                           options.ridge, _threads())
        removed_channels += len(removed)
        record.append({"step": step, target: round(fraction, 4), "removed_channels": len(removed),
                       "macs_removed": round(1 - model_cost(model).macs / base_macs, 4)})
    return None if total is None else _Pruned(total, removed_channels, refit_convs, record)


# The budget search bisects the MACs fraction over (0, BUDGET_MAX_MACS) in BUDGET_STEPS trials
# (resolution 0.5 / 2^5 ~ 1.6% of the MACs); every trial is one full prune + reconstruction + mAP.
BUDGET_MAX_MACS = 0.5
BUDGET_STEPS = 5


def _search_budget(model: Model, setup: _Setup, drop: float, options: PruneOptions) -> tuple[float, dict]:
    """The largest MACs fraction found whose mAP50-95 drop on the calibration images is <= `drop`
    (0.0 when none is), and the search's record for the pass stats."""
    images = options.range or f"0:{options.count}"
    require_labels(options.images, images)
    reference = labelled_map(model, options.images, images)
    low, high, trials, best = 0.0, BUDGET_MAX_MACS, [], None
    for _ in track(range(BUDGET_STEPS), "prune: budget search"):
        macs = (low + high) / 2
        trial = model.copy()
        try:
            _prune_in_steps(trial, setup, "macs", macs, options)
        except TargetUnreachable:  # the exclusions / round_to / max_fraction cannot reach this fraction
            high = macs
            continue
        lost = reference - labelled_map(trial, options.images, images)
        trials.append({"macs": round(macs, 4), "map_drop": round(lost, 4)})
        if lost <= drop:
            low, best = macs, trials[-1]
        else:
            high = macs
    return low, {
        "budget": options.budget,
        "budget_met": best is not None,
        "budget_map_before": round(reference, 4),
        "budget_map_drop": best["map_drop"] if best else None,
        "budget_trials": trials,
    }


def _target(options: PruneOptions) -> tuple[str, float]:
    """("macs" | "ratio", fraction) or ("budget", allowed mAP drop)."""
    if (options.macs > 0) + (options.ratio > 0) + (options.budget is not None) != 1:
        raise PassError("prune needs exactly one target: macs=FRACTION (e.g. macs=0.3), ratio=FRACTION "
                        "(e.g. ratio=0.3) or budget=map:DROP (e.g. budget=map:0.015).")
    if options.round_to < 1 or options.min_channels < 1 or options.steps < 1:
        raise PassError("prune round_to, min_channels and steps must be at least 1.")
    if options.budget is not None:
        _, drop = parse_budget(options.budget, kinds=("map",), owner="prune")
        if options.images is None:
            raise DataError("prune budget=map: measures mAP50-95 on labelled calibration images: add "
                            "images=DIR (a labelled dataset root, image folder or yaml) and count=N.")
        return "budget", drop
    amount = options.macs or options.ratio
    if not 0 < amount < 1:
        raise PassError(f"prune target {amount} is not a fraction in (0, 1); use e.g. macs=0.3.")
    return ("macs" if options.macs > 0 else "ratio"), amount


def _needs_images(options: PruneOptions) -> bool:
    return options.criterion == "activation" or options.reconstruct != "none" or options.budget is not None


def _calibration_images(model: Model, options: PruneOptions) -> list[np.ndarray]:
    """The calibration tensors, preprocessed exactly as evaluation does (kept in memory: statistics are
    gathered in several passes over them; the pass context letterboxes them once per pipeline)."""
    if options.images is None and options.npy is None:
        raise DataError(
            f"prune with criterion={options.criterion} and reconstruct={options.reconstruct} needs calibration "
            "images: add images=DIR (a dataset root, image folder or dataset yaml) and count=N (or npy=FILE), "
            "or use criterion=l1|l2|bn-gamma with reconstruct=none."
        )
    try:
        return list(PassContext.current().calibration_tensors(options.source(), model_input_size(model)))
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


def _refit(options: PruneOptions, moments):
    """The first refit of removed input channels: their mean (reconstruct=bias) or their least-squares
    prediction from the kept ones (local, and sequential, which starts from the local fit)."""
    return local_refit(moments, "mean" if options.reconstruct == "bias" else "least-squares", options.ridge)


def _threads() -> int:
    """ONNX Runtime threads for the float runs pruning makes: the running pipeline's."""
    return PassContext.current().threads
