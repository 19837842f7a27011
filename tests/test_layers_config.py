"""Layer zoo: configs, .keras save/load, parity with stock Keras, refusals."""

from dataclasses import dataclass

import keras
import numpy as np
import pytest
import torch

import verinet as vn
from verinet import layers as L


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _residual_dense_reference(block, x):
    """``x + W2 act(W1 x + b1) + b2`` computed with stock Keras layers."""
    first, act, last = block.inner
    d1 = keras.layers.Dense(first.units)
    d2 = keras.layers.Dense(last.units)
    d1.build(x.shape)
    d2.build((None, first.units))
    d1.set_weights(first.get_weights())
    d2.set_weights(last.get_weights())
    activation = keras.layers.Activation(block.activation_name)
    return keras.ops.add(x, d2(activation(d1(x))))


def _residual_conv_reference(block, x):
    first, act, last = block.inner
    c1 = keras.layers.Conv2D(first.filters, block.kernel_size, padding="same")
    c2 = keras.layers.Conv2D(last.filters, block.kernel_size, padding="same")
    c1.build(x.shape)
    c2.build((*x.shape[:-1], first.filters))
    c1.set_weights(first.get_weights())
    c2.set_weights(last.get_weights())
    activation = keras.layers.Activation(block.activation_name)
    return keras.ops.add(x, c2(activation(c1(x))))


def _affine_reference(layer, x):
    scale, shift = layer.get_weights()
    return x * scale + shift


@dataclass
class Case:
    id: str
    name: str  # the class name in verinet.layers.__all__
    zoo: object  # () -> zoo layer
    stock: object  # () -> stock layer, or (zoo_layer, x) -> reference output
    shape: tuple
    arity: int = 1
    reference_fn: bool = False


CASES = [
    Case("Add", "Add", lambda: L.Add(), lambda: keras.layers.Add(), (6,), arity=2),
    Case(
        "Add3",
        "Add",
        lambda: L.Add(),
        lambda: keras.layers.Add(),
        (3, 3, 2),
        arity=3,
    ),
    Case(
        "AveragePooling2D",
        "AveragePooling2D",
        lambda: L.AveragePooling2D(2, padding="same"),
        lambda: keras.layers.AveragePooling2D(2, padding="same"),
        (5, 5, 2),
    ),
    Case(
        "AveragePooling2D-strided",
        "AveragePooling2D",
        lambda: L.AveragePooling2D(3, strides=2),
        lambda: keras.layers.AveragePooling2D(3, strides=2),
        (7, 6, 3),
    ),
    Case(
        "BatchNormalization",
        "BatchNormalization",
        lambda: L.BatchNormalization(epsilon=1e-2),
        lambda: keras.layers.BatchNormalization(epsilon=1e-2),
        (6,),
    ),
    Case(
        "BatchNormalization-image",
        "BatchNormalization",
        lambda: L.BatchNormalization(center=False),
        lambda: keras.layers.BatchNormalization(center=False),
        (4, 4, 3),
    ),
    Case(
        "Conv2D",
        "Conv2D",
        lambda: L.Conv2D(3, 3, strides=2, padding="same"),
        lambda: keras.layers.Conv2D(3, 3, strides=2, padding="same"),
        (7, 6, 2),
    ),
    Case(
        "Conv2D-valid-nobias",
        "Conv2D",
        lambda: L.Conv2D(4, (2, 3), use_bias=False),
        lambda: keras.layers.Conv2D(4, (2, 3), use_bias=False),
        (5, 5, 1),
    ),
    Case("Dense", "Dense", lambda: L.Dense(4), lambda: keras.layers.Dense(4), (6,)),
    Case(
        "Dense-ibp-init",
        "Dense",
        lambda: L.Dense(4, kernel_initializer="ibp", use_bias=False),
        lambda: keras.layers.Dense(4, use_bias=False),
        (6,),
    ),
    Case(
        "Dropout",
        "Dropout",
        lambda: L.Dropout(0.4),
        lambda: keras.layers.Dropout(0.4),
        (6,),
    ),
    Case(
        "ElementwiseAffine",
        "ElementwiseAffine",
        lambda: L.ElementwiseAffine(),
        _affine_reference,
        (6,),
        reference_fn=True,
    ),
    Case(
        "ElementwiseAffine-broadcast",
        "ElementwiseAffine",
        lambda: L.ElementwiseAffine((1, 4, 3)),
        _affine_reference,
        (5, 4, 3),
        reference_fn=True,
    ),
    Case(
        "Flatten",
        "Flatten",
        lambda: L.Flatten(),
        lambda: keras.layers.Flatten(),
        (3, 2, 2),
    ),
    Case(
        "GeLU",
        "GeLU",
        lambda: L.GeLU(),
        lambda: keras.layers.Activation("gelu"),
        (6,),
    ),
    Case(
        "GeLU-approximate",
        "GeLU",
        lambda: L.GeLU(approximate=True),
        lambda: keras.layers.Activation(
            lambda t: keras.activations.gelu(t, approximate=True)
        ),
        (6,),
    ),
    Case(
        "LeakyReLU",
        "LeakyReLU",
        lambda: L.LeakyReLU(negative_slope=0.2),
        lambda: keras.layers.LeakyReLU(negative_slope=0.2),
        (6,),
    ),
    Case(
        "MaxPooling2D",
        "MaxPooling2D",
        lambda: L.MaxPooling2D(2),
        lambda: keras.layers.MaxPooling2D(2),
        (4, 5, 2),
    ),
    Case(
        "MaxPooling2D-same",
        "MaxPooling2D",
        lambda: L.MaxPooling2D(3, strides=2, padding="same"),
        lambda: keras.layers.MaxPooling2D(3, strides=2, padding="same"),
        (5, 5, 2),
    ),
    Case(
        "Normalization",
        "Normalization",
        lambda: L.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.0, 2.0, 0.5]),
        lambda: keras.layers.Normalization(
            mean=[0.1, -0.2, 0.3], variance=[1.0, 2.0, 0.5]
        ),
        (3,),
    ),
    Case(
        "Permute",
        "Permute",
        lambda: L.Permute((3, 1, 2)),
        lambda: keras.layers.Permute((3, 1, 2)),
        (3, 4, 2),
    ),
    Case("ReLU", "ReLU", lambda: L.ReLU(), lambda: keras.layers.ReLU(), (6,)),
    Case(
        "Reshape",
        "Reshape",
        lambda: L.Reshape((3, 2)),
        lambda: keras.layers.Reshape((3, 2)),
        (6,),
    ),
    Case(
        "Rescaling",
        "Rescaling",
        lambda: L.Rescaling(2.0, offset=-1.0),
        lambda: keras.layers.Rescaling(2.0, offset=-1.0),
        (6,),
    ),
    Case(
        "ResidualBlock",
        "ResidualBlock",
        lambda: L.ResidualBlock(5, activation="tanh"),
        _residual_dense_reference,
        (6,),
        reference_fn=True,
    ),
    Case(
        "ResidualBlock-conv",
        "ResidualBlock",
        lambda: L.ResidualBlock(3, kernel_size=3),
        _residual_conv_reference,
        (4, 4, 2),
        reference_fn=True,
    ),
    Case(
        "Sigmoid",
        "Sigmoid",
        lambda: L.Sigmoid(),
        lambda: keras.layers.Activation("sigmoid"),
        (6,),
    ),
    Case(
        "Tanh",
        "Tanh",
        lambda: L.Tanh(),
        lambda: keras.layers.Activation("tanh"),
        (6,),
    ),
    Case(
        "ZeroPadding2D",
        "ZeroPadding2D",
        lambda: L.ZeroPadding2D(((1, 2), (0, 1))),
        lambda: keras.layers.ZeroPadding2D(((1, 2), (0, 1))),
        (3, 4, 2),
    ),
]


def _inputs(case, rng, batch=3):
    xs = [
        (2.0 * rng.normal(size=(batch, *case.shape))).astype("float32")
        for _ in range(case.arity)
    ]
    return xs if case.arity > 1 else xs[0]


def _randomize(layer, rng):
    """Give every weight (moving statistics included) a non-trivial value."""
    values = []
    for w in layer.weights:
        shape = tuple(w.shape)
        if "variance" in w.path:
            values.append(rng.uniform(0.3, 3.0, shape))
        else:
            values.append(rng.uniform(-1.0, 1.0, shape))
    layer.set_weights([v.astype("float32") for v in values])


def _built_zoo_layer(case, rng):
    layer = case.zoo()
    x = _inputs(case, rng)
    layer(x)
    _randomize(layer, rng)
    return layer, x


def test_cases_cover_every_zoo_layer():
    zoo_names = set(L.__all__) - {"Input", "register", "registered"}
    assert {case.name for case in CASES} == zoo_names
    for case in CASES:
        layer = case.zoo()
        assert type(layer) is getattr(L, case.name)
        assert type(layer).__module__.startswith("verinet.layers")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_config_round_trip(case, rng):
    layer, _ = _built_zoo_layer(case, rng)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    # The unbuilt layer's config round-trips too.
    fresh = case.zoo()
    assert type(fresh).from_config(fresh.get_config()).get_config() == (
        fresh.get_config()
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_keras_save_load(case, rng, tmp_path):
    layer = case.zoo()
    inputs = [L.Input(case.shape) for _ in range(case.arity)]
    out = layer(inputs if case.arity > 1 else inputs[0])
    model = vn.Model(inputs if case.arity > 1 else inputs[0], out)
    _randomize(layer, rng)
    x = _inputs(case, rng, batch=4)
    expected = _np(model(x, training=False))

    path = tmp_path / f"{case.id}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert type(loaded) is vn.Model
    loaded_layer = loaded.get_layer(layer.name)
    assert type(loaded_layer) is type(layer)
    assert loaded_layer.get_config() == layer.get_config()
    for a, b in zip(loaded_layer.get_weights(), layer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(_np(loaded(x, training=False)), expected)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_stock_keras(case, rng):
    layer, x = _built_zoo_layer(case, rng)
    ours = _np(layer(x, training=False))
    if case.reference_fn:
        reference = _np(case.stock(layer, x))
    else:
        stock = case.stock()
        stock(x)
        stock.set_weights(layer.get_weights())
        reference = _np(stock(x, training=False))
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)


def test_dropout_is_identity_in_inference_only():
    x = np.ones((8, 200), "float32")
    layer = L.Dropout(0.5)
    np.testing.assert_array_equal(_np(layer(x, training=False)), x)
    dropped = _np(layer(x, training=True))
    zero_fraction = float(np.mean(dropped == 0))
    assert 0.35 < zero_fraction < 0.65
    np.testing.assert_allclose(dropped[dropped != 0], 2.0, rtol=1e-6)


def test_batch_norm_uses_moving_statistics_in_inference(rng):
    layer = L.BatchNormalization(epsilon=1e-3)
    layer.build((None, 4))
    gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.2, 3, 4)
    layer.set_weights([a.astype("float32") for a in (gamma, beta, mean, var)])
    x = rng.normal(size=(5, 4)).astype("float32")
    expected = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(_np(layer(x, training=False)), expected, rtol=1e-5)


# --- GeLU --------------------------------------------------------------------

_GELU_X = np.linspace(-8.0, 8.0, 4001, dtype=np.float32)


def test_gelu_default_is_exact_erf_form():
    layer = L.GeLU()
    assert layer.approximate is False
    assert layer.get_config()["approximate"] is False
    ours = _np(layer(_GELU_X[None]))[0]
    exact = torch.nn.functional.gelu(torch.from_numpy(_GELU_X)).numpy()
    np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-6)
    # The tanh approximation differs by far more than the tolerance, so the
    # check above really tells the two forms apart.
    tanh_form = torch.nn.functional.gelu(
        torch.from_numpy(_GELU_X), approximate="tanh"
    ).numpy()
    assert np.max(np.abs(tanh_form - exact)) > 1e-4


def test_gelu_approximate_matches_keras_tanh_form():
    layer = L.GeLU(approximate=True)
    ours = _np(layer(_GELU_X[None]))[0]
    reference = _np(keras.ops.gelu(_GELU_X, approximate=True))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)
    torch_tanh = torch.nn.functional.gelu(
        torch.from_numpy(_GELU_X), approximate="tanh"
    ).numpy()
    np.testing.assert_allclose(ours, torch_tanh, rtol=0, atol=1e-6)


def test_gelu_approximate_flag_survives_save_load(tmp_path):
    model = vn.Sequential([L.Input((5,)), L.GeLU(approximate=True)])
    path = tmp_path / "gelu.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[-1]) is L.GeLU
    assert loaded.layers[-1].approximate is True
    x = np.linspace(-3, 3, 5, dtype="float32")[None]
    np.testing.assert_array_equal(
        _np(loaded(x)), _np(keras.ops.gelu(x, approximate=True))
    )


# --- verinet models -----------------------------------------------------------


def _sequential():
    return vn.Sequential(
        [
            L.Input((4, 4, 1)),
            L.Conv2D(3, 3, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(8),
            L.GeLU(),
            L.Dense(3),
        ]
    )


def _functional():
    inputs = L.Input((6,))
    h = L.Dense(6)(inputs)
    h = L.Add()([inputs, L.ReLU()(h)])
    h = L.ResidualBlock(4)(h)
    outputs = L.Dense(3)(L.Tanh()(h))
    return vn.Model(inputs, outputs)


@pytest.mark.parametrize(
    "make, cls", [(_sequential, vn.Sequential), (_functional, vn.Model)]
)
def test_verinet_models_save_load_keep_class_and_certify(make, cls, rng, tmp_path):
    model = make()
    for layer in model.layers:
        if layer.weights:
            _randomize(layer, rng)
    shape = tuple(model.inputs[0].shape[1:])
    x = rng.uniform(0, 1, size=(6, *shape)).astype("float32")
    y = _np(model(x)).argmax(axis=1)
    expected = _np(model(x))

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert type(loaded) is cls
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    np.testing.assert_array_equal(_np(loaded(x)), expected)
    before = model.certify(x, y, 0.02, attack=None, verbose=0)
    after = loaded.certify(x, y, 0.02, attack=None, verbose=0)
    assert isinstance(after, vn.CertificationReport)
    for field in ("verified", "falsified", "unknown", "predictions"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))
    np.testing.assert_array_equal(after.margin_lower, before.margin_lower)
    # The loaded model's certificate is a real one: +inf on the label, and
    # elsewhere a finite lower bound of the clean margin f_y(x) - f_j(x).
    rows = np.arange(len(y))
    margins = after.margin_lower.copy()
    assert np.all(np.isposinf(margins[rows, y]))
    clean = expected[rows, y][:, None] - expected
    margins[rows, y] = clean[rows, y] = 0.0
    assert np.all(np.isfinite(margins))
    assert np.all(margins <= clean + 1e-5)
    low, up = loaded.bounds(x, 0.02)
    assert np.all(low <= expected + 1e-5) and np.all(expected <= up + 1e-5)


# --- refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: L.Dense(4, activation="relu"), "fused activation"),
        (lambda: L.Conv2D(4, 3, activation="tanh"), "fused activation"),
        (lambda: L.ReLU(max_value=6), "max_value"),
        (lambda: L.ReLU(negative_slope=0.1), "LeakyReLU"),
        (lambda: L.ReLU(threshold=0.5), "threshold"),
        (lambda: L.LeakyReLU(negative_slope=2), "negative_slope"),
        (lambda: L.LeakyReLU(negative_slope=-0.1), "negative_slope"),
        (lambda: L.Conv2D(4, 3, groups=2), "groups"),
        (lambda: L.Conv2D(4, 3, dilation_rate=2), "dilation_rate"),
        (lambda: L.Conv2D(4, 3, data_format="channels_first"), "channels_last"),
        (lambda: L.MaxPooling2D(2, data_format="channels_first"), "channels_last"),
        (lambda: L.BatchNormalization(axis=1), "axis=-1"),
        (lambda: L.ResidualBlock(4, activation="softplus"), "softplus"),
    ],
    ids=[
        "dense-relu",
        "conv-tanh",
        "relu-max-value",
        "relu-slope",
        "relu-threshold",
        "leaky-slope-2",
        "leaky-slope-negative",
        "conv-groups",
        "conv-dilation",
        "conv-channels-first",
        "maxpool-channels-first",
        "bn-axis",
        "residual-activation",
    ],
)
def test_refuses_unboundable_configuration(make, match):
    with pytest.raises(vn.InvalidInputError, match=match):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.Dense(4, activation=keras.activations.relu),
        lambda: L.Conv2D(4, 3, activation=keras.activations.relu),
    ],
    ids=["dense", "conv"],
)
def test_refuses_callable_fused_activation(make):
    with pytest.raises(vn.InvalidInputError):
        make()


def test_linear_activation_is_accepted():
    layer = L.Dense(3, activation="linear")
    x = np.array([[-1.0, 2.0]], "float32")
    layer(x)
    layer.set_weights([np.eye(2, 3, dtype="float32"), np.zeros(3, "float32")])
    np.testing.assert_array_equal(_np(layer(x)), [[-1.0, 2.0, 0.0]])
