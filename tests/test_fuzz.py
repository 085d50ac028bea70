"""Fuzzing the exact and tolerance-contract passes: seeded random graphs verified against ONNX Runtime.

CI runs graphs 0-109, each through one seeded random pipeline of 1-4 of the fuzzed passes (fold-bn,
cleanup, fast-dfl, to-nhwc variants, to-fp16 when registered); `benchmarks/fuzz.py --graphs 1000` is
the full run (every pass alone and all chained).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from yolograph.testing.fuzz import fuzz, fuzz_one, fuzzed_passes, pipelines_for
from yolograph.testing.random_graphs import BLOCKS, random_onnx

CI_GRAPHS = 110


@pytest.fixture(autouse=True, scope="module")
def quiet_onnxruntime():
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # failures are asserted on, not logged
    yield
    onnxruntime.set_default_logger_severity(2)


def test_the_generator_is_deterministic_and_varied():
    assert random_onnx(5).SerializeToString() == random_onnx(5).SerializeToString()
    ops: Counter = Counter()
    for seed in range(40):
        ops.update(n.op_type for n in random_onnx(seed).graph.node)
    wanted = {"Conv", "ConvTranspose", "BatchNormalization", "Sigmoid", "Mul", "Add", "Concat", "Split", "MaxPool",
              "Resize", "Reshape", "Transpose", "Slice", "Softmax"}
    assert wanted <= set(ops), wanted - set(ops)
    assert len(BLOCKS) >= 15


def test_fuzzed_passes_include_every_exact_or_tolerance_pass():
    from yolograph.pipeline import registered_passes

    # The built-in passes (other tests register toy passes of their own in the same process).
    contract_kinds = {name: cls.contract.kind for name, cls in registered_passes().items()
                      if cls.__module__.startswith("yolograph.passes.")}
    exact_or_tolerance = {name for name, kind in contract_kinds.items() if kind in ("exact", "tolerance")}
    assert exact_or_tolerance <= set(fuzzed_passes())


def test_a_broken_pass_is_caught(monkeypatch):
    """The fuzzer must be able to fail: a fold-bn that drops the BN shift breaks its contract."""
    import yolograph.passes.fold_bn as fold_bn

    original = fold_bn.bn_affine

    def no_shift(bn):
        affine = original(bn)
        return None if affine is None else (affine[0], np.zeros_like(affine[1]))

    monkeypatch.setattr(fold_bn, "bn_affine", no_shift)
    seed = next(s for s in range(100) if any(n.op_type == "BatchNormalization" for n in random_onnx(s).graph.node))
    assert fuzz_one(seed, "fold-bn").status == "violation"


def test_ci_graphs_keep_every_contract():
    outcomes = list(fuzz(range(CI_GRAPHS), every_pass=False))
    counts = Counter(o.status for o in outcomes)
    failures = [f"seed {o.seed} {o.pipeline}: {o.status}: {o.message}" for o in outcomes
                if o.status in ("violation", "crash", "invalid")]
    assert not failures, "\n".join(failures)
    assert len({o.seed for o in outcomes}) >= 100
    assert counts["ok"] >= 0.9 * len(outcomes)  # refusals stay the exception
    covered = {p.split("{")[0] for o in outcomes if o.status == "ok" for p in o.pipeline.split(",")}
    assert set(fuzzed_passes()) <= covered


def test_every_pass_mode_runs_each_pass_alone_and_chained():
    pipelines = pipelines_for(3, ["fold-bn", "cleanup", "to-nhwc"], every_pass=True)
    assert pipelines[:2] == ["fold-bn", "cleanup"] and pipelines[2].startswith("to-nhwc")
    assert pipelines[3].startswith("fold-bn,cleanup,to-nhwc")


def test_random_graphs_are_valid_onnx():
    for seed in range(20):
        onnx.checker.check_model(random_onnx(seed), full_check=True)
