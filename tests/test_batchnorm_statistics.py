"""The Keras BatchNorm statistics switch (``metalearn_tf.set_batchnorm_statistics``).

* The default (no call, ``METALEARN_BN_STATISTICS`` unset) is the first of
  ``BN_STATISTICS``, the dtype the parity suite runs with (it sets nothing); the variable
  and the call choose another; a bad name raises, naming the choices.
* The choice is taken when a layer is built, kept in its config (``.keras`` round trip) and
  changes the dtype of the traced training computation: a float64 layer has float64 ops,
  a float32 one none.
* Both give the batch statistics and running variance of the numpy float64 reference
  within float32 rounding, on activations with a large mean (where a one-pass float32
  variance would lose every digit).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402  (the traced graph's op dtypes)

import metalearn_tf  # noqa: E402
from metalearn_tf.models.backbones import BN_STATISTICS_ENV, UnbiasedBatchNormalization  # noqa: E402


@pytest.fixture(autouse=True)
def _unset(monkeypatch):
    monkeypatch.delenv(BN_STATISTICS_ENV, raising=False)
    metalearn_tf.set_batchnorm_statistics(None)
    yield
    metalearn_tf.set_batchnorm_statistics(None)


def _graph_dtypes(layer: UnbiasedBatchNormalization, shape: tuple[int, ...]) -> set[str]:
    fn = tf.function(lambda x: layer(x, training=True))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return {t.dtype.name for op in graph.get_operations() for t in op.outputs}


def test_default_is_the_first_choice_and_what_parity_runs_with():
    assert metalearn_tf.BN_STATISTICS == ("float64", "float32")
    assert metalearn_tf.batchnorm_statistics() == metalearn_tf.BN_STATISTICS[0]
    assert UnbiasedBatchNormalization().statistics_dtype == metalearn_tf.BN_STATISTICS[0]


def test_call_and_environment_choose(monkeypatch):
    monkeypatch.setenv(BN_STATISTICS_ENV, "float32")
    assert metalearn_tf.batchnorm_statistics() == "float32"
    metalearn_tf.set_batchnorm_statistics("float64")  # the call wins over the variable
    assert UnbiasedBatchNormalization().statistics_dtype == "float64"
    metalearn_tf.set_batchnorm_statistics(None)
    assert UnbiasedBatchNormalization().statistics_dtype == "float32"
    with pytest.raises(ValueError, match="float64, float32"):
        metalearn_tf.set_batchnorm_statistics("float16")
    monkeypatch.setenv(BN_STATISTICS_ENV, "double")
    with pytest.raises(ValueError, match=BN_STATISTICS_ENV):
        metalearn_tf.batchnorm_statistics()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_switch_sets_the_dtype_of_the_computation(dtype):
    metalearn_tf.set_batchnorm_statistics(dtype)
    layer = UnbiasedBatchNormalization(momentum=0.9, epsilon=1e-5)
    layer.build((None, 6, 6, 3))
    metalearn_tf.set_batchnorm_statistics(None)  # a built layer keeps its choice
    assert layer.statistics_dtype == dtype
    assert ("float64" in _graph_dtypes(layer, (4, 6, 6, 3))) == (dtype == "float64")
    again = UnbiasedBatchNormalization.from_config(layer.get_config())
    assert again.statistics_dtype == dtype


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_statistics_match_float64_reference(dtype):
    rng = np.random.default_rng(0)
    x = (1000.0 + 0.01 * rng.standard_normal((16, 12, 12, 4))).astype(np.float32)
    layer = UnbiasedBatchNormalization(statistics_dtype=dtype, momentum=0.0, epsilon=1e-5)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    x64 = x.astype(np.float64)
    mean, var = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
    n = x.size // x.shape[-1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), mean, rtol=1e-7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance),
                               var * n / (n - 1), rtol=2e-6)
    assert np.isfinite(out).all()
