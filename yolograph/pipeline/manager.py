"""The pass manager: order checking, running, instrumentation, dumps and contract verification."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yolograph.errors import ContractViolation, PassError, PipelineError, YoloGraphError
from yolograph.ir import metadata
from yolograph.ir.cost import model_cost
from yolograph.ir.model import Model
from yolograph.pipeline import properties
from yolograph.pipeline.context import PassContext
from yolograph.pipeline.parse import parse_pipeline
from yolograph.pipeline.passes import Pass, PassResult
from yolograph.pipeline.verify import Feed, run_groups, verification_inputs


@dataclass(frozen=True)
class GraphCounts:
    nodes: int
    params: int
    macs: int

    @staticmethod
    def of(model: Model) -> GraphCounts:
        cost = model_cost(model)
        return GraphCounts(nodes=len(model.graph.nodes), params=cost.params, macs=cost.macs)


@dataclass
class PassRecord:
    """What one pass did, as the report and `--report OUT.json` show it."""

    step: int
    name: str
    spec: str
    contract: str
    changed: bool
    seconds: float
    before: GraphCounts
    after: GraphCounts
    stats: dict[str, Any] = field(default_factory=dict)
    verified: str | None = None  # None: not verified; else a short sentence

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineReport:
    records: list[PassRecord]
    input: GraphCounts
    output: GraphCounts

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    def to_json(self) -> dict[str, Any]:
        return {
            "passes": [r.to_json() for r in self.records],
            "input": asdict(self.input),
            "output": asdict(self.output),
            "seconds": self.seconds,
        }

    def table(self) -> str:
        lines = [f"{'#':>2}  {'pass':<34} {'time':>7}  {'nodes':>11}  {'params':>19}  {'GMACs':>13}  verified"]
        for r in self.records:
            lines.append(
                f"{r.step:>2}  {r.spec[:34]:<34} {r.seconds:>6.2f}s  {r.before.nodes:>4} -> {r.after.nodes:<4}"
                f"  {r.before.params:>8} -> {r.after.params:<8}  {r.before.macs / 1e9:>5.2f} -> {r.after.macs / 1e9:<5.2f}"
                f"  {r.verified or '-'}"
            )
        return "\n".join(lines)


class PassManager:
    """Runs an ordered list of passes on a copy of a model.

    verify: check each pass's contract against ONNX Runtime on seeded random inputs plus
    `verify_inputs`, raising ContractViolation that names the pass. dump_dir: write the model
    after each pass as NN-name.onnx. context: what the passes get from PassContext.current()
    (threads, seed, progress, the calibration-image cache); a fresh default one per run if None.

    An exception that is not a YoloGraphError escaping a pass (a bug, or a case the pass did not
    foresee) becomes a PassError naming the pass, its step and the original error.
    """

    def __init__(
        self,
        passes: Sequence[Pass] | str,
        *,
        verify: bool = False,
        verify_inputs: Sequence[Feed] = (),
        dump_dir: str | Path | None = None,
        context: PassContext | None = None,
    ) -> None:
        self.passes = parse_pipeline(passes) if isinstance(passes, str) else list(passes)
        if not isinstance(passes, str):  # parse_pipeline validated its own
            for pass_ in self.passes:
                pass_.validate()
        self.context = context
        self.verify = verify
        self.verify_inputs = list(verify_inputs)
        self.dump_dir = Path(dump_dir) if dump_dir else None

    def check_order(self, model: Model) -> None:
        """Raise PipelineError naming both passes when a pass needs what an earlier one removed."""
        have = properties.model_properties(model)
        removed_by: dict[str, str] = {}
        established_by: dict[str, str] = {}
        for step, pass_ in enumerate(self.passes, 1):
            for excluded in sorted(pass_.excludes & have):
                what = properties.describe(excluded)
                if excluded in established_by:
                    raise PipelineError(
                        f"Pass {pass_.spec()!r} (step {step}) cannot run on {what}, which "
                        f"{established_by[excluded]} introduces; run {pass_.name!r} before it."
                    )
                raise PipelineError(
                    f"Pass {pass_.spec()!r} (step {step}) cannot run on {what}, which the input model has; "
                    f"run {pass_.name!r} on the float32 model instead."
                )
            for needed in sorted(pass_.requires - have):
                what = properties.describe(needed)
                if needed in removed_by:
                    raise PipelineError(
                        f"Pass {pass_.spec()!r} (step {step}) requires {what}, but {removed_by[needed]} removes "
                        f"them; run {pass_.name!r} before it."
                    )
                raise PipelineError(
                    f"Pass {pass_.spec()!r} (step {step}) requires {what}, which the model does not have and "
                    "no earlier pass establishes; " + _establishing_hint(needed)
                )
            for lost in pass_.removes:
                removed_by[lost] = f"{pass_.spec()!r} (step {step})"
            have = (have - pass_.removes) | pass_.establishes
            for gained in pass_.establishes:
                removed_by.pop(gained, None)
                established_by.setdefault(gained, f"{pass_.spec()!r} (step {step})")

    def run(self, model: Model) -> tuple[Model, PipelineReport]:
        """Run every pass on a copy of `model`; the input model is never modified."""
        with self.context if self.context is not None else PassContext() as context:
            context.input_model = model
            return self._run(model)

    def _run(self, model: Model) -> tuple[Model, PipelineReport]:
        self.check_order(model)
        work = model.copy()
        if self.dump_dir:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
        feeds = verification_inputs(work, self.verify_inputs) if self.verify else []
        for pass_ in self.passes:  # e.g. a uint8 input can only carry pixels k/255
            feeds = [pass_.restrict_inputs(feed) for feed in feeds]
        reference = run_groups(work, feeds) if self.verify else None
        input_counts = GraphCounts.of(work)
        counts, records = input_counts, []
        for step, pass_ in enumerate(self.passes, 1):
            start = time.perf_counter()
            result = _run_pass(pass_, work, step)
            seconds = time.perf_counter() - start
            if result.changed:
                work.invalidate()
            after = GraphCounts.of(work) if result.changed else counts
            record = PassRecord(step, pass_.name, pass_.spec(), pass_.contract.describe(), result.changed,
                                seconds, counts, after, dict(result.stats))
            if self.verify:
                feeds = [pass_.adapt_inputs(feed) for feed in feeds]
                if not pass_.contract.is_deferred:
                    candidate = run_groups(work, feeds)
                    failure = pass_.contract.check(reference, candidate)
                    if failure:
                        raise ContractViolation(
                            f"Pass {pass_.spec()!r} (step {step}) broke its contract "
                            f"'{pass_.contract.describe()}': {failure}."
                        )
                    record.verified = "ok"
                    reference = candidate
                else:
                    record.verified = "deferred"
            if self.dump_dir:
                from yolograph.ir.serialization import save_model

                save_model(work, self.dump_dir / f"{step:02d}-{pass_.name}.onnx")
            records.append(record)
            counts = after
        # What made the model travels with it (backends' sidecars and `inspect` read it); a model that was
        # already the output of a pipeline records both, in order.
        done = ",".join(p.spec() for p in self.passes)
        earlier = work.metadata.get(metadata.PIPELINE)
        work.metadata[metadata.PIPELINE] = f"{earlier},{done}" if earlier else done
        return work, PipelineReport(records, input_counts, counts)


def _run_pass(pass_: Pass, model: Model, step: int):
    """`pass_.run(model)`, with any exception that is not yolograph's own turned into a PassError."""
    try:
        result = pass_.run(model)
    except YoloGraphError:
        raise
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - the point: a user pass's bug must name the pass
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PassError(
            f"Pass {pass_.spec()!r} (step {step}) failed with {type(exc).__name__}"
            + (f": {detail}" if detail else "")
            + ". This is a bug in the pass or a model it does not handle; run with --debug for the traceback."
        ) from exc
    if not isinstance(result, PassResult):
        raise PassError(f"Pass {pass_.spec()!r} (step {step}) returned {type(result).__name__}, not a PassResult.")
    return result


def _establishing_hint(prop: str) -> str:
    from yolograph.pipeline.passes import registered_passes

    makers = [name for name, cls in registered_passes().items() if prop in _default_establishes(cls)]
    if makers:
        return f"add {' or '.join(repr(m) for m in makers)} before it."
    return "use a model that has them."


def run_pipeline(model: Model, pipeline: str | Sequence[Pass], **options: Any) -> tuple[Model, PipelineReport]:
    """Parse and run a pipeline on a copy of `model` (see PassManager for the options)."""
    return PassManager(pipeline, **options).run(model)


def _default_establishes(cls: type[Pass]) -> frozenset[str]:
    """A pass class's `establishes`; a @property (option-dependent) is read off a default instance."""
    value = cls.establishes
    if isinstance(value, property):
        try:
            value = cls().establishes
        except Exception:  # a pass whose defaults cannot be instantiated names nothing here
            return frozenset()
    return frozenset(value)
