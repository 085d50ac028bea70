"""The pass API fails safely: foreign exceptions name the pass, options fail at parse time, registration rules."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from graphs import conv_bn_model
from yolograph.errors import DataError, PassError, PipelineError
from yolograph.pipeline import Pass, PassContext, PassResult, parse_pipeline, register_pass, registered_passes, run_pipeline
from yolograph.pipeline.passes import _REGISTRY


@pytest.fixture
def scratch_passes():
    before = set(registered_passes())  # the built-ins loaded first, so only test passes are removed
    yield
    for name in set(_REGISTRY) - before:
        _REGISTRY.pop(name)


def test_a_foreign_exception_becomes_a_pass_error_naming_the_pass_and_step(scratch_passes):
    @register_pass("test-raises-keyerror")
    def raises(model, options):
        """Fails with a KeyError (a bug)."""
        return {}["missing"]

    with pytest.raises(PassError, match=r"'test-raises-keyerror' \(step 2\) failed with KeyError: 'missing'.*--debug"):
        run_pipeline(conv_bn_model(), "cleanup,test-raises-keyerror")


def test_a_pass_that_returns_no_result_is_named(scratch_passes):
    @register_pass("test-returns-none")
    def returns_none(model, options):
        """Returns nothing (a bug)."""

    with pytest.raises(PassError, match="test-returns-none.*not a PassResult"):
        run_pipeline(conv_bn_model(), "test-returns-none")


def test_options_are_validated_when_the_pipeline_is_parsed():
    with pytest.raises(PipelineError, match="percentile=150.0 is outside"):
        parse_pipeline("insert-qdq,calibrate{images=x,percentile=150}")
    with pytest.raises(DataError, match="calibrate needs calibration data"):
        parse_pipeline("insert-qdq,calibrate")  # no data: refused before insert-qdq runs
    with pytest.raises(PipelineError, match="count=0 is not positive"):
        parse_pipeline("bias-correction{images=x,count=0}")


def test_tuple_options_honour_their_element_type(scratch_passes):
    @dataclass(frozen=True)
    class Sizes:
        sizes: tuple[int, ...] = ()

    @register_pass("test-sizes", options=Sizes)
    def sizes(model, options):
        """Records its sizes; changes nothing."""
        return PassResult(changed=False, stats={"sizes": options.sizes})

    (pass_,) = parse_pipeline("test-sizes{sizes=8|16}")
    assert pass_.options.sizes == (8, 16)
    with pytest.raises(PipelineError, match="expects an integer, got 'x'"):
        parse_pipeline("test-sizes{sizes=8|x}")


def test_registration_needs_the_pass_s_own_docstring(scratch_passes):
    with pytest.raises(PipelineError, match="docstring of its own"):
        @register_pass("test-undocumented")
        class Undocumented(Pass):
            def run(self, model):
                return PassResult(changed=False)


def test_registering_the_same_pass_again_is_idempotent_and_a_clash_is_refused(scratch_passes):
    def make():
        class Twice(Pass):
            """Changes nothing."""

            def run(self, model):
                return PassResult(changed=False)
        return Twice

    register_pass("test-twice")(make())
    register_pass("test-twice")(make())  # the module imported a second time
    with pytest.raises(PipelineError, match="already registered"):
        @register_pass("test-twice")
        class Other(Pass):
            """Another pass under a taken name."""

            def run(self, model):
                return PassResult(changed=False)


def test_the_pass_context_is_what_passes_see(scratch_passes):
    seen = []

    @register_pass("test-sees-context")
    def sees(model, options):
        """Records the context's threads; changes nothing."""
        seen.append(PassContext.current().threads)
        return PassResult(changed=False)

    from yolograph.pipeline import PassManager

    PassManager("test-sees-context", context=PassContext(threads=3)).run(conv_bn_model())
    run_pipeline(conv_bn_model(), "test-sees-context")
    assert seen == [3, PassContext().threads]
    assert PassContext.current().threads == PassContext().threads  # nothing leaks out of a run


def test_the_context_letterboxes_calibration_images_once(coco_dir):
    from yolograph.evaluation.calibration_data import CalibrationSource

    context = PassContext()
    source = CalibrationSource(images=str(coco_dir), count=2)
    first = list(context.calibration_tensors(source, (64, 64)))
    second = list(context.calibration_tensors(source, (64, 64)))
    assert len(first) == 2 and all(a is b for a, b in zip(first, second))
