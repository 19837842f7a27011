"""Zoo layers compute in channels_last whatever Keras's global default says.

The bound rules assume channels_last. A layer that followed
``keras.config.set_image_data_format("channels_first")`` would compute one
function and bound another, so zoo layers pin channels_last and refuse an
explicit channels_first.
"""

import keras
import numpy as np
import pytest

import verinet as vn
from verinet import layers as L


@pytest.fixture
def channels_first_default():
    before = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format(before)


def _model():
    keras.utils.set_random_seed(1)
    return vn.Sequential(
        [
            L.Input((6, 4, 3)),
            L.Conv2D(4, (3, 2), padding="same"),
            L.ReLU(),
            L.MaxPooling2D(2),
            L.AveragePooling2D((1, 2)),
            L.Flatten(),
            L.Dense(3),
        ]
    )


def test_global_channels_first_does_not_change_zoo_layers(channels_first_default, rng):
    model = _model()
    x = rng.uniform(0, 1, (5, 6, 4, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(model(x))
    # The same weights in a channels_last stock Keras model give the reference.
    keras.config.set_image_data_format("channels_last")
    reference = keras.Sequential(
        [
            keras.Input((6, 4, 3)),
            keras.layers.Conv2D(4, (3, 2), padding="same"),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
            keras.layers.AveragePooling2D((1, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    reference.set_weights(model.get_weights())
    expected = keras.ops.convert_to_numpy(reference(x))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # And the certified bounds contain the outputs of sampled points.
    low, up = vn.compute_bounds(model, x, 0.05, method="crown")
    noise = rng.uniform(-0.05, 0.05, (200, *x.shape[1:])).astype("float32")
    for i in range(len(x)):
        y = keras.ops.convert_to_numpy(model(x[i] + noise))
        assert np.all(y >= low[i] - 1e-5) and np.all(y <= up[i] + 1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.Flatten(data_format="channels_first"),
        lambda: L.Conv2D(2, 3, data_format="channels_first"),
        lambda: L.MaxPooling2D(data_format="channels_first"),
        lambda: L.AveragePooling2D(data_format="channels_first"),
    ],
    ids=["Flatten", "Conv2D", "MaxPooling2D", "AveragePooling2D"],
)
def test_explicit_channels_first_is_refused(make):
    with pytest.raises(vn.InvalidInputError, match="channels_last"):
        make()
