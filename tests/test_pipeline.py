"""Pass API, pipeline parsing, option typing, order checks, instrumentation and verification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest

from graphs import conv_bn_model
from yolograph.errors import ContractViolation, PipelineError
from yolograph.pipeline import Contract, Pass, PassResult, parse_pipeline, register_pass, run_pipeline
from yolograph.pipeline.passes import _REGISTRY


@dataclass(frozen=True)
class _ToyOptions:
    method: Literal["minmax", "entropy"] = "minmax"
    count: int = 32
    ratio: float = 0.5
    enabled: bool = True
    exclude: tuple[str, ...] = ()
    limit: int | None = None


@register_pass("test-toy")
class _ToyPass(Pass):
    """A pass that changes nothing; used to test option parsing."""

    Options = _ToyOptions

    def run(self, model):
        return PassResult(changed=False)


@register_pass("test-needs-qdq", requires={"qdq"})
def _needs_qdq(model, options):
    """Requires Q/DQ nodes; changes nothing."""
    return PassResult(changed=False)


@register_pass("test-breaks-contract", contract=Contract.exact())
def _breaks_contract(model, options):
    """Claims bit-exactness but scales every Conv weight."""
    for node in model.nodes_by_op("Conv"):
        node.inputs[1].values = node.inputs[1].values * 1.01
    return PassResult(changed=True)


def test_parse_typed_options():
    (toy,) = parse_pipeline("test-toy{method=entropy,count=8,ratio=0.25,enabled=false,exclude=a|b,limit=none}")
    assert toy.options == _ToyOptions("entropy", 8, 0.25, False, ("a", "b"), None)
    assert toy.spec() == "test-toy{method=entropy,count=8,ratio=0.25,enabled=false,exclude=a|b}"


def test_parse_several_passes_with_braces():
    passes = parse_pipeline("fold-bn, cleanup ,test-toy{count=3,method=entropy}")
    assert [p.name for p in passes] == ["fold-bn", "cleanup", "test-toy"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("fold-bm", "did you mean 'fold-bn'"),
        ("test-toy{methd=minmax}", "valid options: method (minmax|entropy)"),
        ("test-toy{method=kl}", "expects one of minmax, entropy"),
        ("test-toy{count=many}", "expects an integer"),
        ("test-toy{count}", "key=value"),
        ("test-toy{count=1", "Unbalanced"),
        ("fold-bn,,cleanup", "Empty step"),
        ("", "empty"),
    ],
)
def test_parse_errors_say_what_is_valid(text, fragment):
    with pytest.raises(PipelineError, match=None) as info:
        parse_pipeline(text)
    assert fragment in str(info.value)


def test_unknown_pass_error_lists_available_passes():
    with pytest.raises(PipelineError) as info:
        parse_pipeline("no-such-pass")
    assert "fold-bn" in str(info.value) and "cleanup" in str(info.value)


def test_order_check_names_the_missing_property():
    with pytest.raises(PipelineError) as info:
        run_pipeline(conv_bn_model(), "fold-bn,test-needs-qdq")
    assert "test-needs-qdq" in str(info.value) and "Q" in str(info.value)


def test_order_check_names_both_passes():
    @register_pass("test-needs-bn", requires={"batchnorm"})
    def needs_bn(model, options):
        """Requires unfolded BatchNormalization."""
        return PassResult(changed=False)

    try:
        run_pipeline(conv_bn_model(), "test-needs-bn")  # fine: the model has BN
        with pytest.raises(PipelineError) as info:
            run_pipeline(conv_bn_model(), "cleanup,fold-bn,test-needs-bn")
        message = str(info.value)
        assert "'test-needs-bn' (step 3)" in message and "'fold-bn' (step 2)" in message
    finally:
        _REGISTRY.pop("test-needs-bn")


def test_fold_bn_after_to_fp16_is_refused_naming_both_passes():
    # Folding into float16 weights cannot keep fold-bn's 1e-4 tolerance (the fuzzer found 5.7%).
    with pytest.raises(PipelineError) as info:
        run_pipeline(conv_bn_model(), "to-fp16,fold-bn")
    message = str(info.value)
    assert "'fold-bn' (step 2)" in message and "'to-fp16' (step 1)" in message and "before it" in message
    run_pipeline(conv_bn_model(), "fold-bn,to-fp16")  # the working order


def test_order_is_checked_before_anything_runs(tmp_path):
    with pytest.raises(PipelineError):
        run_pipeline(conv_bn_model(), "fold-bn,test-needs-qdq", dump_dir=tmp_path / "dump")
    assert not (tmp_path / "dump").exists()


def test_verify_names_the_pass_that_broke_its_contract():
    with pytest.raises(ContractViolation) as info:
        run_pipeline(conv_bn_model(), "fold-bn,test-breaks-contract", verify=True)
    assert "'test-breaks-contract' (step 2)" in str(info.value) and "bit-exact" in str(info.value)


def test_instrumentation_and_dumps(tmp_path):
    model = conv_bn_model()
    result, report = run_pipeline(model, "fold-bn,cleanup", dump_dir=tmp_path)
    assert [r.name for r in report.records] == ["fold-bn", "cleanup"]
    first = report.records[0]
    assert first.changed and first.before.nodes == 4 and first.after.nodes == 3
    assert first.before.params > first.after.params  # BN's four vectors became one bias
    assert first.before.macs == first.after.macs > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01-fold-bn.onnx", "02-cleanup.onnx"]
    assert report.to_json()["output"]["nodes"] == len(result.graph.nodes)
    assert "fold-bn" in report.table()


def test_verify_with_given_inputs_checks_shapes():
    from yolograph.errors import DataError

    model = conv_bn_model()
    good = {"x": np.zeros((1, 8, 16, 16), np.float32)}
    run_pipeline(model, "fold-bn", verify=True, verify_inputs=[good])
    with pytest.raises(DataError, match="shape"):
        run_pipeline(model, "fold-bn", verify=True, verify_inputs=[{"x": np.zeros((1, 3, 4, 4), np.float32)}])


# The README's custom pass, verbatim: it must stay within 15 lines.
README_PASS = '''
from dataclasses import dataclass
from yolograph.pipeline import Contract, PassResult, register_pass

@dataclass(frozen=True)
class CountOpOptions:
    op: str = "Sigmoid"

@register_pass("count-op", options=CountOpOptions, contract=Contract.exact())
def count_op(model, options):
    """Count the nodes of one op type; changes nothing (bit-exact)."""
    found = len(model.nodes_by_op(options.op))
    return PassResult(changed=False, stats={"found": found})
'''


def test_custom_pass_from_readme_runs_in_a_pipeline():
    lines = [line for line in README_PASS.strip().splitlines() if line.strip()]
    assert len(lines) <= 15
    namespace: dict = {}
    exec(README_PASS, namespace)
    try:
        _, report = run_pipeline(conv_bn_model(), "fold-bn,count-op{op=Conv}", verify=True)
        assert report.records[1].stats == {"found": 1}
        assert report.records[1].verified == "ok"
    finally:
        _REGISTRY.pop("count-op")


def test_readme_contains_the_tested_custom_pass():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert README_PASS.strip() in readme
