"""Post-training reconstruction of pruned convs by ridge least squares on calibration activations.

A consumer conv computes y = W * x. After pruning it sees only x' (its kept input channels, and
upstream pruning has perturbed those too). Reconstruction fits, per conv, a channel map
A = argmin E||x - A [x'; 1]||^2 + lam ||A - A0||^2 (A0 = plain slicing) and sets
W'[:, :, tap] = W[:, :, tap] @ A[:, :k] and b' = b + sum_tap W[:, :, tap] @ A[:, k]: every removed
channel is replaced by its best linear prediction from the kept ones, plus its mean (the intercept,
which is the "compensate the removed channels' mean into the bias" step). For 1x1 convs this is exactly
the output least-squares fit min E||W x - W' x' - b'||^2; for k x k convs it is the same fit with a
map shared by all taps (channel-level, so it needs only (C+1)^2 statistics, not im2col patches).

"local" uses the unpruned model's activations for both sides, from one run (`collect_moments`).
"sequential" (`LevelRunner`) runs the unpruned and the pruned model side by side, level by level, and
refits every conv so that its output computed from the *pruned* model's input (upstream convs already
refit) matches the unpruned output, which corrects error accumulated upstream. Statistics use at most
MAX_POSITIONS strided positions per image and feature map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx

from yolograph.ir.model import Model
from yolograph.progress import track


def _runner_with_outputs(model: Model, names: Sequence[str]):
    """An ORT session of `model` that also returns the tensors `names`."""
    from yolograph.runtime import OrtOptions, OrtRunner

    proto = model.to_onnx()
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return OrtRunner(proto.SerializeToString(), OrtOptions(threads=2))


# Statistics use at most this many (evenly strided) positions per image and feature map: high-resolution
# maps have 25k-100k positions, far more than a (C+1)^2 moment needs, and the grams dominate the cost.
MAX_POSITIONS = 1024


def _flat(array: np.ndarray) -> np.ndarray:
    """[1, C, H, W] -> [C, P] float32 with P <= MAX_POSITIONS evenly strided positions."""
    flat = array.reshape(array.shape[1], -1)
    step = -(-flat.shape[1] // MAX_POSITIONS)
    return np.ascontiguousarray(flat[:, ::step], dtype=np.float32)


def _augment(features: np.ndarray) -> np.ndarray:
    return np.vstack([features, np.ones((1, features.shape[1]), np.float32)])


def collect_moments(model: Model, names: Sequence[str], images: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """E[[x;1][x;1]^T] over all positions and images for each NCHW tensor in `names` ((C+1)^2 each)."""
    names = list(dict.fromkeys(names))
    runner = _runner_with_outputs(model, names)
    sums: dict[str, np.ndarray] = {}
    counts = 0
    for image in track(images, "prune: activation statistics"):
        outputs = runner.session.run(names, {runner.input_names[0]: image})
        for name, value in zip(names, outputs):
            z = _augment(_flat(value))
            gram = (z @ z.T).astype(np.float64)
            sums[name] = sums[name] + gram if name in sums else gram
        counts += 1
    if not counts:
        return {}
    return {name: total / total[-1, -1] for name, total in sums.items()}


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


# -- sequential (level by level) reconstruction ------------------------------------------------------


class LevelRunner:
    """Runs a model over fixed images one segment at a time, keeping only the frontier tensors.

    `run_until(targets)` executes just the nodes still needed for `targets` (cut at tensors computed
    earlier, which are cached per image), returns the targets per image, and caches every tensor later
    nodes still read. Weights may change between calls: each segment is built from the current graph.
    """

    def __init__(self, model: Model, images: Sequence[np.ndarray]) -> None:
        self.model = model
        input_name = model.graph.inputs[0].name
        self.cache: list[dict[str, np.ndarray]] = [{input_name: image} for image in images]
        self.done: set[str] = set()

    def run_until(self, targets: Sequence[str]) -> list[dict[str, np.ndarray]]:
        import networkx as nx

        view = self.model.nx_graph
        producers = {t.name: n.name for n in self.model.graph.nodes for t in n.outputs}
        wanted = [producers[t] for t in targets if t in producers and producers[t] not in self.done]
        pending = view.subgraph([n for n in view.nodes if n not in self.done])
        segment: set[str] = set()
        for node in wanted:
            if node not in segment:
                segment |= nx.ancestors(pending, node) | {node}
        if segment:
            self._run_segment(segment, targets)
        return [{t: cache[t] for t in targets} for cache in self.cache]

    def _run_segment(self, segment: set[str], targets: Sequence[str]) -> None:
        import onnx_graphsurgeon as gs

        from yolograph.runtime import OrtOptions, OrtRunner

        after = self.done | segment
        nodes = {n.name: n for n in self.model.graph.nodes}
        outputs = set(targets)
        for name in segment:
            for tensor in nodes[name].outputs:
                if any(c.name not in after for c in tensor.outputs) or tensor in self.model.graph.outputs:
                    outputs.add(tensor.name)
        graph = self.model.graph.copy()
        tensors = graph.tensors()
        available = [name for name in self.cache[0] if name in tensors]
        for name in available:
            tensors[name].inputs.clear()  # cut: this tensor now comes from the cache
        graph.inputs = [tensors[name] for name in available]
        for name in available:
            tensors[name].dtype = self.cache[0][name].dtype
            tensors[name].shape = list(self.cache[0][name].shape)
        fresh = [tensors[name] for name in sorted(outputs) if name in tensors and name not in self.cache[0]]
        for tensor in fresh:
            tensor.dtype = np.float32 if tensor.dtype is None else tensor.dtype
        graph.outputs = fresh
        graph.cleanup(remove_unused_graph_inputs=True)
        if fresh:
            proto = gs.export_onnx(graph, do_type_check=False)
            proto.ir_version = min(self.model.ir_version or 8, onnx.IR_VERSION)
            runner = OrtRunner(proto.SerializeToString(), OrtOptions(threads=2))
            feeds = [t.name for t in graph.inputs]
            names = [t.name for t in fresh]
            for cache in self.cache:
                values = runner.session.run(names, {f: cache[f] for f in feeds})
                cache.update(zip(names, values))
        self.done = after
        self._evict(nodes)

    def _evict(self, nodes: dict) -> None:
        """Drop cached tensors no pending node reads (graph inputs are kept)."""
        keep = {t.name for t in self.model.graph.inputs}
        for name, node in nodes.items():
            if name not in self.done:
                keep |= {t.name for t in node.inputs}
        for cache in self.cache:
            for name in [n for n in cache if n not in keep]:
                del cache[name]


def accumulate_cross(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                     name: str) -> tuple[np.ndarray, np.ndarray]:
    """(E[x z'^T], E[z' z'^T]) over all images and positions for tensor `name`."""
    cross = gram = None
    positions = 0
    for ref, cand in zip(reference, candidate):
        x, z = _flat(ref[name]), _augment(_flat(cand[name]))
        c, g = (x @ z.T).astype(np.float64), (z @ z.T).astype(np.float64)
        cross = c if cross is None else cross + c
        gram = g if gram is None else gram + g
        positions += x.shape[1]
    return cross / positions, gram / positions
