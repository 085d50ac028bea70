"""What changed between two models: nodes by op added/removed, params, MACs."""

from __future__ import annotations

from typing import Any

from yolograph.inspection.summary import summarize
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
    }


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
    if diff["inputs"]["before"] != diff["inputs"]["after"]:
        lines.append(f"inputs  {diff['inputs']['before']} -> {diff['inputs']['after']}")
    return "\n".join(lines)
