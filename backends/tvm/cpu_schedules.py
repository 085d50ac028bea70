"""Analytic CPU schedules: fast kernels with no tuning, and the space the quick tuner searches.

TVM 0.27's wheel has no x86 schedules (no TOPI x86, no DNNL/BLAS), so an untuned CPU kernel is a
naive loop nest and MetaSchedule needs many trials per kernel to find a good one. These rules
write the schedule a CPU conv library would use, as dlight-style `ScheduleRule`s applied to every
kernel that has no tuning record:

- `Conv2dNHWC`: a direct NHWC convolution with HWIO weights (the backend's CPU layout). Output
  channels are the vector lanes, a block of `tile.width` output pixels x `tile.vectors` vectors of
  channels stays in registers for the whole reduction (`cache_write` to local), the input pixel
  is broadcast, the weights are read contiguously, and the fused epilogue (bias, SiLU, residual
  Add) runs on the register block before it is stored. Rows are split between the cores.
- `ParallelFallback`: every other kernel (pools, concat, resize, the head's decode): intermediate
  blocks inlined, the outer data-parallel loops split between the cores, the innermost vectorized
  when it divides the vector width.

Both compute the same function as the naive loops; results differ at float-rounding level only
(a schedule reorders loops, so sums are reassociated, as in any vectorized kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

# Accumulator registers a tile may use: 32 vector registers on AVX-512, 16 on AVX2/NEON, leaving
# room for the weight vectors and the broadcast input.
_ACCUMULATORS = {16: 20, 8: 12, 4: 12}


@dataclass(frozen=True)
class ConvTile:
    """The register block of the direct convolution: `width` output pixels x `vectors` channel vectors."""

    width: int
    vectors: int
    lanes: int

    @property
    def channels(self) -> int:
        return self.vectors * self.lanes


def vector_lanes(target) -> int:
    """float32 lanes of the target's widest vector unit (16 AVX-512, 8 AVX2, 4 NEON/SSE)."""
    from tvm.target import codegen

    if codegen.target_has_features("avx512f", target):
        return 16
    if codegen.target_has_features("avx2", target) or codegen.target_has_features("avx", target):
        return 8
    return max(4, int(codegen.llvm_get_vector_width(target)) // 32)


def conv_tiles(width: int, out_channels: int, lanes: int) -> list[ConvTile]:
    """Register blocks that divide the output evenly and fit the register file, best guess first.

    The first is the default: the most accumulators (reuse of each loaded weight vector and input
    scalar), ties broken towards more channel vectors (contiguous weight loads). Channel counts
    that are not a multiple of the full vector width (pruned models keep multiples of 8) use
    half- or quarter-width vectors, down to 4 lanes; the register budget is the full width's.
    """
    budget = _ACCUMULATORS.get(lanes, 12)
    for width_lanes in (lanes, lanes // 2, lanes // 4):
        if width_lanes < 4 or out_channels % width_lanes:
            continue
        tiles = [
            ConvTile(w, v, width_lanes)
            for v in range(1, 7) if out_channels % (v * width_lanes) == 0
            for w in range(1, 17) if width % w == 0 and w * v <= budget
        ]
        return sorted(tiles, key=lambda t: (-t.width * t.vectors, -t.vectors))
    return []


# -- the conv rule ----------------------------------------------------------------------------------


def _iter_types(sch, block) -> str:
    from tvm import tirx

    return "".join("R" if iv.iter_type == tirx.IterVar.CommReduce else "S" for iv in sch.get(block).iter_vars)


def _is_output(sch, block, root) -> bool:
    return any(sch.get(block).same_as(sch.get(out)) for out in sch.get_output_blocks(root))


def _inline_intermediates(sch, root, keep) -> None:
    """compute_inline every non-output block except `keep`, as long as one can be inlined."""
    from tvm.s_tir.schedule import ScheduleError

    changed = True
    while changed:
        changed = False
        for block in sch.get_child_blocks(root):
            if any(sch.get(block).same_as(sch.get(k)) for k in keep) or _is_output(sch, block, root):
                continue
            try:
                sch.compute_inline(block)
                changed = True
            except ScheduleError:
                continue


def nhwc_conv_block(sch):
    """(root, conv block) when the function is one NHWC/HWIO conv2d plus elementwise ops, else None."""
    root = sch.get_sblock("root")
    reductions = [b for b in sch.get_child_blocks(root) if "R" in _iter_types(sch, b)]
    if len(reductions) != 1:
        return None
    conv = reductions[0]
    stmt = sch.get(conv)
    if not stmt.name_hint.startswith("conv2d_nhwc") or _iter_types(sch, conv) != "SSSSRRR":
        return None
    reads = [r.source for r in stmt.reads]
    if len(reads) != 2 or any(len(b.shape) != 4 for b in reads):
        return None
    # HWIO: weight[ry, rx, rc, ff] (ff, the output channel, contiguous); a grouped conv reads otherwise.
    starts = [axis.min for axis in stmt.reads[1].region]
    variables = [iv.var for iv in stmt.iter_vars]
    if not all(starts[axis].same_as(variables[var]) for axis, var in enumerate((4, 5, 6, 3))):
        return None
    return root, conv


def conv_output_size(sch, conv) -> tuple[int, int]:
    """(output width, output channels) of the conv block: the axes the register tile divides."""
    loops = sch.get_loops(conv)
    return int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)


def analytic_schedules(func, target, tiles_per_conv: int, fallback: bool = True) -> list:
    """What the tuner measures for a kernel: the conv rule with its first tiles, else (if `fallback`) the fallback."""
    tiles = candidate_tiles(func, target)[:tiles_per_conv]
    if tiles:
        return [schedule_conv2d_nhwc(func, target, tile) for tile in tiles]
    scheduled = schedule_parallel(func, target) if fallback else None
    return [scheduled] if scheduled is not None else []


def candidate_tiles(func, target) -> list[ConvTile]:
    """The register tiles the conv rule can use for `func`, best guess first ([] if it is not a conv kernel)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    found = nhwc_conv_block(sch)
    if found is None:
        from yolograph.backends.tvm import bf16_conv  # the AVX512_BF16 conv of --precision bf16, if it is one

        return bf16_conv.candidate_tiles(func, target)
    return conv_tiles(*conv_output_size(sch, found[1]), vector_lanes(target))


def schedule_conv2d_nhwc(func, target, tile: ConvTile | None = None):
    """The direct-convolution schedule of `func`, or None when it is not an NHWC/HWIO conv2d kernel.

    `tile` None: the first of `candidate_tiles` (what an untuned compile uses); the tuner measures others.
    """
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    found = nhwc_conv_block(sch)
    if found is None:
        from yolograph.backends.tvm import bf16_conv  # the AVX512_BF16 conv of --precision bf16, if it is one

        return bf16_conv.schedule_conv2d_bf16(func, target, tile)
    root, conv = found
    width, channels = conv_output_size(sch, conv)
    if tile is None:
        tiles = conv_tiles(width, channels, vector_lanes(target))
        if not tiles:
            return None  # output channels not a multiple of 4 lanes: the fallback handles it
        tile = tiles[0]
    elif width % tile.width or channels % tile.channels:
        return None
    n, h, w, co, rh, rw, rc = sch.get_loops(conv)
    # Padding inlined (bounds checks on the broadcast input loads) measured 4% faster over yolov8n's
    # convs than a separate parallel padding pass.
    _inline_intermediates(sch, root, keep=[conv])  # padding and the epilogue chain
    epilogue = [b for b in sch.get_child_blocks(root) if not sch.get(b).same_as(sch.get(conv))]
    w_outer, w_inner = sch.split(w, [None, tile.width])
    # One loop per vector register, unrolled: LLVM splits a single 80-lane vector badly (12 GFLOP/s).
    co_outer, co_vector, co_lane = sch.split(co, [None, tile.vectors, tile.lanes])
    accumulators = sch.cache_write(conv, 0, "local")
    sch.reorder(n, h, w_outer, co_outer, rh, rw, rc, w_inner, co_vector, co_lane)
    sch.reverse_compute_at(accumulators, co_outer)
    for block in epilogue:
        sch.reverse_compute_at(block, co_outer)
    # parallel and vectorize before decompose_reduction: both need the complete reduction block.
    sch.parallel(sch.fuse(n, h))
    sch.unroll(w_inner)
    sch.unroll(co_vector)
    sch.vectorize(co_lane)
    init = sch.decompose_reduction(conv, rh)
    for block in (init, accumulators, *epilogue):
        pixel, channel = sch.get_loops(block)[-2:]
        vector, lane = sch.split(channel, [None, tile.lanes])
        sch.unroll(pixel)
        sch.unroll(vector)
        sch.vectorize(lane)
    return sch


# -- the fallback -------------------------------------------------------------------------------------


def schedule_parallel(func, target):
    """Inline intermediates, parallelize the outer data-parallel loops, vectorize divisible inner loops."""
    from tvm import s_tir
    from tvm.s_tir.schedule import ScheduleError

    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    _inline_intermediates(sch, root, keep=[])
    lanes = vector_lanes(target)
    changed = False
    for block in sch.get_child_blocks(root):
        loops = sch.get_loops(block)
        kinds = _iter_types(sch, block)
        if len(loops) != len(kinds):
            continue
        spatial = len(kinds) - len(kinds.lstrip("S"))  # leading data-parallel loops
        try:
            if spatial == len(kinds) and len(loops) > 1 and int(sch.get(loops[-1]).extent) % lanes == 0:
                outer, inner = sch.split(loops[-1], [None, lanes])
                sch.vectorize(inner)
                sch.parallel(sch.fuse(*loops[:-1], outer))
                changed = True
            elif spatial:
                sch.parallel(sch.fuse(*loops[:spatial]) if spatial > 1 else loops[0])
                changed = True
        except ScheduleError:
            continue
    return sch if changed else None


def _rules():
    from tvm.s_tir.dlight.base import ScheduleRule

    class Conv2dNHWC(ScheduleRule):
        """Direct NHWC/HWIO convolution with a register-blocked, vectorized micro-kernel."""

        def apply(self, func, target, tunable):
            return schedule_conv2d_nhwc(func, target) if target.kind.name == "llvm" else None

    class ParallelFallback(ScheduleRule):
        """Multi-core, vectorized loops for every other CPU kernel."""

        def apply(self, func, target, tunable):
            return schedule_parallel(func, target) if target.kind.name == "llvm" else None

    return Conv2dNHWC(), ParallelFallback()


def apply_cpu_schedules(*first_rules):
    """The module pass that schedules every CPU kernel still unscheduled (after tuning records).

    `first_rules` are tried before these (the INT8 packed-conv rule of int8_schedules.py).
    """
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(*first_rules, *_rules())
