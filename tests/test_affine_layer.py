"""ElementwiseAffine: identity at creation, shape checks, float64 precision."""

import keras
import numpy as np
import pytest

import verinet as vn
from verinet import layers as L


@pytest.mark.parametrize(
    ("param_shape", "input_shape"),
    [(None, (2, 5)), ((1, 1, 3), (2, 4, 4, 3)), ((4, 1, 3), (2, 4, 6, 3))],
)
def test_a_new_layer_is_the_identity(param_shape, input_shape):
    """Fresh weights are scale 1 and shift 0, like an untrained batch norm."""
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    layer = L.ElementwiseAffine(param_shape)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)


@pytest.mark.parametrize(
    ("param_shape", "input_shape"),
    [
        ((3,), (2, 4)),  # the last axes differ: no broadcast at all
        ((4, 3), (2, 4, 1)),  # broadcasts, but would enlarge the sample
        ((2, 4), (2, 4)),  # broadcasts, but would enlarge the sample
        ((1, 1, 4), (2, 4)),  # more axes than a sample has
    ],
)
def test_parameters_that_do_not_fit_the_input_are_refused(param_shape, input_shape):
    layer = L.ElementwiseAffine(param_shape, name="aff")
    with pytest.raises(vn.InvalidInputError, match=r"'aff'.*do not broadcast"):
        layer.build(input_shape)


def test_float64_layer_computes_in_float64():
    """Scale 1/3 and shift 1/7 stay exact to float64 precision (not float32)."""
    layer = L.ElementwiseAffine(dtype="float64")
    layer.build((None, 3))
    layer.set_weights([np.full(3, 1 / 3), np.full(3, 1 / 7)])
    x = np.array([[1.0, -2.0, 10.0]])
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, x / 3 + 1 / 7, rtol=1e-14, atol=0)
