"""What a model is: op histogram, parameters, MACs, inputs/outputs and YOLO facts."""

from __future__ import annotations

from typing import Any

from yolograph.ir.cost import model_cost
from yolograph.ir.model import Model


def summarize(model: Model) -> dict[str, Any]:
    """The inspect summary as JSON-ready data (keys documented in the README)."""
    cost = model_cost(model)
    return {
        "source": model.source,
        "opset": model.opset,
        "nodes": len(model.graph.nodes),
        "params": cost.params,
        "macs": cost.macs,
        "gmacs": round(cost.gmacs, 4),
        "ops": model.op_histogram(),
        "inputs": [_io(t) for t in model.inputs],
        "outputs": [_io(t) for t in model.outputs],
        "yolo": model.facts.summary(),
    }


def _io(info) -> dict[str, Any]:
    return {"name": info.name, "shape": list(info.shape), "dtype": info.dtype.name}


def format_summary(summary: dict[str, Any]) -> str:
    yolo = summary["yolo"]
    lines = [
        f"model    {summary['source'] or 'in-memory'} (opset {summary['opset']})",
        f"nodes    {summary['nodes']}",
        f"params   {summary['params']:,}",
        f"MACs     {summary['macs']:,} ({summary['gmacs']:.2f} G)",
    ]
    for key in ("inputs", "outputs"):
        for tensor in summary[key]:
            lines.append(f"{key[:-1]:<8} {tensor['name']}: {tensor['dtype']}[{','.join(map(str, tensor['shape']))}]")
    if yolo["num_classes"]:
        keypoints = f" keypoints={'x'.join(map(str, yolo['keypoint_shape']))}" if yolo.get("keypoint_shape") else ""
        lines.append(
            f"yolo     task={yolo['task']} classes={yolo['num_classes']}{keypoints} stride={yolo['stride']} "
            f"imgsz={yolo['imgsz']} reg_max={yolo['reg_max']} head={yolo['head_nodes']} nodes "
            f"(decode {yolo['decode_nodes']} stay float)"
        )
        branches = ", ".join(f"{b['role']} {b['channels']}ch x{b['nodes']}" for b in yolo.get("branches", []))
        if branches:
            lines.append(f"head     {branches}")
        for group in yolo.get("output_groups", []):
            rows = group["rows"]
            where = "all" if rows is None else (
                f"rows {rows[0]}:{rows[1]}" if rows[1] - rows[0] == rows[2] else f"{rows[2]} rows in {rows[0]}:{rows[1]}")
            lines.append(f"group    {group['output']} {group['role']} ({group['kind']}): {where}")
    ops = ", ".join(f"{op} {count}" for op, count in summary["ops"].items())
    lines.append(f"ops      {ops}")
    return "\n".join(lines)
