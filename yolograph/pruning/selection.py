"""Which channel classes to remove: MAC accounting, the selection rules, threshold selection by score.

- `conv_sites` / `macs_after`: every Conv with the classes of its input and output channels, so the
  conv MACs left after removing any set of classes are computed exactly (not summed per channel).
- `SelectionRules`, `candidate_groups`, `allowed_removal`: which groups may lose channels and how many
  (a multiple of `round_to` kept, at least `min_channels`, at most `max_fraction` of a group removed).
- `select_classes` / `removed_roots`: the classes to remove to reach a MAC or channel-ratio target by
  score, globally (one threshold on scores normalised per group) or per layer (one fraction for all).
- `step_fraction`: what each of several equal pruning steps removes from the model the previous left.

The greedy selection by predicted reconstruction error is `yolograph.pruning.error_model.ErrorGreedy`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np

from yolograph.analysis.channel_groups import ChannelAnalysis, ChannelGroup
from yolograph.ir.cost import model_cost
from yolograph.ir.model import Model
from yolograph.pruning.errors import NothingPrunable, TargetUnreachable
from yolograph.pruning.importance import normalized_scores

# -- MAC accounting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvSite:
    """A Conv and the channel-class roots of its input and output channels."""

    name: str
    depthwise: bool
    in_roots: np.ndarray | None  # None: the input is not a tracked feature map
    out_roots: np.ndarray | None
    macs: int


def conv_sites(model: Model, analysis: ChannelAnalysis) -> list[ConvSite]:
    per_node = model_cost(model).per_node_macs
    sites = []
    for node in model.graph.nodes:
        if node.op != "Conv":
            continue
        source, out = node.inputs[0].name, node.outputs[0].name
        in_roots = analysis.tensor_roots(source) if source in analysis.tensor_atoms else None
        out_roots = analysis.tensor_roots(out) if out in analysis.tensor_atoms else None
        depthwise = int(node.attrs.get("group", 1)) != 1
        sites.append(ConvSite(node.name, depthwise, in_roots, out_roots, per_node.get(node.name, 0)))
    return sites


def macs_after(sites: list[ConvSite], removed: np.ndarray) -> int:
    """Exact conv MACs once the classes `removed` (array of roots) are gone."""
    if len(removed) == 0:
        return int(sum(site.macs for site in sites))
    mask = np.zeros(int(removed.max()) + 1, dtype=bool)
    mask[removed] = True
    total = 0.0
    for site in sites:
        keep_in = _kept_fraction(site.in_roots, mask)
        keep_out = _kept_fraction(site.out_roots, mask)
        # Depthwise: input and output channels are the same classes, so count the fraction once.
        total += site.macs * (keep_out if site.depthwise else keep_in * keep_out)
    return int(round(total))


def _kept_fraction(roots: np.ndarray | None, removed_mask: np.ndarray) -> float:
    if roots is None or len(roots) == 0:
        return 1.0
    inside = roots[roots < len(removed_mask)]
    return 1.0 - float(np.count_nonzero(removed_mask[inside])) / len(roots)


# -- rules ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionRules:
    round_to: int = 8
    min_channels: int = 8
    exclude: tuple[str, ...] = ()
    max_fraction: float = 1.0  # never remove more than this fraction of a group


def candidate_groups(groups: list[ChannelGroup], rules: SelectionRules) -> list[ChannelGroup]:
    """Prunable groups not excluded by name pattern (fnmatch or substring on any member/consumer)."""
    chosen = []
    for group in groups:
        if not group.prunable or group.size <= rules.min_channels:
            continue
        names = group.member_names
        if any(_matches(name, pattern) for pattern in rules.exclude for name in names):
            continue
        chosen.append(group)
    return chosen


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or pattern in name


def allowed_removal(group: ChannelGroup, wanted: int, rules: SelectionRules) -> int:
    """The largest removal count <= wanted that leaves a multiple of round_to and >= min_channels."""
    step = max(1, rules.round_to)
    floor = max(1, rules.min_channels, int(np.ceil(group.size * (1.0 - rules.max_fraction))))
    kept = group.size - max(0, min(wanted, group.size))
    kept = max(kept, floor)
    if kept % step:
        kept = min(group.size, -(-kept // step) * step)  # round kept up: remove fewer, never more
    return max(0, group.size - kept)


# -- selection by score -----------------------------------------------------------------------------


def select_classes(
    groups: list[ChannelGroup],
    scores: dict[int, float],
    sites: list[ConvSite],
    *,
    target: str,
    amount: float,
    scope: str,
    rules: SelectionRules,
) -> dict[int, int]:
    """Number of classes to remove per group id (lowest scores go first).

    target "macs": remove until `amount` of the conv MACs are gone; "ratio": `amount` of the candidate
    channel classes. scope "global": one threshold over normalised scores; "per-layer": one fraction
    for all groups.
    """
    candidates = candidate_groups(groups, rules)
    if not candidates:
        raise NothingPrunable()
    normalized = normalized_scores(candidates, scores)
    ranked = {g.id: sorted(g.classes, key=lambda r: normalized[r]) for g in candidates}
    ranked_scores = {g.id: np.array([normalized[r] for r in ranked[g.id]]) for g in candidates}
    by_id = {g.id: g for g in candidates}
    base_macs = macs_after(sites, np.zeros(0, dtype=np.int64))
    total_classes = sum(g.size for g in candidates)

    def plan_for(counts: dict[int, int]) -> dict[int, int]:
        return {gid: allowed_removal(by_id[gid], n, rules) for gid, n in counts.items()}

    def achieved(plan: dict[int, int]) -> float:
        if target == "ratio":
            return sum(plan.values()) / total_classes
        removed = np.array([r for gid, n in plan.items() for r in ranked[gid][:n]], dtype=np.int64)
        return 1.0 - macs_after(sites, removed) / base_macs

    if scope == "per-layer":
        def plan_at(level: float) -> dict[int, int]:
            return plan_for({g.id: int(np.floor(level * g.size + 1e-9)) for g in candidates})
    else:
        def plan_at(level: float) -> dict[int, int]:
            return plan_for({gid: int(np.searchsorted(values, level, side="left")) for gid, values in ranked_scores.items()})

    if scope == "per-layer" and target == "ratio":
        return plan_at(amount)
    upper = 1.0 if scope == "per-layer" else max(float(v.max()) for v in ranked_scores.values()) + 1.0
    if achieved(plan_at(upper)) < amount:
        raise TargetUnreachable(target, amount, achieved(plan_at(upper)))
    low, high = 0.0, upper
    for _ in range(40):  # bisection on the threshold: achieved() is monotone in it
        middle = (low + high) / 2
        if achieved(plan_at(middle)) >= amount:
            high = middle
        else:
            low = middle
    return plan_at(high)


def removed_roots(groups: list[ChannelGroup], scores: dict[int, float], plan: dict[int, int]) -> set[int]:
    """The roots the plan removes: the lowest-scoring `plan[id]` classes of each group."""
    by_id = {g.id: g for g in groups}
    chosen: set[int] = set()
    for gid, count in plan.items():
        if count:
            group = by_id[gid]
            chosen |= set(sorted(group.classes, key=lambda r: scores.get(r, 0.0))[:count])
    return chosen


def step_fraction(target: str, amount: float, step: int, steps: int, base_macs: int, current_macs: int) -> float:
    """What step `step` of `steps` removes from the current model: for MACs, the fraction that brings them
    to (1 - amount * step / steps) of the original; for channels, an equal share each step (geometric)."""
    if target == "macs":
        return 1.0 - (1.0 - amount * step / steps) * base_macs / current_macs
    return 1.0 - (1.0 - amount) ** (1.0 / steps)
