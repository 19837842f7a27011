"""vn.deploy: batch-norm folding, dropout removal, same function and bounds."""

import verinet as vn  # noqa: I001 - verinet before keras

import keras
import numpy as np
import pytest

from verinet import layers as L
from verinet.deploy import deploy

METHODS = ("ibp", "crown", "crown-ibp")


def _randomize_bn(model, rng):
    """Random moving statistics and affine parameters on every BN layer."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            weights = {
                "gamma": rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c),
                "beta": rng.normal(size=c),
                "moving_mean": rng.normal(size=c),
                "moving_variance": rng.uniform(0.2, 3.0, c),
            }
            layer.set_weights(
                [weights[w.name].astype("float32") for w in layer.weights]
            )
            count += 1
    assert count, "the model has no BatchNormalization to randomize"
    return model


def _types(model):
    return [type(layer).__name__ for layer in model.layers]


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _assert_same_function(original, deployed, x, tol=1e-5):
    expected, got = _predict(original, x), _predict(deployed, x)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, atol=tol * scale, rtol=0)


def test_dense_bn_folds_into_dense(rng):
    model = vn.Sequential(
        [L.Input((6,)), L.Dense(8), L.BatchNormalization(), L.ReLU(), L.Dense(3)]
    )
    _randomize_bn(model, rng)
    deployed = deploy(model)
    assert _types(deployed) == ["InputLayer", "Dense", "ReLU", "Dense"]
    x = rng.normal(size=(32, 6)).astype("float32")
    _assert_same_function(model, deployed, x)
    # The folding is not the identity: the Dense weights changed.
    assert not np.allclose(
        deployed.layers[1].get_weights()[0], model.layers[0].get_weights()[0]
    )


@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_bn_folds_into_conv(rng, use_bias):
    model = vn.Sequential(
        [
            L.Input((6, 6, 2)),
            L.Conv2D(4, 3, strides=2, padding="same", use_bias=use_bias),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(3),
        ]
    )
    _randomize_bn(model, rng)
    deployed = deploy(model)
    assert _types(deployed) == ["InputLayer", "Conv2D", "ReLU", "Flatten", "Dense"]
    assert deployed.layers[1].use_bias
    x = rng.uniform(size=(16, 6, 6, 2)).astype("float32")
    _assert_same_function(model, deployed, x)


def test_bn_with_nothing_foldable_before_becomes_affine(rng):
    model = vn.Sequential(
        [
            L.Input((4, 4, 3)),
            L.BatchNormalization(),  # right after the input
            L.Conv2D(2, 3),
            L.ReLU(),
            L.BatchNormalization(),  # after an activation
            L.Flatten(),
            L.Dense(3),
        ]
    )
    _randomize_bn(model, rng)
    deployed = deploy(model)
    types = _types(deployed)
    assert "BatchNormalization" not in types
    assert types.count("ElementwiseAffine") == 2
    x = rng.normal(size=(16, 4, 4, 3)).astype("float32")
    _assert_same_function(model, deployed, x)


def test_dropout_removed_and_bn_folded_through_it(rng):
    model = vn.Sequential(
        [
            L.Input((5,)),
            L.Dense(7),
            L.Dropout(0.5),
            L.BatchNormalization(),
            L.GeLU(),
            L.Dropout(0.3),
            L.Dense(2),
        ]
    )
    _randomize_bn(model, rng)
    deployed = deploy(model)
    assert _types(deployed) == ["InputLayer", "Dense", "GeLU", "Dense"]
    _assert_same_function(model, deployed, rng.normal(size=(8, 5)).astype("float32"))


def test_shared_output_is_not_folded(rng):
    """A Dense output read by BN and by a skip connection must stay unfolded."""
    inputs = L.Input((4,))
    h = L.Dense(4)(inputs)
    bn = L.BatchNormalization()(h)
    out = L.Dense(2)(L.Add()([h, L.ReLU()(bn)]))
    model = vn.Model(inputs, out)
    _randomize_bn(model, rng)
    deployed = deploy(model)
    assert "ElementwiseAffine" in _types(deployed)
    _assert_same_function(model, deployed, rng.normal(size=(8, 4)).astype("float32"))


def test_original_untouched_and_other_layers_copied(rng):
    model = vn.Sequential(
        [
            L.Input((6, 6, 1)),
            L.Rescaling(2.0, offset=-1.0),
            L.Conv2D(3, 3, padding="same"),
            L.BatchNormalization(),
            L.ResidualBlock(4),
            L.AveragePooling2D(2),
            L.MaxPooling2D(1),
            L.Flatten(),
            L.Dense(4),
            L.Tanh(),
            L.Dense(3),
        ]
    )
    _randomize_bn(model, rng)
    before = [w.copy() for w in model.get_weights()]
    deployed = deploy(model)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    x = rng.uniform(size=(8, 6, 6, 1)).astype("float32")
    _assert_same_function(model, deployed, x)
    # Changing the deployed model's weights leaves the original alone.
    deployed.layers[-1].set_weights(
        [np.zeros_like(w) for w in deployed.layers[-1].get_weights()]
    )
    assert np.abs(_predict(model, x)).max() > 0


def test_stock_keras_model_is_converted_then_deployed(rng):
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(3),
        ]
    )
    deployed = deploy(model)
    assert isinstance(deployed, vn.Model)
    _assert_same_function(model, deployed, rng.normal(size=(8, 5)).astype("float32"))


def test_deployed_bounds_match_original(rng):
    model = vn.Sequential(
        [
            L.Input((5, 5, 1)),
            L.Conv2D(3, 3),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(6),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dense(3),
        ]
    )
    _randomize_bn(model, rng)
    deployed = deploy(model)
    x = rng.uniform(size=(6, 5, 5, 1)).astype("float32")
    for method in METHODS:
        lo0, up0 = vn.compute_bounds(model, x, 0.05, method=method)
        lo1, up1 = vn.compute_bounds(deployed, x, 0.05, method=method)
        scale = 1.0 + np.abs(lo0).max()
        np.testing.assert_allclose(lo1, lo0, atol=1e-4 * scale, rtol=0)
        np.testing.assert_allclose(up1, up0, atol=1e-4 * scale, rtol=0)


def test_deployed_model_saves_and_loads(rng, tmp_path):
    model = vn.Sequential(
        [L.Input((3,)), L.BatchNormalization(), L.Dense(2), L.BatchNormalization()]
    )
    _randomize_bn(model, rng)
    deployed = deploy(model)
    path = tmp_path / "deployed.keras"
    deployed.save(path)
    loaded = keras.saving.load_model(path)
    x = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(_predict(loaded, x), _predict(deployed, x), atol=1e-6)


def test_deploy_rejects_non_models():
    with pytest.raises(vn.InvalidInputError, match="Keras model"):
        deploy("model.keras")


@pytest.fixture(scope="module")
def digits_bn_model():
    """A small digits model with BN and dropout, trained briefly."""
    keras.utils.set_random_seed(1)
    (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
    model = vn.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(4, 3, strides=2, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(32),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dropout(0.2),
            L.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=4, batch_size=128, verbose=0)
    return model, x_test[:80], y_test[:80]


def test_deploy_keeps_function_and_verdicts_on_digits(digits_bn_model):
    model, x, y = digits_bn_model
    deployed = deploy(model)
    _assert_same_function(model, deployed, x)
    options = dict(method="crown", input_range=(0.0, 1.0), verbose=0)
    before = vn.certify(model, x, y, 0.02, **options)
    after = vn.certify(deployed, x, y, 0.02, **options)
    assert 0 < before.verified.sum() < len(y)  # a non-trivial comparison
    np.testing.assert_array_equal(after.verified, before.verified)
    np.testing.assert_array_equal(after.falsified, before.falsified)
    np.testing.assert_array_equal(after.predictions, before.predictions)
