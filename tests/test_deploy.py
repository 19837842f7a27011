"""vn.deploy: batch-norm folding, dropout removal, same function and bounds."""

import verinet as vn  # noqa: I001 - verinet before keras

import keras
import numpy as np
import pytest
from soundness_utils import check_soundness, random_inputs, randomize_weights

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


# ---------------------------------------------------------------------------
# Folding against an independent float64 numpy computation
# ---------------------------------------------------------------------------


BN_EPSILON = 0.01  # not Keras's default: a dropped or misplaced epsilon shows


def _bn_statistics(rng, c):
    """Far from the identity: mean ~ N(0, 2^2), variance in [0.2, 5], gamma
    of both signs, beta ~ N(0, 1)."""
    return {
        "gamma": rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c),
        "beta": rng.normal(size=c),
        "moving_mean": rng.normal(scale=2.0, size=c),
        "moving_variance": rng.uniform(0.2, 5.0, c),
    }


def _set_bn(layer, stats):
    layer.set_weights([stats[w.name].astype("float32") for w in layer.weights])
    # What the layer holds is what numpy uses: float32 values, read as float64.
    return {w.name: np.asarray(w.numpy(), np.float64) for w in layer.weights}


def _set_random(layer, rng):
    """Random kernel and a clearly non-zero bias; returns them in float64."""
    kernel = rng.normal(size=layer.kernel.shape) / np.sqrt(layer.kernel.shape[-2])
    bias = rng.normal(size=layer.bias.shape)
    layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return [np.asarray(w, np.float64) for w in layer.get_weights()]


def _bn_numpy(h, s):
    inv = 1.0 / np.sqrt(s["moving_variance"] + BN_EPSILON)
    return s["gamma"] * (h - s["moving_mean"]) * inv + s["beta"]


def _conv_numpy(x, kernel, bias):
    """'valid', stride 1, NHWC, in float64."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    # windows: (n, h', w', c_in, kh, kw)
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def test_folding_matches_numpy_on_dense(rng):
    model = vn.Sequential(
        [
            L.Input((6,)),
            L.BatchNormalization(epsilon=BN_EPSILON),  # nothing to fold into
            L.Dense(5),
            L.BatchNormalization(epsilon=BN_EPSILON),  # folds into the Dense
            L.ReLU(),
            L.Dense(3),
        ]
    )
    bn0 = _set_bn(model.layers[0], _bn_statistics(rng, 6))
    W1, b1 = _set_random(model.layers[1], rng)
    bn1 = _set_bn(model.layers[2], _bn_statistics(rng, 5))
    W2, b2 = _set_random(model.layers[4], rng)
    x = rng.normal(scale=2.0, size=(64, 6)).astype("float32")

    h = _bn_numpy(x.astype(np.float64), bn0) @ W1 + b1
    expected = np.maximum(_bn_numpy(h, bn1), 0.0) @ W2 + b2

    deployed = deploy(model)
    assert _types(deployed) == [
        "InputLayer",
        "ElementwiseAffine",
        "Dense",
        "ReLU",
        "Dense",
    ]
    tol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(_predict(model, x), expected, atol=tol, rtol=0)
    np.testing.assert_allclose(_predict(deployed, x), expected, atol=tol, rtol=0)

    # The folded parameters themselves, by hand:
    #   scale = gamma / sqrt(var + eps),  W' = W scale,  b' = (b - mean) scale + beta
    scale = bn1["gamma"] / np.sqrt(bn1["moving_variance"] + BN_EPSILON)
    got_kernel, got_bias = deployed.layers[2].get_weights()
    np.testing.assert_allclose(got_kernel, W1 * scale, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        got_bias, (b1 - bn1["moving_mean"]) * scale + bn1["beta"], rtol=1e-6
    )
    scale0 = bn0["gamma"] / np.sqrt(bn0["moving_variance"] + BN_EPSILON)
    got_scale, got_shift = deployed.layers[1].get_weights()
    np.testing.assert_allclose(got_scale, scale0, rtol=1e-6)
    np.testing.assert_allclose(
        got_shift, bn0["beta"] - bn0["moving_mean"] * scale0, rtol=1e-6, atol=1e-7
    )


def test_folding_matches_numpy_on_conv(rng):
    model = vn.Sequential(
        [
            L.Input((5, 5, 2)),
            L.Conv2D(4, 3),
            L.BatchNormalization(epsilon=BN_EPSILON),
            L.Tanh(),
            L.Flatten(),
            L.Dense(3),
        ]
    )
    K, bk = _set_random(model.layers[0], rng)
    bn = _set_bn(model.layers[1], _bn_statistics(rng, 4))
    W, b = _set_random(model.layers[4], rng)
    x = rng.uniform(-1, 2, size=(16, 5, 5, 2)).astype("float32")

    h = np.tanh(_bn_numpy(_conv_numpy(x.astype(np.float64), K, bk), bn))
    expected = h.reshape(len(x), -1) @ W + b

    deployed = deploy(model)
    assert _types(deployed) == ["InputLayer", "Conv2D", "Tanh", "Flatten", "Dense"]
    tol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(_predict(model, x), expected, atol=tol, rtol=0)
    np.testing.assert_allclose(_predict(deployed, x), expected, atol=tol, rtol=0)
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + BN_EPSILON)
    got_kernel, got_bias = deployed.layers[1].get_weights()
    np.testing.assert_allclose(got_kernel, K * scale, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        got_bias, (bk - bn["moving_mean"]) * scale + bn["beta"], rtol=1e-6
    )


@pytest.mark.parametrize(
    "norm, epsilon, input_range",
    [("linf", 0.05, None), ("linf", 0.1, (0.0, 1.0)), ("l2", 0.3, (0.0, 1.0))],
)
def test_deployed_bounds_are_sound(rng, norm, epsilon, input_range):
    """The deployed model (folded Conv2D and Dense, an ElementwiseAffine) is
    bounded soundly by every method, and since it computes the original's
    function, the outputs it reaches lie within the original's bounds too."""
    model = vn.Sequential(
        [
            L.Input((5, 5, 2)),
            L.BatchNormalization(),
            L.Conv2D(3, 3),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(6),
            L.BatchNormalization(),
            L.GeLU(),
            L.Dense(3),
        ]
    )
    randomize_weights(model, rng)
    deployed = deploy(model)
    assert "BatchNormalization" not in _types(deployed)
    x = random_inputs((5, 5, 2), 3, rng, input_range)
    extremes, _ = check_soundness(deployed, x, epsilon, norm, input_range)
    check_soundness(model, x, epsilon, norm, input_range, extremes=extremes)
