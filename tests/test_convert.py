"""vn.convert: stock Keras models onto the layer zoo, and its refusals."""

import keras
import numpy as np
import pytest
from keras import layers as K

import verinet as vn


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _set_bn_stats(bn, rng):
    """Non-trivial gamma, beta, moving mean and moving variance."""
    channels = bn.get_weights()[0].shape[0]
    bn.set_weights(
        [
            rng.uniform(0.5, 2.0, channels).astype("float32"),
            rng.normal(size=channels).astype("float32"),
            rng.normal(size=channels).astype("float32"),
            rng.uniform(0.2, 3.0, channels).astype("float32"),
        ]
    )


def _randomize_biases(model, rng):
    for layer in model.layers:
        if isinstance(layer, (K.Dense, K.Conv2D)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.3, bias.shape).astype("f4")])


def _assert_all_verinet(model):
    assert isinstance(model, vn.Model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        assert type(layer).__module__.startswith("verinet."), (
            f"{layer.name} is {type(layer).__module__}.{type(layer).__name__}"
        )


def _assert_same_function(stock, converted, x):
    expected = _np(stock(x, training=False))
    got = _np(converted(x, training=False))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The bound rules agree with the forward pass: at epsilon 0 the bounds
    # collapse onto the stock model's output (shaped like it).
    low, up = vn.compute_bounds(converted, x, 0.0, method="ibp")
    assert low.shape == expected.shape
    np.testing.assert_allclose(low, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(up, expected, rtol=1e-4, atol=1e-4)


def _stock_sequential(rng):
    model = keras.Sequential(
        [
            K.Input((8, 8, 1)),
            K.Rescaling(2.0, offset=-1.0),
            K.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
            K.BatchNormalization(),
            K.Conv2D(6, 3, padding="same"),
            K.ReLU(),
            K.AveragePooling2D(2),
            K.Activation("linear"),
            K.Flatten(),
            K.Dropout(0.5),
            K.Dense(16, activation="gelu"),
            K.Dense(12, activation="sigmoid"),
            K.Dense(12, activation="tanh"),
            K.Dense(8),
            K.Activation("relu"),
            K.Dense(5),
        ]
    )
    _set_bn_stats(model.layers[2], rng)
    _randomize_biases(model, rng)
    return model


def _stock_functional(rng):
    inputs = keras.Input((8, 8, 1))
    h = K.Rescaling(1.0 / 0.5)(inputs)
    h = K.Conv2D(4, 3, strides=2, padding="same")(h)
    bn = K.BatchNormalization()
    h = bn(h)
    h = K.ReLU()(h)
    skip = h
    h = K.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = K.Dropout(0.3)(h)
    h = K.Add()([skip, h])
    h = K.MaxPooling2D(2)(h)
    h = K.Activation("relu")(h)
    h = K.Flatten()(h)
    h = K.Dense(10, activation="tanh")(h)
    outputs = K.Dense(4)(h)
    model = keras.Model(inputs, outputs)
    _set_bn_stats(bn, rng)
    _randomize_biases(model, rng)
    return model


@pytest.mark.parametrize("make", [_stock_sequential, _stock_functional])
def test_convert_matches_stock_model(make, rng):
    stock = make(rng)
    converted = vn.convert(stock)
    _assert_all_verinet(converted)
    x = rng.uniform(0, 1, size=(6, 8, 8, 1)).astype("float32")
    _assert_same_function(stock, converted, x)


def test_convert_keeps_the_stock_model_and_copies_weights(rng):
    stock = _stock_sequential(rng)
    x = rng.uniform(0, 1, size=(4, 8, 8, 1)).astype("float32")
    before = _np(stock(x))
    converted = vn.convert(stock)
    assert all(
        not type(layer).__module__.startswith("verinet") for layer in stock.layers
    )
    # The weights are copies: zeroing the converted model leaves the stock one.
    for layer in converted.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_array_equal(_np(stock(x)), before)


def test_convert_batch_norm_uses_moving_statistics(rng):
    stock = keras.Sequential([K.Input((5,)), K.BatchNormalization(epsilon=1e-3)])
    _set_bn_stats(stock.layers[0], rng)
    gamma, beta, mean, var = stock.layers[0].get_weights()
    converted = vn.convert(stock)
    (bn,) = [layer for layer in converted.layers if "BatchNorm" in type(layer).__name__]
    assert type(bn) is vn.layers.BatchNormalization
    x = rng.normal(size=(3, 5)).astype("float32")
    expected = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(_np(converted(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "activation, zoo_class",
    [
        ("relu", "ReLU"),
        ("gelu", "GeLU"),
        ("sigmoid", "Sigmoid"),
        ("tanh", "Tanh"),
    ],
)
@pytest.mark.parametrize("where", ["dense", "conv", "activation-layer"])
def test_fused_activation_becomes_its_own_layer(activation, zoo_class, where, rng):
    if where == "dense":
        stock = keras.Sequential([K.Input((6,)), K.Dense(5, activation=activation)])
        x = rng.normal(0, 2, size=(4, 6)).astype("float32")
    elif where == "conv":
        stock = keras.Sequential(
            [K.Input((5, 5, 2)), K.Conv2D(3, 3, activation=activation)]
        )
        x = rng.normal(0, 2, size=(4, 5, 5, 2)).astype("float32")
    else:
        stock = keras.Sequential([K.Input((6,)), K.Dense(5), K.Activation(activation)])
        x = rng.normal(0, 2, size=(4, 6)).astype("float32")
    _randomize_biases(stock, rng)
    converted = vn.convert(stock)
    _assert_all_verinet(converted)
    names = [type(layer).__name__ for layer in converted.layers[1:]]
    assert names == ["Conv2D" if where == "conv" else "Dense", zoo_class]
    linear = converted.layers[1]
    assert linear.get_config()["activation"] in (None, "linear")
    _assert_same_function(stock, converted, x)


def test_callable_activation_is_converted(rng):
    stock = keras.Sequential(
        [K.Input((6,)), K.Dense(5, activation=keras.activations.tanh)]
    )
    converted = vn.convert(stock)
    assert [type(layer).__name__ for layer in converted.layers[1:]] == [
        "Dense",
        "Tanh",
    ]
    _assert_same_function(stock, converted, rng.normal(size=(3, 6)).astype("f4"))


@pytest.mark.parametrize(
    "layer, zoo_class",
    [
        (lambda: K.ReLU(), "ReLU"),
        (lambda: K.ReLU(negative_slope=0.1), "LeakyReLU"),
        (lambda: K.LeakyReLU(negative_slope=0.2), "LeakyReLU"),
        (lambda: K.Activation("linear"), None),
    ],
    ids=["relu", "relu-slope", "leaky", "linear"],
)
def test_activation_layers(layer, zoo_class, rng):
    stock = keras.Sequential([K.Input((6,)), K.Dense(6), layer()])
    converted = vn.convert(stock)
    expected = ["Dense"] + ([zoo_class] if zoo_class else [])
    assert [type(lay).__name__ for lay in converted.layers[1:]] == expected
    _assert_same_function(stock, converted, rng.normal(size=(5, 6)).astype("f4"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.Sequential([K.Input((6,)), K.Activation("leaky_relu")]),
        lambda: keras.Sequential([K.Input((6,)), K.Dense(6, activation="leaky_relu")]),
    ],
    ids=["activation-layer", "fused"],
)
def test_leaky_relu_activation_keeps_keras_slope(make, rng):
    stock = make()
    x = rng.normal(0, 2, size=(5, 6)).astype("float32")
    np.testing.assert_allclose(
        _np(vn.convert(stock)(x)), _np(stock(x)), rtol=1e-5, atol=1e-5
    )


def test_convert_other_mappable_layers(rng):
    norm = K.Normalization()
    norm.adapt(rng.normal(3.0, 2.0, size=(64, 12)).astype("float32"))
    stock = keras.Sequential(
        [
            K.Input((12,)),
            norm,
            K.Reshape((2, 2, 3)),
            K.Conv2D(2, 1, use_bias=False),
            K.Flatten(),
            K.Dense(3),
        ]
    )
    converted = vn.convert(stock)
    _assert_all_verinet(converted)
    x = rng.normal(3.0, 2.0, size=(4, 12)).astype("float32")
    _assert_same_function(stock, converted, x)


def test_convert_nested_sequential_inside_functional(rng):
    inner = keras.Sequential([K.Input((6,)), K.Dense(6, activation="relu")])
    inputs = keras.Input((6,))
    h = K.Add()([inputs, inner(inputs)])
    model = keras.Model(inputs, K.Dense(3)(h))
    converted = vn.convert(model)
    _assert_all_verinet(converted)
    _assert_same_function(model, converted, rng.normal(size=(4, 6)).astype("f4"))


def test_convert_verinet_model_is_identity_function(rng):
    model = vn.Sequential([vn.layers.Input((6,)), vn.layers.Dense(4), vn.layers.ReLU()])
    converted = vn.convert(model)
    _assert_all_verinet(converted)
    _assert_same_function(model, converted, rng.normal(size=(3, 6)).astype("f4"))


def test_convert_permute_and_zero_padding(rng):
    # Non-square, asymmetric padding and a permutation that swaps H and W:
    # any slip in axes or padding changes the outputs.
    stock = keras.Sequential(
        [
            K.Input((6, 4, 2)),
            K.ZeroPadding2D(((1, 2), (0, 1))),
            K.Conv2D(3, 3, activation="relu"),
            K.Permute((2, 1, 3)),
            K.ZeroPadding2D(1),
            K.Flatten(),
            K.Dense(5),
        ]
    )
    _randomize_biases(stock, rng)
    converted = vn.convert(stock)
    _assert_all_verinet(converted)
    names = [type(layer).__name__ for layer in converted.layers[1:]]
    assert names[0] == "ZeroPadding2D" and "Permute" in names
    x = rng.uniform(0, 1, size=(4, 6, 4, 2)).astype("float32")
    _assert_same_function(stock, converted, x)


def test_convert_batch_norm_with_positive_last_axis(rng):
    stock = keras.Sequential(
        [K.Input((3, 4, 5)), K.Conv2D(2, 1), K.BatchNormalization(axis=3)]
    )
    _set_bn_stats(stock.layers[1], rng)
    converted = vn.convert(stock)
    _assert_all_verinet(converted)
    _assert_same_function(
        stock, converted, rng.normal(size=(3, 3, 4, 5)).astype("float32")
    )


def test_convert_channels_first_flatten_keeps_keras_order(rng):
    # Keras moves the channel axis last before flattening a channels_first
    # input; the converted model must do the same in its outputs and in its
    # CROWN coefficients.
    stock = keras.Sequential(
        [K.Input((2, 3, 4)), K.Flatten(data_format="channels_first"), K.Dense(6)]
    )
    _randomize_biases(stock, rng)
    converted = vn.convert(stock)
    _assert_all_verinet(converted)
    x = rng.uniform(0, 1, size=(5, 2, 3, 4)).astype("float32")
    _assert_same_function(stock, converted, x)
    # A single affine map: its exact bounds over the box are y -/+ eps |W| 1.
    eps = 0.1
    kernel = stock.layers[-1].get_weights()[0]
    y = _np(stock(x))
    spread = eps * np.abs(kernel).sum(axis=0)
    low, up = vn.compute_bounds(converted, x, eps, method="crown")
    np.testing.assert_allclose(_np(low), y - spread, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_np(up), y + spread, rtol=1e-4, atol=1e-4)


# --- refusals -------------------------------------------------------------------

_UNSUPPORTED = [
    ("lstm", "LSTM", lambda: keras.Sequential([K.Input((4, 3)), K.LSTM(2)])),
    (
        "softmax",
        "Softmax",
        lambda: keras.Sequential([K.Input((4,)), K.Dense(3), K.Softmax()]),
    ),
    (
        "act_softplus",
        "Activation",
        lambda: keras.Sequential(
            [K.Input((4,)), K.Dense(3), K.Activation("softplus", name="act_softplus")]
        ),
    ),
    (
        "dense_softplus",
        "Dense",
        lambda: keras.Sequential(
            [K.Input((4,)), K.Dense(3, activation="softplus", name="dense_softplus")]
        ),
    ),
    (
        "relu6",
        "ReLU",
        lambda: keras.Sequential([K.Input((4,)), K.ReLU(max_value=6.0, name="relu6")]),
    ),
]


def _unsupported_model(make, layer_name):
    model = make()
    # Name the layer explicitly where Keras numbered it.
    layer = [lay for lay in model.layers if lay.name.startswith(layer_name)][0]
    return model, layer.name


@pytest.mark.parametrize(
    "layer_name, class_name, make", _UNSUPPORTED, ids=[u[0] for u in _UNSUPPORTED]
)
def test_unsupported_layer_is_named(layer_name, class_name, make):
    model, name = _unsupported_model(make, layer_name)
    with pytest.raises(vn.UnsupportedLayerError) as info:
        vn.convert(model)
    message = str(info.value)
    assert repr(name) in message
    assert class_name in message
    assert "Dense" in message and "Conv2D" in message and "ReLU" in message
    # UnsupportedLayerError is also a TypeError and a VerinetError.
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, vn.VerinetError)


@pytest.mark.parametrize(
    "layer_name, class_name, make", _UNSUPPORTED, ids=[u[0] for u in _UNSUPPORTED]
)
def test_bounds_and_certify_refuse_unsupported_stock_model(
    layer_name, class_name, make
):
    model, _ = _unsupported_model(make, layer_name)
    shape = tuple(model.inputs[0].shape[1:])
    x = np.zeros((2, *shape), "float32")
    y = np.zeros(2, "int64")
    with pytest.raises(vn.UnsupportedLayerError, match="vn.convert"):
        vn.compute_bounds(model, x, 0.1)
    with pytest.raises(vn.UnsupportedLayerError, match="vn.convert"):
        vn.margin_bounds(model, x, y, 0.1)
    with pytest.raises(vn.UnsupportedLayerError) as info:
        vn.certify(model, x, y, 0.1, verbose=0)
    assert class_name in str(info.value)


def _lora_dense():
    model = keras.Sequential([K.Input((4,)), K.Dense(3, name="lora_dense")])
    model.layers[0].enable_lora(2)
    return model


# (model, layer name, unsupported setting as the message shows it, supported)
_UNSUPPORTED_SETTINGS = {
    "conv-dilation": (
        lambda: keras.Sequential(
            [K.Input((7, 7, 2)), K.Conv2D(3, 3, dilation_rate=2, name="dilated")]
        ),
        "dilated",
        "dilation_rate=(2, 2)",
        "dilation_rate=1",
    ),
    "conv-groups": (
        lambda: keras.Sequential(
            [K.Input((5, 5, 4)), K.Conv2D(4, 3, groups=2, name="grouped")]
        ),
        "grouped",
        "groups=2",
        "groups=1",
    ),
    "conv-channels-first": (
        lambda: keras.Sequential(
            [
                K.Input((2, 5, 5)),
                K.Conv2D(3, 3, data_format="channels_first", name="cf_conv"),
            ]
        ),
        "cf_conv",
        "data_format='channels_first'",
        "data_format='channels_last'",
    ),
    "maxpool-channels-first": (
        lambda: keras.Sequential(
            [K.Input((2, 4, 4)), K.MaxPooling2D(data_format="channels_first")]
        ),
        "max_pooling2d",
        "data_format='channels_first'",
        "data_format='channels_last'",
    ),
    "avgpool-channels-first": (
        lambda: keras.Sequential(
            [K.Input((2, 4, 4)), K.AveragePooling2D(2, data_format="channels_first")]
        ),
        "average_pooling2d",
        "data_format='channels_first'",
        "data_format='channels_last'",
    ),
    "padding-channels-first": (
        lambda: keras.Sequential(
            [K.Input((2, 4, 4)), K.ZeroPadding2D(data_format="channels_first")]
        ),
        "zero_padding2d",
        "data_format='channels_first'",
        "data_format='channels_last'",
    ),
    "batchnorm-axis": (
        lambda: keras.Sequential(
            [K.Input((2, 4, 4)), K.BatchNormalization(axis=1, name="bn_axis1")]
        ),
        "bn_axis1",
        "axis=1",
        "axis=-1",
    ),
    "batchnorm-renorm": (
        lambda: keras.Sequential(
            [K.Input((4,)), K.BatchNormalization(renorm=True, name="bn_renorm")]
        ),
        "bn_renorm",
        "renorm=True",
        "renorm=False",
    ),
    "dense-lora": (_lora_dense, "lora_dense", "LoRA", "plain kernels"),
}


@pytest.mark.parametrize(
    "make, layer_name, setting, supported",
    list(_UNSUPPORTED_SETTINGS.values()),
    ids=list(_UNSUPPORTED_SETTINGS),
)
def test_unsupported_setting_is_refused_by_name(make, layer_name, setting, supported):
    model, name = _unsupported_model(make, layer_name)
    with pytest.raises(vn.UnsupportedLayerError) as info:
        vn.convert(model)
    message = str(info.value)
    assert repr(name) in message
    assert setting in message
    assert f"with {supported}" in message


def test_convert_refuses_non_models_and_multi_io():
    with pytest.raises(vn.InvalidInputError):
        vn.convert(K.Dense(3))
    a, b = keras.Input((3,)), keras.Input((3,))
    two_inputs = keras.Model([a, b], K.Add()([a, b]))
    with pytest.raises(vn.InvalidInputError, match="one input"):
        vn.convert(two_inputs)


# --- certify on stock models --------------------------------------------------------


def test_certify_converts_stock_model(rng):
    stock = keras.Sequential(
        [
            K.Input((4, 4, 1)),
            K.Conv2D(3, 3, padding="same", activation="relu"),
            K.Flatten(),
            K.Dense(10, activation="relu"),
            K.Dense(3),
        ]
    )
    _randomize_biases(stock, rng)
    x = rng.uniform(0, 1, size=(20, 4, 4, 1)).astype("float32")
    y = _np(stock(x)).argmax(axis=1)
    y[:3] = (y[:3] + 1) % 3  # three misclassified samples
    options = {"steps": 5, "restarts": 1}

    direct = vn.certify(
        stock, x, y, 0.01, input_range=(0, 1), verbose=0, attack_options=options
    )
    via_convert = vn.certify(
        vn.convert(stock),
        x,
        y,
        0.01,
        input_range=(0, 1),
        verbose=0,
        attack_options=options,
    )
    np.testing.assert_array_equal(direct.predictions, via_convert.predictions)
    np.testing.assert_array_equal(direct.verified, via_convert.verified)
    np.testing.assert_array_equal(direct.falsified, via_convert.falsified)
    np.testing.assert_allclose(
        direct.margin_lower, via_convert.margin_lower, rtol=1e-5, atol=1e-5
    )
    assert direct.falsified[:3].all()
    # Correct samples at a tiny radius are mostly proven.
    assert direct.verified[3:].mean() >= 0.5
    # The stock model is unchanged and still stock.
    assert type(stock.layers[0]) is K.Conv2D
