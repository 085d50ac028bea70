"""insert-qdq: place QuantizeLinear/DequantizeLinear pairs by a target profile's data-driven rules.

Profiles (yolograph.quantization.profiles): ``ort-cpu`` (U8 asymmetric activations, S8 per-channel
weights, Q/DQ around every quantizable op so ORT runs QLinear kernels), ``trt`` (TensorRT explicit
quantization: S8 symmetric activations, Q/DQ on Conv inputs, shared Concat scales, residual-Add rule,
data-movement ops in the quantized domain) and ``tvm`` (same as ort-cpu for now).

For ort-cpu, SiLU (Sigmoid+Mul) in the quantized region is first rewritten as com.microsoft
QuickGelu(alpha=1) = x*sigmoid(x), which ORT runs between the int8 convs faster than QLinearSigmoid +
QLinearMul (the rewrite itself is exact up to ORT's float sigmoid).

Head-aware by default: the head's Convs are quantized, the decode (DFL, box decode, score sigmoid,
keypoint decode, angle Cos/Sin, final Concat) stays float, and each output group of the task (box,
scores, mask coefficients, prototypes, keypoint x/y and visibility, angle, class probabilities) is
checked to get a range of its own or stay float (`placement.group_rules`; reported in the stats). Weights get per-channel symmetric scales now (they need no data); activation
scales are placeholders until `calibrate`, so the contract is deferred: the next checked pass
(calibrate) is compared against the model before this one. Sets metadata yolograph.qdq_uncalibrated=1.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolograph.errors import PassError
from yolograph.ir.model import Model
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.pipeline.properties import UNCALIBRATED_KEY
from yolograph.quantization.placement import Region, group_rules, plan_qdq
from yolograph.quantization.profiles import get_profile
from yolograph.quantization.qdq import PROFILE_KEY, insert_qdq, rewrite_silu


@dataclass(frozen=True)
class InsertQdqOptions:
    profile: str = "ort-cpu"
    head_aware: bool = True  # keep the Detect decode in float
    include: tuple[str, ...] = ()  # node-name patterns (fnmatch) to quantize even in the decode
    exclude: tuple[str, ...] = ()  # node-name patterns to keep float
    include_ops: tuple[str, ...] = ()
    exclude_ops: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()  # restrict to these op types (default: the profile's)
    head_outputs: bool = True  # quantize the head Convs' outputs (logits) too, so they run as QLinearConv


@register_pass("insert-qdq")
class InsertQdq(Pass):
    """Insert Q/DQ pairs by target profile rules (ort-cpu|trt|tvm); scales set later by calibrate."""

    Options = InsertQdqOptions
    contract = Contract.deferred("placeholder activation scales until calibrate")
    establishes = frozenset({"qdq"})

    def run(self, model: Model) -> PassResult:
        options = self.options
        profile = get_profile(options.profile)
        if any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.nodes):
            raise PassError("The model already has Q/DQ nodes; run insert-qdq on a float model.")
        region = Region(options.head_aware, options.include, options.exclude, options.include_ops, options.exclude_ops)
        fused_silu = 0
        if profile.silu_as and "Sigmoid" not in options.exclude_ops and (not options.ops or "Sigmoid" in options.ops):
            selected = {n.name for n in model.graph.nodes if region.selects(model, n)}
            fused_silu = rewrite_silu(model, profile.silu_as, selected)
            model.invalidate()
        plan = plan_qdq(model, profile, region, options.ops, options.head_outputs)
        if not plan.groups:
            raise PassError(
                f"insert-qdq found nothing to quantize with profile {profile.name!r} and the given include/exclude "
                "options; loosen exclude= or exclude_ops=."
            )
        rules = group_rules(model, plan) if options.head_aware else {}
        stats = insert_qdq(model, plan, profile)
        if rules:
            stats["output_groups"] = rules
        stats["silu_as_" + (profile.silu_as or "none")] = fused_silu
        model.graph.toposort()
        model.metadata[UNCALIBRATED_KEY] = "1"
        model.metadata[PROFILE_KEY] = profile.name
        return PassResult(changed=True, stats=stats)
