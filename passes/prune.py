"""prune: structured channel pruning with automatic dependency groups and post-training reconstruction.

Removes whole conv output channels, together with every channel they are coupled to (residual Adds,
Concat offsets, C2f Split sections, SPPF's MaxPool chain, depthwise convs, BN), as found by
`yolograph.analysis.channel_groups`; model outputs and the Detect head's box/class channels are never
touched. Channels are ranked by importance and removed until `macs` of the conv MACs (or `ratio` of the
prunable channels) are gone, or, with `budget=map:DROP`, as many MACs as keep the mAP50-95 drop on the
labelled calibration images within DROP (the fraction found by bisection); no training. Criteria: l1 /
l2 filter norm or BN |gamma| (ranked per group, one global threshold), or activation (default): greedy
removal of the chunk whose predicted error after least-squares reconstruction, per MAC saved, is lowest,
with each group's prediction rescaled by its measured end-to-end output sensitivity (`sensitivity`
images) and at most `max_fraction` of any group removed. Then convs are refit by ridge least squares on
calibration activations, level by level on the pruned model's own activations
(`yolograph.analysis.reconstruction`). The cut is made in `steps` equal steps, each re-measuring on the
model the previous one left.

Preserves: input/output names, shapes and dtypes; the graph stays valid for ONNX Runtime. Changes
accuracy on purpose: its contract is an output SQNR floor (see `Prune.contract`), and the accuracy cost
is measured by benchmarks/pruning.py (benchmarks/README.md, "Pruning").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.analysis.channel_groups import ChannelAnalysis, analyze_channels
from yolograph.analysis.pruning import (
    Removal,
    SelectionRules,
    candidate_groups,
    class_importance,
    conv_sites,
    ErrorGreedy,
    allowed_removal,
    error_models,
    remove_classes,
    removed_roots,
    select_classes,
    set_constant,
)
from yolograph.analysis.reconstruction import (
    apply_channel_map,
    channel_map,
    LevelRunner,
    accumulate_cross,
    collect_moments,
    local_statistics,
    mean_only_map,
)
from yolograph.errors import DataError, PassError
from yolograph.evaluation.budget import labelled_map, parse_budget, require_labels
from yolograph.ir.cost import model_cost
from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass


@dataclass(frozen=True)
class PruneOptions:
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
    images: str | None = None  # calibration images: dataset root, image folder or yaml (as calibrate takes)
    count: int = 32  # the first `count` images (sorted) are used
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
            "refit_convs": pruned.refit_convs,
            "steps": pruned.steps,
            **search,
            "layers": {name: {"kept": kept, "removed": gone} for name, (kept, gone) in pruned.removal.layers.items()},
        })


@dataclass
class _Setup:
    """What every pruning of one model shares, whatever the amount: the channel analysis, the calibration
    data and its statistics, and the selection (importance computed once)."""

    analysis: ChannelAnalysis
    rules: SelectionRules
    images: list[np.ndarray]
    consumer_inputs: list[str]
    moments: dict[str, np.ndarray] | None
    select: Callable[[str, float], tuple[set[int], dict[int, int]]]  # (target, amount) -> (roots, plan)


def _prepare(model: Model, options: PruneOptions) -> _Setup:
    analysis = analyze_channels(model)
    rules = SelectionRules(options.round_to, options.min_channels, tuple(options.exclude), options.max_fraction)
    images = _calibration_images(model, options) if _needs_images(options) else []
    consumer_inputs = _consumer_inputs(model, analysis)
    moments = collect_moments(model, consumer_inputs, images) if images else None
    sites = conv_sites(model, analysis)
    if options.criterion == "activation" and options.scope == "global":
        greedy = ErrorGreedy(analysis.groups, analysis, error_models(model, analysis, moments, options.ridge),
                             sites, rules)
        weights = (group_sensitivity(model, analysis, greedy, moments, images[: options.sensitivity], options)
                   if options.sensitivity else None)

        def select(target: str, amount: float) -> tuple[set[int], dict[int, int]]:
            removed = greedy.select(target=target, amount=amount, weights=weights)
            return removed, _plan_of(analysis, removed)
    else:
        scores = class_importance(model, analysis, options.criterion, moments)

        def select(target: str, amount: float) -> tuple[set[int], dict[int, int]]:
            plan = select_classes(analysis.groups, scores, sites, target=target, amount=amount,
                                  scope=options.scope, rules=rules)
            return removed_roots(analysis.groups, scores, plan), plan
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
        fraction = _step_fraction(target, amount, step, options.steps, base_macs, model_cost(model).macs)
        if fraction <= 0:
            continue  # earlier steps overshot (whole chunks) past this step's goal
        removed, _ = setup.select(target, fraction)
        if not removed:
            continue
        refit = _local_refit(options, setup.moments) if options.reconstruct != "none" else None
        removal = remove_classes(model, setup.analysis, removed, refit)
        total = removal if total is None else total.then(removal)
        if original is not None:
            refit_convs = _sequential_refit(original, model, total.kept, setup.consumer_inputs, setup.images,
                                            options)
        removed_channels += len(removed)
        record.append({"step": step, target: round(fraction, 4), "removed_channels": len(removed),
                       "macs_removed": round(1 - model_cost(model).macs / base_macs, 4)})
    return None if total is None else _Pruned(total, removed_channels, refit_convs, record)


def _step_fraction(target: str, amount: float, step: int, steps: int, base_macs: int, current_macs: int) -> float:
    """What step `step` of `steps` removes from the current model: for MACs, the fraction that brings them
    to (1 - amount * step / steps) of the original; for channels, an equal share each step (geometric)."""
    if target == "macs":
        return 1.0 - (1.0 - amount * step / steps) * base_macs / current_macs
    return 1.0 - (1.0 - amount) ** (1.0 / steps)


# The budget search bisects the MACs fraction over (0, BUDGET_MAX_MACS) in BUDGET_STEPS trials
# (resolution 0.5 / 2^5 ~ 1.6% of the MACs); every trial is one full prune + reconstruction + mAP.
BUDGET_MAX_MACS = 0.5
BUDGET_STEPS = 5


def _search_budget(model: Model, setup: _Setup, drop: float, options: PruneOptions) -> tuple[float, dict]:
    """The largest MACs fraction found whose mAP50-95 drop on the calibration images is <= `drop`
    (0.0 when none is), and the search's record for the pass stats."""
    from yolograph.progress import track

    images = f"0:{options.count}"
    require_labels(options.images, images)
    reference = labelled_map(model, options.images, images)
    low, high, trials, best = 0.0, BUDGET_MAX_MACS, [], None
    for _ in track(range(BUDGET_STEPS), "prune: budget search"):
        macs = (low + high) / 2
        trial = model.copy()
        try:
            _prune_in_steps(trial, setup, "macs", macs, options)
        except PassError:  # the exclusions / round_to / max_fraction cannot reach this fraction
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


def _plan_of(analysis: ChannelAnalysis, removed: set[int]) -> dict[int, int]:
    return {g.id: sum(1 for r in g.classes if r in removed) for g in analysis.groups}


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
    """The first `count` calibration images, preprocessed exactly as evaluation does (kept in memory:
    statistics are gathered in several passes over them)."""
    from yolograph.evaluation.calibration_data import load_calibration_tensors

    if options.count < 1:
        raise PassError("prune count must be at least 1 (the number of calibration images).")
    if options.images is None:
        raise DataError(
            f"prune with criterion={options.criterion} and reconstruct={options.reconstruct} needs calibration "
            "images: add images=DIR (a dataset root, image folder or dataset yaml) and count=N, or use "
            "criterion=l1|l2|bn-gamma with reconstruct=none."
        )
    shape = model.inputs[0].shape
    try:
        return list(load_calibration_tensors(options.images, options.count, (shape[2], shape[3])))
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
        else:  # local and sequential (which starts from the local fit)
            mapping = channel_map(*local_statistics(stats, keep_in), keep_in, options.ridge)
        return apply_channel_map(weight, bias, mapping)

    return refit


def _sequential_refit(original: Model, pruned: Model, kept: dict[str, np.ndarray], names: list[str],
                      images, options: PruneOptions) -> int:
    """Refit every conv, level by level, so that fed the *pruned* model's activations (upstream already
    refit) it reproduces the unpruned conv output; corrects error that accumulates through the network."""
    reference = {n.name: n for n in original.nodes_by_op("Conv")}
    readers = set(names)
    decode = original.facts.decode_nodes
    convs = [n for n in pruned.nodes_by_op("Conv") if int(n.attrs.get("group", 1)) == 1
             and n.inputs[0].name in readers and n.name not in decode and n.name in reference]
    ref_runner, cand_runner = LevelRunner(original, images), LevelRunner(pruned, images)
    refit = 0
    from yolograph.progress import track

    for level in track(conv_levels(pruned, convs), "prune: sequential reconstruction"):
        targets = list(dict.fromkeys(conv.inputs[0].name for conv in level))
        ref_values, cand_values = ref_runner.run_until(targets), cand_runner.run_until(targets)
        stats = {t: accumulate_cross(ref_values, cand_values, t) for t in targets}
        for conv in level:
            source = conv.inputs[0].name
            cross, gram = stats[source]
            keep_in = kept.get(source, np.arange(cross.shape[0]))
            if len(keep_in) != gram.shape[0] - 1:
                raise PassError(f"Internal error: prune lost track of the kept channels of {source!r}.")
            ref = reference[conv.name]
            weight = np.asarray(constant_value(ref.inputs[1]))
            bias = constant_value(ref.inputs[2]) if len(ref.inputs) > 2 else None
            keep_out = kept.get(conv.outputs[0].name, np.arange(weight.shape[0]))
            bias = np.asarray(bias)[keep_out] if bias is not None else None
            mapping = channel_map(cross, gram, keep_in, options.ridge)
            new_weight, new_bias = apply_channel_map(weight[keep_out], bias, mapping)
            set_constant(pruned.graph, conv, 1, new_weight)
            if len(conv.inputs) > 2:
                set_constant(pruned.graph, conv, 2, new_bias)
            else:
                conv.inputs.append(gs.Constant(f"{conv.name}.bias", new_bias))
            refit += 1
    pruned.invalidate()
    return refit


def conv_levels(model: Model, convs: list) -> list[list]:
    """Convs grouped so that no conv depends on another of its own or a later group."""
    import networkx as nx

    view = model.nx_graph
    chosen = {c.name: c for c in convs}
    level: dict[str, int] = {}
    for name in nx.topological_sort(view):
        if name in chosen:
            upstream = [level[a] for a in nx.ancestors(view, name) if a in level]
            level[name] = 1 + max(upstream, default=-1)
    groups: dict[int, list] = {}
    for name, value in level.items():
        groups.setdefault(value, []).append(chosen[name])
    return [groups[k] for k in sorted(groups)]


def group_sensitivity(model: Model, analysis: ChannelAnalysis, greedy: ErrorGreedy, moments, images,
                      options: PruneOptions, fraction: float = 0.25) -> dict[int, float]:
    """Per candidate group: measured output distortion / predicted layer error when a quarter of it is pruned.

    The predicted error is relative to each consumer's own output, so it cannot tell an early backbone
    layer (whose error every later layer inherits) from a late one; this ratio, measured on a few images
    with local reconstruction, puts every group's prediction on the scale of the model's outputs.
    Distortion has one term per output part (`_distortion_terms`: a detect output's boxes and class
    scores); each term is divided by its median over the groups, so every part counts alike whatever
    its units.
    """
    from yolograph.runtime import OrtOptions, OrtRunner
    from yolograph.progress import track

    reference = OrtRunner(model, OrtOptions(threads=2))
    expected = [reference.run(image) for image in images]
    detect = model.facts.is_detect
    refit = _local_refit(options, moments)
    terms: dict[int, np.ndarray] = {}
    predictions: dict[int, float] = {}
    rules = greedy.rules
    for group in track(greedy.candidates, "prune: group sensitivity"):
        count = allowed_removal(group, max(rules.round_to, int(round(fraction * group.size))), rules)
        if count == 0:
            continue
        predictions[group.id], chunk = greedy.chunk(group.id, list(group.classes), count)
        trial = model.copy()
        remove_classes(trial, analysis, set(chunk), refit)
        runner = OrtRunner(trial, OrtOptions(threads=2))
        terms[group.id] = np.mean([_distortion_terms(ref, runner.run(image), detect)
                                   for ref, image in zip(expected, images)], axis=0)
    if not terms:
        return {}
    scales = np.maximum(np.median(np.stack(list(terms.values())), axis=0), 1e-30)
    ratios = {gid: float(np.sum(value / scales)) / max(predictions[gid], 1e-9) for gid, value in terms.items()}
    scale = float(np.median(list(ratios.values())))
    return {gid: value / scale for gid, value in ratios.items()}


# Anchors whose best reference class score is below this hold no detection that mAP would count.
CONFIDENT_SCORE = 0.05


def _distortion_terms(reference: list[np.ndarray], candidate: list[np.ndarray], detect: bool) -> np.ndarray:
    """How far `candidate` outputs are from `reference`, one term per output part.

    A YOLO detect output [1, 4 + nc, anchors] gives two terms: the boxes' error relative to their own
    size (centre offsets / width, height; log width and height ratios), weighted by the reference score
    over the confident anchors, which is what IoU and so mAP50-95 feel (the noise-to-signal energy of raw
    pixel coordinates, used before, is ~1e-4 for any pruning and let the head's box convs be cut in
    half: mAP50-95 at 20% fewer MACs 31.9, now 38.4); and the class scores' noise-to-signal energy.
    Any other output: its noise-to-signal energy.
    """
    terms = []
    for ref, new in zip(reference, candidate):
        ref, new = ref.astype(np.float64), new.astype(np.float64)
        if not (detect and ref.ndim == 3 and ref.shape[1] > 4):
            terms.append(_noise_to_signal(ref, new))
            continue
        box, box_new, scores = ref[0, :4], new[0, :4], ref[0, 4:]
        weight = np.where(scores.max(axis=0) > CONFIDENT_SCORE, scores.max(axis=0), 0.0)
        width, height = np.maximum(box[2], 1e-3), np.maximum(box[3], 1e-3)
        error = (((box_new[0] - box[0]) / width) ** 2 + ((box_new[1] - box[1]) / height) ** 2
                 + np.log(np.maximum(box_new[2], 1e-3) / width) ** 2
                 + np.log(np.maximum(box_new[3], 1e-3) / height) ** 2)
        terms.append(float(np.sum(weight * error) / max(np.sum(weight), 1e-30)))
        terms.append(_noise_to_signal(scores, new[0, 4:]))
    return np.asarray(terms)


def _noise_to_signal(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.sum((reference - candidate) ** 2) / max(np.sum(reference ** 2), 1e-30))
