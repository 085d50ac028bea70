"""Compile conv2d in NHWC: Relax ConvertLayout + FoldConstant, then count the layout transforms left.

ConvertLayout rewrites every conv2d to NHWC data / OHWI weights and propagates the layout through
layout-agnostic ops; transposes (permute_dims / layout_transform) remain where an op cannot take
NHWC. FoldConstant then folds the transposes of constant weights away. Numerically equal to NCHW
within float rounding (same arithmetic, other summation order).
"""

from __future__ import annotations

from collections import Counter

LAYOUT_OPS = ("relax.permute_dims", "relax.layout_transform")


def op_counts(mod, function: str = "main") -> Counter:
    """How many calls of each Relax operator `function` binds (dataflow and plain blocks)."""
    from tvm import relax

    counts: Counter = Counter()
    body = mod[function].body
    for block in body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, type(relax.op.add(
                    relax.const(0.0), relax.const(0.0)).op)):
                counts[value.op.name] += 1
    return counts


def layout_transform_count(mod) -> int:
    counts = op_counts(mod)
    return sum(counts[name] for name in LAYOUT_OPS)


def convert_to_nhwc(mod):
    """(NHWC module, stats): conv2d count, conv2d in NHWC, layout transforms before and after."""
    import tvm
    from tvm import relax

    before = layout_transform_count(mod)
    converted = tvm.transform.Sequential([
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(),
    ])(mod)
    convs = _conv_layouts(converted)
    stats = {
        "conv2d": len(convs),
        "conv2d_nhwc": sum(1 for layout in convs if layout == "NHWC"),
        "layout_transforms_before": before,
        "layout_transforms_after": layout_transform_count(converted),
    }
    return converted, stats


def _conv_layouts(mod) -> list[str]:
    from tvm import relax

    layouts = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") in ("relax.nn.conv2d",):
                layouts.append(str(value.attrs.data_layout))
    return layouts
