"""Compile conv2d in NHWC and count the layout transforms left.

Uses yolograph.backends.tvm.relax_absorb (the Relax side of the to-nhwc pass): relax ConvertLayout puts
every conv2d in NHWC/HWIO, pools/resizes fed by NHWC data follow, consecutive permute_dims
compose or cancel, and FoldConstant folds the weight layouts. On an NCHW model this converts the
convs and leaves transposes at the boundaries; on a to-nhwc model it removes the
Transpose->Conv->Transpose wrapping, leaving only the permutes at the model's I/O.
Numerically equal to NCHW within float rounding (same arithmetic, other memory order).
"""

from __future__ import annotations

from collections import Counter

LAYOUT_OPS = ("relax.permute_dims", "relax.layout_transform")
# Weights as [kh, kw, in, out]: output channels contiguous, the vector axis of the CPU conv schedule
# (backends/tvm/cpu_schedules.py). The permute is folded into the constant at compile time.
KERNEL_LAYOUT = "HWIO"


def layout_transform_count(census: Counter) -> int:
    return sum(census[name] for name in LAYOUT_OPS)


def fold_constant_permutes(mod):
    """permute_dims(constant) -> the transposed constant, in numpy.

    Relax FoldConstant would JIT-build one kernel per weight transpose (about 1 s each on a busy
    2-core machine: ~70 s for yolov8n); transposing the weights here takes milliseconds.
    """
    from tvm import relax
    from tvm.ir.expr import GenericConst
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class PermuteFolder(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", "") == "relax.permute_dims" and isinstance(call.args[0], GenericConst):
                value = call.args[0].value.numpy()
                axes = call.attrs.axes
                order = [int(a) for a in axes] if axes is not None else list(range(value.ndim))[::-1]
                return relax.const(value.transpose(order).copy())
            return call

    folder = PermuteFolder(mod)
    main = mod.get_global_var("main")
    folder.builder_.update_func(main, folder.visit_expr(mod["main"]))
    return folder.builder_.get()


def convert_to_nhwc(mod):
    """(NHWC module, stats): conv2d count, conv2d in NHWC, layout transforms before and after."""
    import tvm
    from tvm import relax

    from yolograph.backends.tvm.relax_absorb import absorb_nhwc_wraps, layout_census

    before = layout_census(mod)
    # ConvertLayout first so the OIHW->OHWI weight permutes can be folded in numpy; absorb_nhwc_wraps
    # then finds the convs already in NHWC and only moves pools/resizes and cancels permutes.
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", KERNEL_LAYOUT]})(mod)
    mod = tvm.transform.Sequential([relax.transform.CanonicalizeBindings()])(fold_constant_permutes(mod))
    converted = absorb_nhwc_wraps(mod, kernel_layout=KERNEL_LAYOUT)
    after = layout_census(converted)
    convs = sum(count for key, count in after.items() if key.startswith("conv2d:"))
    stats = {
        "conv2d": convs,
        "conv2d_nhwc": after.get("conv2d:NHWC", 0),
        "layout_transforms_before": layout_transform_count(before),
        "layout_transforms_after": layout_transform_count(after),
        "census_after": dict(after),
    }
    return converted, stats
