"""TVM Relax: absorb the Transpose->Conv/MaxPool->Transpose wrapping of a `to-nhwc` model.

An NHWC ONNX model imports into Relax as NHWC elementwise ops with every conv2d / max_pool2d /
resize2d between permute_dims. `absorb_nhwc_wraps` makes those ops native NHWC:

1. relax ConvertLayout turns conv2d to NHWC/OHWI (it propagates through permute_dims by
   rewriting their axes, which leaves inverse pairs and identity permutes behind);
2. max_pool2d / avg_pool2d / resize2d reading a permute_dims(x, NHWC->NCHW) run on x in NHWC
   and the permute moves after them (ConvertLayout cannot be asked for pool layouts);
3. consecutive permute_dims compose, identity ones disappear, ones that move only length-1 axes
   become reshapes; FoldConstant folds weight layouts.

What is left are the permutes at the model's I/O (the YOLO output keeps its [1, 84, 8400] layout).
Only TVM is needed; import it lazily.
"""

from __future__ import annotations

from collections import Counter

NHWC_TO_NCHW = [0, 3, 1, 2]
LAYOUT_OPS = ("relax.permute_dims", "relax.layout_transform")
_FOLLOW_INPUT_LAYOUT = ("relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.image.resize2d")


def layout_census(mod, function: str = "main") -> Counter:
    """Counts of conv2d/pool/resize per layout and of layout ops (permute_dims, layout_transform)."""
    import tvm
    from tvm import relax

    counts: Counter = Counter()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            name = expr.op.name
            if name in LAYOUT_OPS:
                counts[name] += 1
            elif name == "relax.nn.conv2d":
                counts[f"conv2d:{expr.attrs.data_layout}"] += 1
            elif name in _FOLLOW_INPUT_LAYOUT:
                counts[f"{name.split('.')[-1]}:{expr.attrs.layout}"] += 1

    relax.analysis.post_order_visit(mod[function].body, visit)
    return counts


def absorb_nhwc_wraps(mod, function: str = "main", max_rounds: int = 8, kernel_layout: str = "OHWI"):
    """The module with conv2d (and pools/resizes fed by NHWC data) in NHWC and wrapping permutes removed."""
    import tvm
    from tvm import relax

    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", kernel_layout]})(mod)
    for _ in range(max_rounds):
        before = layout_census(mod, function)
        func = mod[function]
        for op in _FOLLOW_INPUT_LAYOUT:
            func = _push_permute_through(func, op)
        func = _compose_permutes(func)
        mod[function] = func
        mod = tvm.transform.Sequential([
            relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(),
        ])(mod)
        if layout_census(mod, function) == before:
            break
    return tvm.transform.Sequential([relax.transform.FoldConstant(), relax.transform.DeadCodeElimination()])(mod)


def _axes(call) -> list[int] | None:
    axes = call.attrs.axes
    return None if axes is None else [int(a) for a in axes]


def _push_permute_through(func, op_name: str):
    """op(permute_dims(x, NHWC->NCHW)) in NCHW -> permute_dims(op(x) in NHWC, NHWC->NCHW)."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    data = wildcard()
    permute = is_op("relax.permute_dims")(data)
    pattern = is_op(op_name)(permute, wildcard()) if op_name == "relax.image.resize2d" else is_op(op_name)(permute)

    def rewriter(call, matches):
        inner = matches[permute]
        if _axes(inner) != NHWC_TO_NCHW or call.attrs.layout != "NCHW":
            return call
        x = matches[data]
        attrs = call.attrs
        if op_name == "relax.image.resize2d":
            new = relax.op.image.resize2d(
                x, call.args[1], roi=[float(v) for v in attrs.roi], layout="NHWC", method=attrs.method,
                coordinate_transformation_mode=attrs.coordinate_transformation_mode,
                rounding_method=attrs.rounding_method, cubic_alpha=float(attrs.cubic_alpha),
                cubic_exclude=int(attrs.cubic_exclude), extrapolation_value=float(attrs.extrapolation_value),
                out_dtype=attrs.out_dtype if str(attrs.out_dtype) else None)
        else:
            pool = relax.op.nn.max_pool2d if op_name == "relax.nn.max_pool2d" else relax.op.nn.avg_pool2d
            new = pool(x, pool_size=[int(v) for v in attrs.pool_size], strides=[int(v) for v in attrs.strides],
                       padding=[int(v) for v in attrs.padding], dilation=[int(v) for v in attrs.dilation],
                       ceil_mode=bool(attrs.ceil_mode), count_include_pad=bool(attrs.count_include_pad),
                       layout="NHWC", out_layout="NHWC")
        return relax.op.permute_dims(new, NHWC_TO_NCHW)

    return rewrite_call(pattern, rewriter, func)


def _compose_permutes(func):
    """permute_dims(permute_dims(x, a), b) -> one permute (or x); identity permutes -> x."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    data = wildcard()
    single = is_op("relax.permute_dims")(data)

    def drop_identity(call, matches):
        axes = _axes(call)
        if axes is None:
            return call
        if axes == sorted(axes):
            return matches[data]
        shape = [int(d) for d in matches[data].ty.shape.values]
        moved = [axis for axis in axes if shape[axis] != 1]
        if moved == sorted(moved):  # only length-1 axes move: a reshape, no data movement
            return relax.op.reshape(matches[data], [shape[axis] for axis in axes])
        return call

    func = rewrite_call(single, drop_identity, func)
    inner = is_op("relax.permute_dims")(data)
    outer = is_op("relax.permute_dims")(inner)

    def compose(call, matches):
        first, second = _axes(matches[inner]), _axes(call)
        if first is None or second is None:
            return call
        combined = [first[axis] for axis in second]
        if combined == sorted(combined):
            return matches[data]
        return relax.op.permute_dims(matches[data], combined)

    return rewrite_call(outer, compose, func)
