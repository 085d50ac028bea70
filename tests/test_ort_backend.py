"""The ONNX Runtime reference backend: session options and load errors."""

import numpy as np
import pytest

from graphs import conv_bn_model
from yolograph.runtime import OrtOptions, OrtRunner
from yolograph.errors import BackendError


def test_spin_false_makes_idle_workers_sleep():
    model = conv_bn_model()
    spinning = OrtRunner(model, OrtOptions(threads=2))
    sleeping = OrtRunner(model, OrtOptions(threads=2, spin=False))
    key = "session.intra_op.allow_spinning"
    assert sleeping.session.get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(RuntimeError):  # no entry: ORT's default, spinning
        spinning.session.get_session_options().get_session_config_entry(key)
    x = np.random.default_rng(0).random(tuple(model.inputs[0].shape), dtype=np.float32)
    np.testing.assert_array_equal(spinning.run(x)[0], sleeping.run(x)[0])


def test_unknown_optimization_level_is_named():
    with pytest.raises(BackendError, match="Unknown ORT optimization level 'fast'"):
        OrtRunner(conv_bn_model(), OrtOptions(optimization="fast"))


def test_unloadable_model_is_a_backend_error():
    with pytest.raises(BackendError, match="ONNX Runtime cannot load the model"):
        OrtRunner(b"not an onnx model")
