"""The layer registry: every capability a registered layer claims, checked.

Each registered layer goes into a tiny model (``CASES`` says how, where it
needs arguments or another input shape) with random weights; then its config
round trip, its IBP and CROWN bounds, each ``converts_from`` class, its ONNX
export and import, and batch-norm folding (where claimed) are checked. A
layer added with ``vn.layers.register`` is picked up here automatically.
"""

import verinet as vn  # noqa: I001 - verinet before keras

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest
from soundness_utils import (
    assert_contains,
    empirical_extremes,
    iter_layers,
    randomize_weights,
)

from verinet import layers as L
from verinet.errors import OnnxExportError
from verinet.layers import registry
from verinet.onnx import SUPPORTED_OPS, writer

EPSILON = 0.1
README = Path(__file__).resolve().parent.parent / "README.md"


@dataclasses.dataclass(frozen=True)
class Case:
    """How to put a layer into a tiny model.

    ``make()`` builds the layer; ``shape`` is the model input's shape. With
    ``arity=2`` the layer takes the input and ``Rescaling(-0.5, 0.25)`` of it.
    """

    make: Callable
    shape: tuple = (5,)
    arity: int = 1


# Layers that need arguments or another input shape; any other registered
# layer is built as ``cls()`` on inputs of shape (5,).
CASES = {
    L.Dense: Case(lambda: L.Dense(3)),
    L.Conv2D: Case(lambda: L.Conv2D(3, 3, strides=2, padding="same"), (5, 5, 2)),
    L.AveragePooling2D: Case(lambda: L.AveragePooling2D(2, padding="same"), (5, 5, 2)),
    L.MaxPooling2D: Case(lambda: L.MaxPooling2D(2), (4, 4, 2)),
    L.ZeroPadding2D: Case(lambda: L.ZeroPadding2D(((1, 0), (0, 2))), (3, 3, 2)),
    L.Flatten: Case(L.Flatten, (3, 2, 2)),
    L.Reshape: Case(lambda: L.Reshape((3, 2)), (6,)),
    L.Permute: Case(lambda: L.Permute((2, 1)), (3, 2)),
    L.LeakyReLU: Case(lambda: L.LeakyReLU(0.1)),
    L.Dropout: Case(lambda: L.Dropout(0.5)),
    L.Add: Case(L.Add, arity=2),
    L.ResidualBlock: Case(lambda: L.ResidualBlock(3), (4,)),
    L.Rescaling: Case(lambda: L.Rescaling(-2.0, offset=0.5)),
    L.Normalization: Case(
        lambda: L.Normalization(
            mean=[0.5, -1.0, 0.0, 2.0, 0.1], variance=[0.25, 4.0, 1.0, 0.5, 2.0]
        )
    ),
}

SPECS = registry.registered()
IDS = [spec.name for spec in SPECS]


def _case(spec):
    return CASES.get(spec.layer, Case(spec.layer))


def _inputs(shape, rng, batch=3):
    return rng.normal(size=(batch, *shape)).astype("float32")


def _randomize(model, rng):
    """Random kernels, biases and batch-norm statistics; random affine maps."""
    randomize_weights(model, rng)
    for layer in iter_layers(model):
        if type(layer) is L.ElementwiseAffine:
            layer.set_weights(
                [rng.uniform(-2, 2, w.shape).astype("float32") for w in layer.weights]
            )
    return model


def _model(layer, case, stock=False, after=()):
    """``Input -> layer -> after...``; a second input is a rescaled copy."""
    inputs = keras.Input(case.shape)
    rescale = keras.layers.Rescaling if stock else L.Rescaling
    args = inputs if case.arity == 1 else [inputs, rescale(-0.5, offset=0.25)(inputs)]
    x = layer(args)
    for extra in after:
        x = extra(x)
    return keras.Model(inputs, x)


def _tiny(spec, rng, after=()):
    case = _case(spec)
    layer = case.make()
    assert type(layer) is spec.layer
    return _randomize(_model(layer, case, after=after), rng), layer, case


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _assert_close(got, expected, tol=1e-5):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, atol=tol * scale, rtol=0)


def _types(model):
    return [type(layer) for layer in iter_layers(model)]


def test_every_zoo_layer_is_registered_once():
    names = {n for n in L.__all__ if isinstance(getattr(L, n), type)}
    assert IDS == sorted(names)
    assert len({spec.layer for spec in SPECS}) == len(SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_config_round_trip(spec, rng):
    model, layer, case = _tiny(spec, rng)
    clone = spec.layer.from_config(layer.get_config())
    x = _inputs(case.shape, rng)
    args = x if case.arity == 1 else [x, -x]
    clone(args)  # build
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(_np(clone(args)), _np(layer(args)))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bounds_contain_sampled_outputs(spec, rng):
    model, _, case = _tiny(spec, rng)
    x = _inputs(case.shape, rng, batch=2)
    extremes = empirical_extremes(
        model, x, EPSILON, n_samples=48, n_extreme=48, pgd_steps=8, pgd_restarts=1
    )
    for method in ("ibp", "crown"):
        lower, upper = vn.compute_bounds(model, x, EPSILON, method=method)
        assert_contains(lower, upper, extremes, f"{spec.name}/{method}")


def _stock_cases(spec):
    """``(label, stock layer factory)`` for each stock form ``spec`` claims."""
    cases = [
        (cls.__name__, lambda cls=cls: cls.from_config(_case(spec).make().get_config()))
        for cls in spec.converts_from
    ]
    if spec.activation:
        name = spec.activation
        cases.append(("Activation", lambda: keras.layers.Activation(name)))
    return cases


CONVERSIONS = [
    (spec, label, make) for spec in SPECS for label, make in _stock_cases(spec)
]


@pytest.mark.parametrize(
    "spec, label, make",
    CONVERSIONS,
    ids=[f"{spec.name}-from-{label}" for spec, label, _ in CONVERSIONS],
)
def test_convert_maps_each_stock_class(spec, label, make, rng):
    zoo, _, case = _tiny(spec, rng)
    stock = _model(make(), case, stock=True)
    stock.set_weights(zoo.get_weights())  # the same random weights
    converted = vn.convert(stock)
    assert spec.layer in _types(converted)
    x = _inputs(case.shape, rng)
    _assert_close(_np(converted(x, training=False)), _np(stock(x, training=False)))


def test_fused_activations_convert_to_their_layers(rng):
    for spec in SPECS:
        if not spec.activation:
            continue
        stock = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(5, activation=spec.activation)]
        )
        converted = vn.convert(stock)
        assert _types(converted)[-2:] == [L.Dense, spec.layer]
        x = _inputs((4,), rng)
        _assert_close(_np(converted(x)), _np(stock(x)))


EXPORTERS = [spec for spec in SPECS if spec.onnx_export or spec.composite]


def _run_ort(proto, x):
    session = ort.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("spec", EXPORTERS, ids=[s.name for s in EXPORTERS])
def test_onnx_round_trip(spec, rng, tmp_path):
    model, _, case = _tiny(spec, rng)
    x = _inputs(case.shape, rng)
    expected = _np(model(x, training=False))
    # The emitter itself, on the model as it is (vn.deploy would fold batch
    # norm and drop dropout before export_onnx writes them).
    assert spec.composite or callable(spec.emitter())
    _assert_close(_run_ort(writer.build_graph(model, 18), x), expected)
    path = os.fspath(tmp_path / "layer.onnx")
    vn.export_onnx(model, path)
    imported = vn.from_onnx(path)
    _assert_close(_np(imported(x, training=False)), expected)
    assert set(spec.onnx_import) <= set(SUPPORTED_OPS)
    if spec.onnx_import:
        assert spec.layer in _types(imported)


FOLDERS = [spec for spec in SPECS if spec.folds_batch_norm]


@pytest.mark.parametrize("spec", FOLDERS, ids=[s.name for s in FOLDERS])
def test_batch_norm_folds_into_the_layer(spec, rng):
    model, layer, case = _tiny(spec, rng, after=[L.BatchNormalization()])
    x = _inputs(case.shape, rng, batch=8)
    deployed = vn.deploy(model)
    assert L.BatchNormalization not in _types(deployed)
    assert L.ElementwiseAffine not in _types(deployed)
    assert spec.layer in _types(deployed)
    _assert_close(_np(deployed(x, training=False)), _np(model(x, training=False)))


# --- a user's layer -----------------------------------------------------------


class Scaled(L.Dense):
    """``2 * Dense(x)``, with its bound rules."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)

    def interval(self, lower, upper):
        low, up = super().interval(lower, upper)
        return 2.0 * low, 2.0 * up

    def backward_affine(self, A, input_shape):
        A_in, bias = super().backward_affine(A, input_shape)
        return 2.0 * A_in, None if bias is None else 2.0 * bias


class StockScaled(keras.layers.Dense):
    """The stock Keras layer a user's model holds."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


@pytest.fixture
def own_registry(monkeypatch):
    """Registrations made by a test end with it."""
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))


def _user_models():
    mixed = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6), keras.layers.ReLU(), Scaled(3)]
    )
    stock = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6), keras.layers.ReLU(), StockScaled(3)]
    )
    stock.layers[-1].set_weights(mixed.layers[-1].get_weights())
    stock.layers[0].set_weights(mixed.layers[0].get_weights())
    return mixed, stock


def test_registering_a_user_layer_lets_convert_and_bounds_take_it(own_registry, rng):
    mixed, stock = _user_models()
    x = _inputs((4,), rng, batch=2)
    for model in (mixed, stock):
        with pytest.raises(vn.UnsupportedLayerError, match="Scaled"):
            vn.convert(model)
    with pytest.raises(vn.UnsupportedLayerError):
        vn.compute_bounds(mixed, x, EPSILON)

    spec = vn.layers.register(Scaled, converts_from=(StockScaled,))
    assert spec in vn.layers.registered()
    assert registry.converter_for(StockScaled) is spec
    for model in (mixed, stock):
        converted = vn.convert(model)
        assert _types(converted)[-1] is Scaled
        _assert_close(_np(converted(x)), _np(model(x)))
        extremes = empirical_extremes(model, x, EPSILON, n_samples=32, n_extreme=32)
        for method in ("ibp", "crown"):
            lower, upper = vn.compute_bounds(model, x, EPSILON, method=method)
            assert_contains(lower, upper, extremes, f"user layer/{method}")
    # A stock layer the registry does not know is refused by a message that
    # lists the stock classes vn.convert maps, the new one included.
    unknown = keras.Sequential([keras.Input((4,)), keras.layers.Softmax()])
    with pytest.raises(vn.UnsupportedLayerError) as info:
        vn.convert(unknown)
    for name in registry.convertible_names():
        assert name in str(info.value)
    assert "StockScaled" in registry.convertible_names()


def test_a_user_layer_is_not_folded_or_exported_unless_it_says_so(
    own_registry, rng, tmp_path
):
    vn.layers.register(Scaled)
    model = _randomize(
        vn.Sequential([L.Input((4,)), Scaled(3), L.BatchNormalization()]), rng
    )
    deployed = vn.deploy(model)
    # Not folded (it inherits fold_affine, but its spec does not claim it).
    assert _types(deployed) == [keras.layers.InputLayer, Scaled, L.ElementwiseAffine]
    x = _inputs((4,), rng, batch=8)
    _assert_close(_np(deployed(x)), _np(model(x)))
    with pytest.raises(OnnxExportError) as info:
        vn.export_onnx(model, tmp_path / "scaled.onnx")
    assert "Scaled" in str(info.value)
    for name in registry.exportable_names():
        assert name in str(info.value)


class _NoRules(keras.layers.Layer):
    def call(self, inputs):
        return inputs


class _NoFold(keras.layers.Layer, vn.layers.base.IdentityRule):
    def call(self, inputs):
        return inputs


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((int,), {}, "Keras layer class"),
        ((L.Dense(3),), {}, "Keras layer class"),
        ((_NoRules,), {}, "no bound rules"),
        ((L.Dense,), {}, "already registered"),
        ((Scaled,), {"converts_from": (keras.layers.Dense,)}, "already maps Dense"),
        ((Scaled,), {"converts_from": (np.ndarray,)}, "converts_from"),
        ((Scaled,), {"activation": "relu"}, "already computed by ReLU"),
        ((_NoFold,), {"folds_batch_norm": True}, "fold_affine"),
        ((Scaled,), {"onnx_export": "no_colon"}, "module:function"),
    ],
    ids=[
        "not-a-class",
        "an-instance",
        "no-bound-rules",
        "duplicate",
        "stock-class-taken",
        "stock-not-a-layer",
        "activation-taken",
        "fold-without-method",
        "bad-reference",
    ],
)
def test_bad_registrations_are_refused(own_registry, args, kwargs, message):
    before = vn.layers.registered()
    with pytest.raises(vn.InvalidInputError, match=message):
        vn.layers.register(*args, **kwargs)
    assert vn.layers.registered() == before


# --- the README ---------------------------------------------------------------


def test_readme_layer_table_is_the_registry_table():
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- layer-table:start -->\n", "<!-- layer-table:end -->"
    assert text.count(start) == 1 and text.count(end) == 1
    table = text.split(start)[1].split(end)[0]
    assert table == registry.support_table(), (
        "README.md's layer table is out of date: paste "
        "verinet.layers.registry.support_table() between the markers."
    )
