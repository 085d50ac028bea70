"""Vectorizable exponentials for CPU: sigmoid and softmax through TOPI's polynomial fast_exp.

LLVM has no vector `exp` on x86 without a vector math library, so every `exp` in a vectorized
TVM kernel becomes one `expf` libm call per lane: the SiLU epilogue of a yolov8n conv spends
more time in `expf` than in the convolution's FMAs. This Relax rewrite replaces
`R.sigmoid(x)` with 1 / (1 + fast_exp(-x)) and `R.nn.softmax` with `topi.nn.fast_softmax`;
fast_exp is a range reduction plus a degree-6 polynomial (Cephes), pure arithmetic that LLVM
vectorizes. Sigmoid and softmax (values in [0, 1]) stay within 1e-6 absolute of the exact
functions for inputs -90..90 (tested), far inside the backend's 1e-3 contract; the rewrite runs
only for CPU targets with fast math on (the default; -fast-math-reassoc=false turns it off).
"""

from __future__ import annotations


def fast_sigmoid(x):
    """TE: sigmoid through the polynomial exponential."""
    from tvm import te, topi

    exp_neg = topi.fast_exp(topi.negative(x))
    one = te.const(1.0, x.dtype)
    return te.compute(x.shape, lambda *i: one / (one + exp_neg(*i)), name="fast_sigmoid", tag="elemwise")


def rewrite_fast_exp(mod, function: str = "main"):
    """(module, count): sigmoid and softmax calls of `function` rewritten to their fast_exp forms."""
    from tvm import relax, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator

    counts = {"sigmoid": 0, "softmax": 0}

    @mutator
    class FastExp(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = getattr(call.op, "name", "")
            if name == "relax.sigmoid" and _is_float32(call.args[0]):
                counts["sigmoid"] += 1
                return self.builder_.call_te(fast_sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")
            if name == "relax.nn.softmax" and _is_float32(call.args[0]):
                counts["softmax"] += 1
                return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], axis=int(call.attrs.axis),
                                             primfunc_name_hint="fast_softmax")
            return call

    rewriter = FastExp(mod)
    gvar = mod.get_global_var(function)
    rewriter.builder_.update_func(gvar, rewriter.visit_expr(mod[function]))
    rewritten = relax.transform.DeadCodeElimination()(rewriter.builder_.get())
    return rewritten, counts


def _is_float32(expr) -> bool:
    return str(getattr(getattr(expr, "ty", None), "dtype", "")) == "float32"
