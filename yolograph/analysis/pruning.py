"""Structured channel pruning on a channel analysis: importance, selection, physical removal.

The pieces `passes/prune.py` chains together, each a plain function:

- `class_importance`: one score per channel class (l1 / l2 filter norm, BN |gamma|, or the
  activation criterion: each consumer's ||W[:, c]|| times the channel's RMS on calibration images).
- `select_classes`: which classes to remove to reach a MAC or channel-ratio target, globally (one
  threshold on scores normalised per group) or per layer (the same fraction of every group), with
  round_to / min_channels / max_fraction respected and MACs computed exactly (not summed per channel).
- `ErrorGreedy` (activation criterion, global scope): removes round_to-sized chunks, each time the one
  with the least *predicted post-reconstruction error* per MAC saved, the error computed from the
  calibration covariance of every consumer's input (correlations between channels included).
- `remove_classes`: slices Conv weights (output and input axes), biases, BN parameters, per-channel
  constants of elementwise ops, depthwise group counts, Split sizes and Resize sizes, so the graph stays
  valid and runnable. Consumer convs can be given new weights first (reconstruction).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.analysis.channel_groups import ChannelAnalysis, ChannelGroup, split_sizes
from yolograph.errors import PassError
from yolograph.ir.cost import model_cost
from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model


# -- conv roles -------------------------------------------------------------------------------------


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


# -- importance -------------------------------------------------------------------------------------


Moments = dict[str, np.ndarray]  # tensor -> augmented second moment E[[x;1][x;1]^T] over positions


def class_importance(
    model: Model, analysis: ChannelAnalysis, criterion: str, moments: Moments | None = None
) -> dict[int, float]:
    """Raw importance of every channel class under `criterion` (higher = keep)."""
    scores: dict[int, float] = defaultdict(float)
    if criterion in ("l1", "l2"):
        order = 1 if criterion == "l1" else 2
        for node in model.nodes_by_op("Conv"):
            out = node.outputs[0].name
            weight = constant_value(node.inputs[1])
            if out not in analysis.tensor_atoms or weight is None:
                continue
            norms = np.linalg.norm(np.asarray(weight, np.float64).reshape(weight.shape[0], -1), ord=order, axis=1)
            for root, value in zip(analysis.tensor_roots(out), norms):
                scores[int(root)] += float(value)
    elif criterion == "bn-gamma":
        bns = model.nodes_by_op("BatchNormalization")
        if not bns:
            raise PassError(
                "prune criterion=bn-gamma needs BatchNormalization nodes, but the model has none (BN was "
                "folded); run prune before fold-bn or choose criterion=l1|l2|activation."
            )
        for node in bns:
            source = node.inputs[0].name
            gamma = constant_value(node.inputs[1])
            if source not in analysis.tensor_atoms or gamma is None:
                continue
            for root, value in zip(analysis.tensor_roots(source), np.abs(np.asarray(gamma, np.float64))):
                scores[int(root)] += float(value)
    elif criterion == "activation":
        if moments is None:
            raise PassError("prune criterion=activation needs calibration images (images=DIR, count=N).")
        for source, w in measured_convs(model, moments):
            second = moments[source]
            rms = np.sqrt(np.maximum(np.diag(second)[:-1], 0.0))
            column_norm = np.linalg.norm(w.transpose(1, 0, 2, 3).reshape(w.shape[1], -1), axis=1)
            for root, value in zip(analysis.tensor_roots(source), column_norm * rms):
                scores[int(root)] += float(value)
    else:
        raise PassError(f"Unknown prune criterion {criterion!r}; use l1, l2, bn-gamma or activation.")
    return dict(scores)


def normalized_scores(groups: list[ChannelGroup], scores: dict[int, float]) -> dict[int, float]:
    """Scores divided by their group's mean, so groups with different weight scales compare."""
    normalized = {}
    for group in groups:
        values = np.array([scores.get(root, 0.0) for root in group.classes])
        mean = float(values.mean()) if len(values) and values.mean() > 0 else 1.0
        for root, value in zip(group.classes, values):
            normalized[root] = float(value) / mean
    return normalized


# -- selection --------------------------------------------------------------------------------------


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


def select_classes(
    groups: list[ChannelGroup],
    scores: dict[int, float],
    sites: list[ConvSite],
    *,
    target: str,
    amount: float,
    scope: str,
    rules: SelectionRules,
    group_weight: dict[int, float] | None = None,
) -> dict[int, int]:
    """Number of classes to remove per group id (lowest scores go first).

    target "macs": remove until `amount` of the conv MACs are gone; "ratio": `amount` of the candidate
    channel classes. scope "global": one threshold over normalised scores; "per-layer": one fraction
    for all groups. `group_weight` multiplies a group's normalised scores (sensitivity allocation).
    """
    candidates = candidate_groups(groups, rules)
    if not candidates:
        raise PassError(
            "prune cannot remove anything: no channel group is prunable after min_channels/exclude; "
            "relax exclude= or min_channels=."
        )
    normalized = normalized_scores(candidates, scores)
    ranked = {
        g.id: sorted(g.classes, key=lambda r: normalized[r] * (group_weight or {}).get(g.id, 1.0)) for g in candidates
    }
    ranked_scores = {
        g.id: np.array([normalized[r] * (group_weight or {}).get(g.id, 1.0) for r in ranked[g.id]]) for g in candidates
    }
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
        raise PassError(
            f"prune cannot remove {amount:.0%} of the {'MACs' if target == 'macs' else 'prunable channels'}: "
            f"the most it can is {achieved(plan_at(upper)):.1%} with round_to={rules.round_to}, "
            f"min_channels={rules.min_channels} and the exclusions given; lower the target or relax them."
        )
    low, high = 0.0, upper
    for _ in range(40):  # bisection on the threshold: achieved() is monotone in it
        middle = (low + high) / 2
        if achieved(plan_at(middle)) >= amount:
            high = middle
        else:
            low = middle
    return plan_at(high)


def removed_roots(groups: list[ChannelGroup], scores: dict[int, float], plan: dict[int, int],
                  group_weight: dict[int, float] | None = None) -> set[int]:
    """The roots the plan removes: the lowest-scoring `plan[id]` classes of each group."""
    by_id = {g.id: g for g in groups}
    chosen: set[int] = set()
    for gid, count in plan.items():
        if count:
            group = by_id[gid]
            chosen |= set(sorted(group.classes, key=lambda r: scores.get(r, 0.0))[:count])
    return chosen


# -- physical removal -------------------------------------------------------------------------------


@dataclass
class Removal:
    """What remove_classes did: per conv (kept, removed) output channels; per feature map the kept indices."""

    layers: dict[str, tuple[int, int]]
    kept: dict[str, np.ndarray]

    def then(self, later: Removal) -> Removal:
        """This removal followed by `later` (made on the model this one left), as one removal from the
        first model: kept indices compose, removed counts add up."""
        kept = dict(self.kept)
        for name, keep in later.kept.items():
            kept[name] = kept[name][keep] if name in kept else keep
        layers = dict(self.layers)
        for name, (now_kept, removed) in later.layers.items():
            layers[name] = (now_kept, layers.get(name, (0, 0))[1] + removed)
        return Removal(layers, kept)


def remove_classes(
    model: Model,
    analysis: ChannelAnalysis,
    removed: set[int],
    refit: Callable[[gs.Node, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> Removal:
    """Physically remove the channel classes `removed` (see `Removal` for what comes back).

    `refit(conv, keep_in, removed_in)` may return a consumer conv's new (weight over kept inputs, bias)
    before its input channels are dropped (reconstruction); without it they are simply sliced.
    """
    graph = model.graph
    keep_of: dict[str, np.ndarray] = {}
    for name, atoms in analysis.tensor_atoms.items():
        gone = analysis.removed_positions(name, removed)
        if len(gone):
            keep_of[name] = np.setdiff1d(np.arange(len(atoms)), gone)
    report: dict[str, tuple[int, int]] = {}
    for node in list(graph.nodes):
        touched_inputs = [t for t in node.inputs if t.name in keep_of]
        touched_outputs = [t for t in node.outputs if t.name in keep_of]
        if not touched_inputs and not touched_outputs:
            continue
        if node.op == "Conv":
            _prune_conv(graph, node, keep_of, analysis, refit, report)
        elif node.op == "BatchNormalization":
            keep = keep_of[node.inputs[0].name]
            for index in range(1, 5):
                set_constant(graph, node, index, np.asarray(constant_value(node.inputs[index]))[keep])
        elif node.op == "Split":
            _prune_split(graph, node, keep_of, analysis)
        elif node.op == "Resize":
            _prune_resize(graph, node, keep_of)
        elif node.op == "Concat":
            pass  # its output's channel map is the concatenation of the (already sliced) inputs
        elif node.op in _ELEMENTWISE:
            _prune_elementwise_constants(graph, node, keep_of)
        elif not touched_inputs or node.op not in _PASS_THROUGH:
            raise PassError(
                f"Internal error: prune would change the channels of {node.op} {node.name!r}, which the "
                "channel analysis should have blocked; please report this model."
            )
    for tensor in graph.tensors().values():
        # Stale static shapes would contradict the new channel counts; ONNX shape inference redoes them.
        if isinstance(tensor, gs.Variable) and tensor not in graph.inputs and tensor not in graph.outputs:
            tensor.shape = None
    graph.cleanup()
    model.invalidate()
    return Removal(report, keep_of)


_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "PRelu", "Where"})
_PASS_THROUGH = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Identity", "Neg", "Abs",
    "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Softplus", "Softsign", "Elu", "Selu", "Celu", "Gelu", "Mish",
    "Dropout", "Cast", "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu", "MaxPool", "AveragePool",
    "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Upsample", "Pad",
})


def _prune_conv(graph, node, keep_of, analysis, refit, report) -> None:
    weight = np.asarray(constant_value(node.inputs[1]))
    bias = np.asarray(constant_value(node.inputs[2])) if len(node.inputs) > 2 else None
    source, out = node.inputs[0].name, node.outputs[0].name
    if int(node.attrs.get("group", 1)) != 1:  # depthwise: input and output channels go together
        keep = keep_of[source]
        weight, bias = weight[keep], (bias[keep] if bias is not None else None)
        node.attrs["group"] = len(keep)
        report[node.name] = (len(keep), len(analysis.tensor_atoms[out]) - len(keep))
    else:
        if source in keep_of:
            keep_in = keep_of[source]
            gone_in = np.setdiff1d(np.arange(weight.shape[1]), keep_in)
            if refit is not None:
                weight, bias = refit(node, keep_in, gone_in)
            else:
                weight = weight[:, keep_in]
        if out in keep_of:
            keep_out = keep_of[out]
            report[node.name] = (len(keep_out), weight.shape[0] - len(keep_out))
            weight = weight[keep_out]
            bias = bias[keep_out] if bias is not None else None
    set_constant(graph, node, 1, np.ascontiguousarray(weight))
    if bias is not None:
        if len(node.inputs) > 2:
            set_constant(graph, node, 2, np.ascontiguousarray(bias))
        else:
            node.inputs.append(gs.Constant(_unique_name(graph, f"{node.name}.bias"), np.ascontiguousarray(bias)))


def _prune_split(graph, node, keep_of, analysis) -> None:
    source = node.inputs[0].name
    sizes = split_sizes(node, len(analysis.tensor_atoms[source]))
    new_sizes = [len(keep_of[t.name]) if t.name in keep_of else size for t, size in zip(node.outputs, sizes)]
    if len(node.inputs) > 1 and node.inputs[1].name:
        set_constant(graph, node, 1, np.asarray(new_sizes, dtype=np.int64))
    elif "split" in node.attrs:
        node.attrs["split"] = new_sizes
    else:  # num_outputs (opset 18) or implicit even split: make the sizes explicit
        node.attrs.pop("num_outputs", None)
        constant = gs.Constant(_unique_name(graph, f"{node.name}.split"), np.asarray(new_sizes, dtype=np.int64))
        if graph.opset >= 13:
            node.inputs[1:] = [constant]
        else:
            node.attrs["split"] = new_sizes


def _prune_resize(graph, node, keep_of) -> None:
    if len(node.inputs) > 3 and node.inputs[3].name:
        sizes = constant_value(node.inputs[3])
        if sizes is None:
            raise PassError(f"Resize {node.name!r} has run-time sizes; prune cannot update its channel count.")
        sizes = np.asarray(sizes, dtype=np.int64).copy()
        sizes[1] = len(keep_of[node.outputs[0].name])
        set_constant(graph, node, 3, sizes)


def _prune_elementwise_constants(graph, node, keep_of) -> None:
    out = node.outputs[0].name
    if out not in keep_of:
        return
    keep = keep_of[out]
    for index, tensor in enumerate(node.inputs):
        value = constant_value(tensor)
        if value is None or np.ndim(value) < 3 or np.shape(value)[-3] == 1:
            continue
        set_constant(graph, node, index, np.take(np.asarray(value), keep, axis=np.ndim(value) - 3))


def set_constant(graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give `node` input `index` new values without touching other readers of the same constant."""
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant) and len(tensor.outputs) == 1:
        tensor.values = values
        return
    node.inputs[index] = gs.Constant(_unique_name(graph, f"{tensor.name or node.name}.pruned"), values)


def _unique_name(graph: gs.Graph, base: str) -> str:
    existing = graph.tensors()
    name, suffix = base, 1
    while name in existing:
        name, suffix = f"{base}_{suffix}", suffix + 1
    return name


# -- greedy selection by predicted reconstruction error --------------------------------------------


class _TensorError:
    """Predicted consumer error, after least-squares reconstruction, of removing channels of one feature map.

    With centred covariance S of the map (ridge added) and precision L = S^-1, removing positions R
    and refitting consumers on the kept ones leaves residual covariance (L_RR)^-1, so the consumers'
    relative output error is tr(Q_RR (L_RR)^-1) with Q = sum over consumer convs of W^T W / (their
    output variance), summed over kernel taps. `delta` evaluates adding candidate position sets by a
    block Schur-complement update, vectorised over candidates.
    """

    def __init__(self, precision: np.ndarray, q: np.ndarray) -> None:
        self.precision = precision
        self.q = q
        self.removed: list[int] = []
        self.inverse = np.zeros((0, 0))

    def delta(self, positions: np.ndarray) -> np.ndarray:
        """Error increase for each row of `positions` ([n, m]: the m positions of each candidate class)."""
        lam, q, removed, g = self.precision, self.q, self.removed, self.inverse
        lam_ss = lam[positions[:, :, None], positions[:, None, :]]  # [n, m, m]
        q_ss = q[positions[:, :, None], positions[:, None, :]]
        if not removed:
            s_inv = np.linalg.inv(lam_ss)
            return np.einsum("nmk,nkm->n", q_ss, s_inv)
        r = np.asarray(removed)
        v = lam[r][:, positions]  # [R, n, m]
        u = np.einsum("ij,jnm->inm", g, v)
        s_inv = np.linalg.inv(lam_ss - np.einsum("inm,ink->nmk", v, u))
        m1 = np.einsum("inm,nmk->ink", u, s_inv)
        term_a = np.einsum("ink,ink->n", u, np.einsum("ij,jnk->ink", q[np.ix_(r, r)], m1))
        q_rs = q[r][:, positions]
        term_b = 2.0 * np.einsum("ink,ink->n", np.einsum("inm,nmk->ink", q_rs, s_inv), u)
        term_c = np.einsum("nmk,nkm->n", q_ss, s_inv)
        return term_a - term_b + term_c

    def remove(self, positions: np.ndarray) -> None:
        self.removed += [int(p) for p in positions.ravel()]
        r = np.asarray(self.removed)
        self.inverse = np.linalg.inv(self.precision[np.ix_(r, r)])

    def clone(self) -> _TensorError:
        twin = _TensorError(self.precision, self.q)
        twin.removed, twin.inverse = list(self.removed), self.inverse
        return twin


def measured_convs(model: Model, moments: Moments):
    """(input tensor name, float64 weight) of each ungrouped Conv with a constant weight whose input
    has calibration moments: the convs whose input channels the activation statistics describe."""
    for node in model.nodes_by_op("Conv"):
        source = node.inputs[0].name
        weight = constant_value(node.inputs[1])
        if int(node.attrs.get("group", 1)) == 1 and source in moments and weight is not None:
            yield source, np.asarray(weight, np.float64)


def error_models(model: Model, analysis: ChannelAnalysis, moments: Moments, ridge: float) -> dict[str, _TensorError]:
    """A _TensorError per feature map read by ordinary convs, from calibration moments."""
    q_of: dict[str, np.ndarray] = {}
    for source, w in measured_convs(model, moments):
        second = moments[source]
        channels = second.shape[0] - 1
        mean = second[:channels, -1]
        cov = second[:channels, :channels] - np.outer(mean, mean)
        taps = w.reshape(w.shape[0], channels, -1).transpose(2, 0, 1)  # [taps, O, C]
        gram = np.einsum("toc,tod->cd", taps, taps)
        output_variance = float(np.einsum("toc,cd,tod->", taps, cov, taps)) or 1.0
        q_of[source] = q_of.get(source, 0.0) + gram / output_variance
    models = {}
    for source, q in q_of.items():
        second = moments[source]
        channels = second.shape[0] - 1
        mean = second[:channels, -1]
        cov = second[:channels, :channels] - np.outer(mean, mean)
        cov = cov + np.eye(channels) * ridge * max(float(np.mean(np.diag(cov))), 1e-12)
        models[source] = _TensorError(np.linalg.inv(cov), q)
    return models


class ErrorGreedy:
    """Greedy channel selection by predicted reconstruction error (see `select`)."""

    def __init__(self, groups: list[ChannelGroup], analysis: ChannelAnalysis, errors: dict[str, _TensorError],
                 sites: list[ConvSite], rules: SelectionRules) -> None:
        self.candidates = candidate_groups(groups, rules)
        self.errors, self.sites, self.rules = errors, sites, rules
        self.positions: dict[str, dict[int, np.ndarray]] = {}
        for name in errors:
            by_root: dict[int, list[int]] = defaultdict(list)
            for position, root in enumerate(analysis.tensor_roots(name).tolist()):
                by_root[root].append(position)
            self.positions[name] = {root: np.asarray(p) for root, p in by_root.items()}
        self.group_tensors = {
            g.id: [t for t in errors if any(root in self.positions[t] for root in g.classes)] for g in self.candidates
        }

    def chunk(self, gid: int, pool: list[int], size: int,
              errors: dict[str, _TensorError] | None = None) -> tuple[float, list[int]]:
        """The `size` classes of `pool` to remove next (one by one, least added error first) and their error."""
        errors = errors or self.errors
        states = {t: errors[t].clone() for t in self.group_tensors[gid]}
        pool = list(pool)
        chosen, cost = [], 0.0
        for _ in range(size):
            total = np.zeros(len(pool))
            for name, state in states.items():
                present = self.positions[name]
                by_width: dict[int, list[int]] = defaultdict(list)
                for index, root in enumerate(pool):
                    if root in present:
                        by_width[len(present[root])].append(index)
                for indices in by_width.values():
                    total[indices] += state.delta(np.stack([present[pool[i]] for i in indices]))
            best = int(np.argmin(total))
            cost += float(total[best])
            root = pool.pop(best)
            chosen.append(root)
            for name, state in states.items():
                if root in self.positions[name]:
                    state.remove(self.positions[name][root])
        return cost, chosen

    def select(self, *, target: str, amount: float, weights: dict[int, float] | None = None) -> set[int]:
        """Remove chunks of round_to channels, cheapest (weighted) predicted error per MAC (or per channel)
        first, until `amount` of the MACs (target "macs") or of the candidate channels ("ratio") are gone.

        Each step scores every candidate group's next chunk and removes the best one; only groups that
        share a feature map with the last removed chunk are rescored. `weights` scale a group's predicted
        error (measured end-to-end sensitivity).
        """
        rules, sites = self.rules, self.sites
        errors = {name: model.clone() for name, model in self.errors.items()}
        tensor_groups: dict[str, list[int]] = defaultdict(list)
        for gid, names in self.group_tensors.items():
            for name in names:
                tensor_groups[name].append(gid)
        base_macs = macs_after(sites, np.zeros(0, dtype=np.int64))
        total_classes = sum(g.size for g in self.candidates) or 1
        remaining = {g.id: list(g.classes) for g in self.candidates}
        by_id = {g.id: g for g in self.candidates}
        removed: list[int] = []
        cache: dict[int, tuple[float, list[int]] | None] = {}
        current, current_removed = 0.0, np.zeros(0, dtype=np.int64)
        while current < amount:
            best_gid, best_priority, best_chunk = None, np.inf, None
            macs_now = macs_after(sites, current_removed)
            for gid in remaining:
                if gid not in cache:
                    kept = len(remaining[gid])
                    size = kept % rules.round_to or rules.round_to
                    floor = max(rules.min_channels, 1, int(np.ceil(len(by_id[gid].classes) * (1.0 - rules.max_fraction))))
                    cache[gid] = None if kept - size < floor else self.chunk(gid, remaining[gid], size, errors)
                entry = cache[gid]
                if entry is None:
                    continue
                cost, chunk = entry
                if target == "macs":
                    trial = np.concatenate([current_removed, np.asarray(chunk, dtype=np.int64)])
                    gain = (macs_now - macs_after(sites, trial)) / base_macs
                else:
                    gain = len(chunk) / total_classes
                priority = cost * (weights or {}).get(gid, 1.0) / max(gain, 1e-12)
                if priority < best_priority:
                    best_gid, best_priority, best_chunk = gid, priority, chunk
            if best_gid is None:
                raise PassError(
                    f"prune cannot remove {amount:.0%} of the {'MACs' if target == 'macs' else 'prunable channels'}: "
                    f"it stopped at {current:.1%} with round_to={rules.round_to}, min_channels={rules.min_channels} "
                    "and the exclusions given; lower the target or relax them."
                )
            removed += best_chunk
            current_removed = np.asarray(removed, dtype=np.int64)
            for root in best_chunk:
                remaining[best_gid].remove(root)
            for name in self.group_tensors[best_gid]:
                gone = [self.positions[name][r] for r in best_chunk if r in self.positions[name]]
                if gone:
                    errors[name].remove(np.concatenate(gone))
                for gid in tensor_groups[name]:
                    cache.pop(gid, None)
            cache.pop(best_gid, None)
            if target == "macs":
                current = 1.0 - macs_after(sites, current_removed) / base_macs
            else:
                current = len(removed) / total_classes
        return set(removed)
