"""Greedy channel selection by predicted reconstruction error (the activation criterion, global scope).

`error_models` turns calibration moments into a `TensorError` per feature map read by ordinary convs:
the predicted relative output error of its consumers, after least-squares reconstruction, of removing
any set of its channels (correlations between channels included). `ErrorGreedy` removes round_to-sized
chunks, each time the one with the least predicted error per MAC (or channel) saved.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from yolograph.analysis.channel_groups import ChannelAnalysis, ChannelGroup
from yolograph.ir.model import Model
from yolograph.pruning.errors import TargetUnreachable
from yolograph.pruning.importance import Moments, measured_convs
from yolograph.pruning.selection import (
    ConvSite,
    SelectionRules,
    candidate_groups,
    macs_after,
)


class TensorError:
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

    def clone(self) -> TensorError:
        twin = TensorError(self.precision, self.q)
        twin.removed, twin.inverse = list(self.removed), self.inverse
        return twin


def error_models(model: Model, analysis: ChannelAnalysis, moments: Moments, ridge: float) -> dict[str, TensorError]:
    """A TensorError per feature map read by ordinary convs, from calibration moments."""
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
        models[source] = TensorError(np.linalg.inv(cov), q)
    return models


class ErrorGreedy:
    """Greedy channel selection by predicted reconstruction error (see `select`)."""

    def __init__(self, groups: list[ChannelGroup], analysis: ChannelAnalysis, errors: dict[str, TensorError],
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
              errors: dict[str, TensorError] | None = None) -> tuple[float, list[int]]:
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
                raise TargetUnreachable(target, amount, current)
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
