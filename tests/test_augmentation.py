"""Augmentation and noise layers: the identity at inference, so the bound
graph passes through them, ``deploy`` drops them and training keeps them;
objectives that need no bounds accept layers without bound rules."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from soundness_utils import randomize_weights

import verinet as vn
from verinet import layers
from verinet.layers.augmentation import INFERENCE_IDENTITY
from verinet.objectives.base import Context

# Constructor arguments that make each layer change its input in training.
_ARGS = {
    "AlphaDropout": {"rate": 0.5},
    "GaussianDropout": {"rate": 0.5},
    "GaussianNoise": {"stddev": 0.5},
    "RandomBrightness": {"factor": 0.5, "value_range": (0, 1)},
    "RandomColorDegeneration": {"factor": 0.9, "value_range": (0, 1)},
    "RandomColorJitter": {"value_range": (0, 1), "brightness_factor": 0.5},
    "RandomContrast": {"factor": 0.9, "value_range": (0, 1)},
    "RandomElasticTransform": {"factor": 1.0, "scale": 1.0, "value_range": (0, 1)},
    "RandomErasing": {"factor": 1.0, "value_range": (0, 1)},
    "RandomFlip": {},
    "RandomGaussianBlur": {"factor": 1.0, "value_range": (0, 1)},
    "RandomGrayscale": {"factor": 1.0},
    "RandomHue": {"factor": 0.9, "value_range": (0, 1)},
    "RandomInvert": {"factor": 1.0, "value_range": (0, 1)},
    "RandomPerspective": {"factor": 1.0},
    "RandomPosterization": {"factor": (1, 2), "value_range": (0, 1)},
    "RandomRotation": {"factor": 0.4},
    "RandomSaturation": {"factor": 0.9, "value_range": (0, 1)},
    "RandomSharpness": {"factor": 0.9, "value_range": (0, 1)},
    "RandomShear": {"x_factor": 0.5, "y_factor": 0.5},
    "RandomTranslation": {"height_factor": 0.4, "width_factor": 0.4},
    "RandomZoom": {"height_factor": 0.5},
    "SpatialDropout1D": {"rate": 0.5},
    "SpatialDropout2D": {"rate": 0.5},
    "SpatialDropout3D": {"rate": 0.5},
}


def _build(cls):
    return cls(**_ARGS[cls.__name__])


def _input_for(cls, rng):
    shape = {"SpatialDropout1D": (2, 8, 3), "SpatialDropout3D": (2, 4, 4, 4, 3)}
    return rng.uniform(0, 1, shape.get(cls.__name__, (2, 8, 8, 3))).astype("float32")


@pytest.mark.parametrize("cls", sorted(INFERENCE_IDENTITY, key=lambda c: c.__name__))
def test_each_listed_layer_is_the_identity_at_inference(cls):
    """The list may only hold layers that change nothing at inference."""
    rng = np.random.default_rng(0)
    layer = _build(cls)
    x = _input_for(cls, rng)
    out = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_array_equal(out, x)


def _augmented_cnn():
    return keras.Sequential(
        [
            layers.Input((8, 8, 3)),
            keras.layers.RandomFlip(),
            keras.layers.RandomTranslation(0.2, 0.2),
            layers.Conv2D(4, 3, padding="same"),
            keras.layers.GaussianNoise(0.3),
            layers.ReLU(),
            keras.layers.SpatialDropout2D(0.3),
            layers.Flatten(),
            layers.Dense(5),
        ]
    )


def _without_augmentation(model):
    kept = [layer for layer in model.layers if type(layer) not in INFERENCE_IDENTITY]
    return keras.Sequential([layers.Input(model.inputs[0].shape[1:]), *kept])


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_bounds_pass_through_augmentation_layers(method):
    rng = np.random.default_rng(1)
    model = randomize_weights(_augmented_cnn(), rng)
    plain = _without_augmentation(model)  # the same layer objects
    x = rng.uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    got = vn.compute_bounds(model, x, 0.05, method=method, input_range=(0, 1))
    want = vn.compute_bounds(plain, x, 0.05, method=method, input_range=(0, 1))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # The inference model really is the plain one.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x, training=False)),
        keras.ops.convert_to_numpy(plain(x, training=False)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_deploy_drops_augmentation_layers():
    rng = np.random.default_rng(2)
    model = randomize_weights(_augmented_cnn(), rng)
    deployed = vn.deploy(model)
    kinds = {type(layer) for layer in deployed.layers}
    assert not kinds & INFERENCE_IDENTITY
    x = rng.uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(deployed(x)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_convert_keeps_augmentation_for_training():
    stock = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.RandomFlip(),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    converted = vn.convert(stock)
    assert any(type(layer) is keras.layers.RandomFlip for layer in converted.layers)
    x = np.random.default_rng(3).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(converted(x, training=False)),
        keras.ops.convert_to_numpy(stock(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )
    vn.compute_bounds(converted, x, 0.01)  # bounds the inference function


@pytest.mark.parametrize(
    "layer",
    [
        keras.layers.RandomCrop(6, 6),  # crops or resizes at inference
        type("MyFlip", (keras.layers.RandomFlip,), {})(),  # a subclass may differ
    ],
    ids=["RandomCrop", "subclass"],
)
def test_other_preprocessing_layers_are_refused(layer):
    model = keras.Sequential(
        [layers.Input((8, 8, 3)), layer, layers.Flatten(), layers.Dense(3)]
    )
    with pytest.raises(vn.UnsupportedLayerError, match="no bound rule"):
        vn.bounds.BoundGraph(model)


def test_certified_training_with_augmentation(digits_small):
    x, y = digits_small
    keras.utils.set_random_seed(0)
    model = vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            keras.layers.RandomTranslation(0.1, 0.1),
            layers.Flatten(),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(10),
        ]
    )
    model.compile("adam", robust="ibp", epsilon=0.02, input_range=(0, 1))
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    report = model.certify(x[:16], y[:16], epsilon=0.02, verbose=0)
    # Certified on the inference function, which has no augmentation.
    clean = np.argmax(keras.ops.convert_to_numpy(model(x[:16], training=False)), 1)
    np.testing.assert_array_equal(report.predictions, clean)
    assert len(report.verified) == 16


@pytest.fixture(scope="module")
def digits_small():
    (x, y), _ = vn.datasets.digits()
    return x[:256], y[:256]


def _layer_norm_mlp():
    return vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(16),
            keras.layers.LayerNormalization(),
            layers.ReLU(),
            layers.Dense(10),
        ]
    )


@pytest.mark.parametrize("robust", ["standard", "pgd", "trades", "smoothing"])
def test_objectives_without_bounds_accept_layers_without_rules(robust, digits_small):
    x, y = digits_small
    model = _layer_norm_mlp()
    options = {"steps": 2} if robust in ("pgd", "trades") else {}
    model.compile("adam", robust=robust, epsilon=0.02, input_range=(0, 1), **options)
    history = model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("robust", ["ibp", "crown-ibp"])
def test_objectives_with_bounds_refuse_layers_without_rules(robust):
    model = _layer_norm_mlp()
    with pytest.raises(vn.UnsupportedLayerError, match="LayerNormalization"):
        model.compile("adam", robust=robust, epsilon=0.02)


def test_requires_bounds_and_its_earlier_name():
    assert vn.objectives.IBP().requires_bounds
    assert vn.objectives.IBP().needs_bounds  # the earlier name still reads
    assert not vn.objectives.PGD().requires_bounds
    with pytest.warns(DeprecationWarning, match="requires_bounds"):

        class Old(vn.objectives.Standard):
            needs_bounds = True

    assert Old.requires_bounds and Old().needs_bounds
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class New(vn.objectives.Standard):
            requires_bounds = True

    assert New().needs_bounds


@pytest.mark.parametrize(
    ("epsilon", "target", "progress"),
    [
        (0.0, 0.1, 0.0),
        (0.05, 0.1, 0.5),
        (0.2, 0.1, 1.0),
        (0.0, 0.0, 1.0),
        (0.3, None, 1.0),
    ],
)
def test_context_ramp_progress(epsilon, target, progress):
    context = Context(
        None, epsilon, 0.0, "linf", None, None, True, epsilon_target=target
    )
    assert context.ramp_progress == pytest.approx(progress)


def test_context_perturbation_is_the_steps_threat_model():
    context = Context(None, 0.3, 0.0, "l2", (0.0, 1.0), None, True)
    ball = context.perturbation
    assert isinstance(ball, vn.bounds.L2Ball)
    assert ball.epsilon == 0.3 and ball.input_range == (0.0, 1.0)


def test_context_radius_per_feature():
    profile = np.array([[1.0, 0.5], [0.0, 0.25]])
    context = Context(
        None, 0.2, 0.0, "linf", (0.0, 1.0), None, True, epsilon_profile=profile
    )
    np.testing.assert_allclose(context.radius, 0.2 * profile)
    x = keras.ops.convert_to_tensor(np.full((1, 2, 2), 0.5, dtype="float32"))
    low, high = (keras.ops.convert_to_numpy(b) for b in context.perturbation.box(x))
    np.testing.assert_allclose(high - 0.5, 0.2 * profile[None], atol=1e-7)
    np.testing.assert_allclose(0.5 - low, 0.2 * profile[None], atol=1e-7)


@pytest.mark.parametrize("robust", ["ibp", "pgd"])
def test_training_with_a_per_feature_epsilon(
    robust, digits_small, tmp_path, monkeypatch
):
    """compile(epsilon=array): the schedule ramps the largest radius, each
    pixel keeps its share; features with radius 0 are never perturbed, so
    a model certified on the border pixels only is verified more often."""
    x, y = digits_small
    keras.utils.set_random_seed(0)
    model = vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(10),
        ]
    )
    eps = np.zeros((8, 8, 1))
    eps[2:6, 2:6] = 0.1
    options = {"steps": 2} if robust == "pgd" else {}
    model.compile("adam", robust=robust, epsilon=eps, input_range=(0, 1), **options)
    np.testing.assert_allclose(model._robust.epsilon_profile, eps / 0.1)
    assert "per-feature" in model.robust_summary()
    seen = []
    kind = type(model._robust.objective)
    compute = kind.compute

    def spy(self, context, *args):
        seen.append((context.epsilon, np.array(context.radius)))
        return compute(self, context, *args)

    monkeypatch.setattr(kind, "compute", spy)
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # The objective saw each pixel's share of the scheduled radius.
    epsilon, radius = seen[-1]
    assert epsilon > 0
    np.testing.assert_allclose(radius, epsilon * eps / 0.1)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded._robust.epsilon_profile, eps / 0.1)
    with pytest.raises(vn.InvalidInputError, match="L-inf"):
        model.compile("adam", robust=robust, epsilon=eps, norm="l2", **options)


def test_training_with_a_per_feature_input_range(digits_small, tmp_path):
    """compile(input_range=(low, high arrays)): fit refuses data outside it
    (naming how many samples), the objectives clip to it, and it is saved."""
    x, y = digits_small
    model = vn.Sequential([layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(10)])
    high = np.ones((8, 8, 1))
    high[0, 0] = 0.5
    model.compile("adam", robust="ibp", epsilon=0.05, input_range=(0.0, high))
    inside = np.minimum(x, high).astype("float32")
    model.fit(inside, y, epochs=1, batch_size=64, verbose=0)
    outside = inside.copy()
    outside[:3, 0, 0] = 0.9
    with pytest.raises(vn.InvalidInputError, match="3 of 256 samples"):
        model.fit(outside, y, epochs=1, batch_size=64, verbose=0)
    assert "per feature" in model.robust_summary()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded._robust.input_range[1], high)


def test_per_feature_range_checks_integer_batches_exactly():
    """uint8 batches are compared with a per-feature range in float64: a
    pixel at 0 below a low of 0.5 is refused (not truncated to 0 <= 0)."""
    x = np.random.default_rng(5).integers(1, 256, (16, 4)).astype("uint8")
    x[:, 0] = 0
    y = np.arange(16) % 3

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]

    inp = keras.Input((4,))
    model = vn.Model(inp, layers.Dense(3)(layers.Rescaling(1 / 255)(inp)))
    low = np.array([0.5, 0.0, 0.0, 0.0])
    model.compile("adam", input_range=(low, np.full(4, 255.0)))
    with pytest.raises(vn.InvalidInputError, match="per-feature input_range"):
        model.fit(Batches(), epochs=1, verbose=0)


def test_old_activation_table_still_reads_with_a_warning():
    from verinet.layers import activations

    with pytest.warns(DeprecationWarning, match="ACTIVATIONS"):
        table = activations.ACTIVATIONS
    assert isinstance(table["relu"](), layers.ReLU)
    assert isinstance(table["tanh"](), layers.Tanh)
