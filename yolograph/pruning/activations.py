"""Activations of a model on calibration images, as the statistics pruning and reconstruction need.

- `collect_moments`: E[[x;1][x;1]^T] of each named feature map over all images and positions, from
  one run of the unpruned model (what importance, the error model and local reconstruction read).
- `LevelRunner`: runs a model one segment at a time, keeping only the frontier tensors, so sequential
  reconstruction can refit a level of convs and then run on from the refit weights.
- `accumulate_cross`: E[x z'^T] and E[z' z'^T] between an unpruned and a pruned model's activations.

Statistics use at most MAX_POSITIONS strided positions per image and feature map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from yolograph.ir.model import Model
from yolograph.progress import track
from yolograph.runtime import PASS_THREADS, OrtOptions, OrtRunner


def runner_with_outputs(model: Model, names: Sequence[str], threads: int = PASS_THREADS) -> OrtRunner:
    """An ORT session of `model` that also returns the tensors `names`."""
    proto = model.to_onnx()
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return OrtRunner(proto.SerializeToString(), OrtOptions(threads=threads))


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


def collect_moments(model: Model, names: Sequence[str], images: Iterable[np.ndarray],
                    threads: int = PASS_THREADS) -> dict[str, np.ndarray]:
    """E[[x;1][x;1]^T] over all positions and images for each NCHW tensor in `names` ((C+1)^2 each)."""
    names = list(dict.fromkeys(names))
    runner = runner_with_outputs(model, names, threads)
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


class LevelRunner:
    """Runs a model over fixed images one segment at a time, keeping only the frontier tensors.

    `run_until(targets)` executes just the nodes still needed for `targets` (cut at tensors computed
    earlier, which are cached per image), returns the targets per image, and caches every tensor later
    nodes still read. Weights may change between calls: each segment is built from the current graph.
    """

    def __init__(self, model: Model, images: Sequence[np.ndarray], threads: int = PASS_THREADS) -> None:
        self.model, self.threads = model, threads
        input_name = model.graph.inputs[0].name
        self.cache: list[dict[str, np.ndarray]] = [{input_name: image} for image in images]
        self.done: set[str] = set()

    def run_until(self, targets: Sequence[str]) -> list[dict[str, np.ndarray]]:
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
            runner = OrtRunner(proto.SerializeToString(), OrtOptions(threads=self.threads))
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
