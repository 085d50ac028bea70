"""What changed between two models: nodes by op added/removed, params, MACs, conv widths (pruning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolograph.inspection.summary import summarize
from yolograph.ir.graph_view import producer
from yolograph.ir.model import Model


def diff_models(before: Model, after: Model) -> dict[str, Any]:
    a, b = summarize(before), summarize(after)
    ops = sorted(set(a["ops"]) | set(b["ops"]))
    op_changes = {
        op: b["ops"].get(op, 0) - a["ops"].get(op, 0) for op in ops if a["ops"].get(op, 0) != b["ops"].get(op, 0)
    }
    names_a = {n.name for n in before.graph.nodes}
    names_b = {n.name for n in after.graph.nodes}
    return {
        "nodes": {"before": a["nodes"], "after": b["nodes"]},
        "params": {"before": a["params"], "after": b["params"], "delta": b["params"] - a["params"]},
        "macs": {"before": a["macs"], "after": b["macs"], "delta": b["macs"] - a["macs"]},
        "ops": op_changes,
        "removed_nodes": sorted(names_a - names_b),
        "added_nodes": sorted(names_b - names_a),
        "inputs": {"before": a["inputs"], "after": b["inputs"]},
        "outputs": {"before": a["outputs"], "after": b["outputs"]},
        "conv_channels": conv_channel_changes(before, after),
    }


def conv_out_channels(model: Model) -> dict[str, int]:
    """Output channels of every Conv whose weight shape is known, in graph order (through a weight
    DequantizeLinear, so a quantized model reads like its float source)."""
    widths = {}
    for node in model.nodes_by_op("Conv"):
        weight = node.inputs[1]
        source = producer(weight)
        if source is not None and source.op == "DequantizeLinear":
            weight = source.inputs[0]
        if weight.shape:
            widths[node.name] = int(weight.shape[0])
    return widths


def conv_channel_changes(before: Model, after: Model) -> dict[str, list[int]]:
    """Conv name -> [output channels before, after] for the convs of both models, in `before`'s order
    (what structured pruning removed, layer by layer)."""
    widths = conv_out_channels(after)
    return {name: [width, widths[name]] for name, width in conv_out_channels(before).items() if name in widths}


def format_diff(diff: dict[str, Any], max_names: int = 12) -> str:
    def delta(key: str) -> str:
        d = diff[key]
        ratio = f" ({d['after'] / d['before']:.3f}x)" if d["before"] else ""
        return f"{d['before']:,} -> {d['after']:,}{ratio}"

    lines = [
        f"nodes   {diff['nodes']['before']} -> {diff['nodes']['after']}",
        f"params  {delta('params')}",
        f"MACs    {delta('macs')}",
    ]
    if diff["ops"]:
        lines.append("ops     " + ", ".join(f"{op} {n:+d}" for op, n in diff["ops"].items()))
    else:
        lines.append("ops     unchanged")
    for key, sign in (("removed_nodes", "-"), ("added_nodes", "+")):
        names = diff[key]
        shown = ", ".join(names[:max_names]) + (f", ... ({len(names) - max_names} more)" if len(names) > max_names else "")
        if names:
            lines.append(f"{sign}nodes  {shown}")
    narrower = {n: w for n, w in diff.get("conv_channels", {}).items() if w[0] != w[1]}
    if narrower:
        shown = ", ".join(f"{n} {a}->{b}" for n, (a, b) in list(narrower.items())[:max_names])
        more = f", ... ({len(narrower) - max_names} more)" if len(narrower) > max_names else ""
        lines.append(f"widths  {len(narrower)} of {len(diff['conv_channels'])} convs changed: {shown}{more}")
    if diff["inputs"]["before"] != diff["inputs"]["after"]:
        lines.append(f"inputs  {diff['inputs']['before']} -> {diff['inputs']['after']}")
    return "\n".join(lines)


def write_channel_plot(diff: dict[str, Any], path: str | Path) -> Path:
    """Kept and removed output channels of every conv (graph order) as stacked bars, written as PNG."""
    from yolograph.inspection.plot import new_figure, save_png

    widths = diff["conv_channels"]
    names = list(widths)
    kept = [after for _, after in widths.values()]
    removed = [max(before - after, 0) for before, after in widths.values()]
    fig, ax = new_figure(len(names))
    x = range(len(names))
    ax.bar(x, kept, 0.8, label="kept")
    ax.bar(x, removed, 0.8, bottom=kept, label="removed", color="tab:red")
    ax.set_xticks(list(x), [n.replace("/conv/Conv", "").replace("/Conv", "") for n in names], rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    total_before = sum(before for before, _ in widths.values())
    ax.set_title(f"Conv output channels: {sum(removed)} of {total_before} removed; "
                 f"MACs {diff['macs']['before'] / 1e9:.2f} G -> {diff['macs']['after'] / 1e9:.2f} G")
    ax.legend(fontsize=7)
    return save_png(fig, path)
