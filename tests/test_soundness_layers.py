"""Soundness of every zoo layer, alone and in small stacks.

For each layer configuration, each norm (L∞, L2), with and without
``input_range=(0, 1)``, and each method (IBP, CROWN, CROWN-IBP), the bounds of
``vn.compute_bounds`` must contain every output found by sampling, vertex
enumeration and a PGD attack (see ``soundness_utils``).

The search does not depend on the method, so it runs once per
(configuration, norm, range) and is cached for the three methods.
"""

import zlib

import keras
import numpy as np
import pytest
from keras import ops
from soundness_utils import (
    METHODS,
    assert_contains,
    empirical_extremes,
    random_inputs,
    randomize_weights,
)

import verinet as vn
from verinet import layers

EPSILON = {"linf": 0.1, "l2": 0.4}
RANGE = (0.0, 1.0)


def seq(shape, *stack):
    return keras.Sequential([layers.Input(shape), *stack])


def dense_act(act):
    """A leading Dense (random weights), the activation, a mixing Dense."""
    return lambda: seq((5,), layers.Dense(6), act(), layers.Dense(3))


def conv_case(kernel, strides, padding):
    return lambda: seq(
        (9, 8, 2),
        layers.Conv2D(3, kernel, strides=strides, padding=padding),
        layers.ReLU(),
        layers.Flatten(),
        layers.Dense(3),
    )


def pool_case(kind, pool, strides, padding, hw=(6, 6)):
    pool_layer = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}[kind]
    return lambda: seq(
        (*hw, 2),
        layers.Conv2D(3, 2, padding="same"),
        pool_layer(pool, strides=strides, padding=padding),
        layers.Flatten(),
    )


def functional_add():
    inp = layers.Input((5,))
    trunk = layers.ReLU()(layers.Dense(4)(inp))
    branch = layers.Dense(4)(layers.Tanh()(layers.Dense(6)(trunk)))
    merged = layers.ReLU()(layers.Add()([trunk, branch, layers.Dense(4)(inp)]))
    return keras.Model(inp, layers.Dense(3)(merged))


def functional_conv_add():
    inp = layers.Input((6, 6, 2))
    a = layers.Conv2D(3, 3, padding="same")(inp)
    b = layers.Conv2D(3, 3, padding="same")(layers.ReLU()(a))
    merged = layers.ReLU()(layers.Add()([a, b]))
    pooled = layers.MaxPooling2D(2)(merged)
    return keras.Model(inp, layers.Dense(2)(layers.Flatten()(pooled)))


def nested_model():
    inner = seq((4,), layers.Dense(4), layers.ReLU(), layers.Dense(4))
    return seq((5,), layers.Dense(4), layers.LeakyReLU(0.2), inner, layers.Sigmoid())


CASES = {
    # --- Dense and activations ------------------------------------------
    "dense": lambda: seq((5,), layers.Dense(4)),
    "dense_no_bias": lambda: seq((5,), layers.Dense(4, use_bias=False)),
    # Dense on the last axis of an image: its bias adds once per position.
    "dense_on_image": lambda: seq(
        (3, 2, 4), layers.Dense(3), layers.ReLU(), layers.Flatten(), layers.Dense(2)
    ),
    "relu": dense_act(layers.ReLU),
    "leaky_relu_0.1": dense_act(lambda: layers.LeakyReLU(0.1)),
    "leaky_relu_default": dense_act(layers.LeakyReLU),
    "leaky_relu_1": dense_act(lambda: layers.LeakyReLU(1.0)),
    "gelu": dense_act(layers.GeLU),
    "gelu_tanh": dense_act(lambda: layers.GeLU(approximate=True)),
    "sigmoid": dense_act(layers.Sigmoid),
    "tanh": dense_act(layers.Tanh),
    "relu_on_input": lambda: seq((5,), layers.ReLU(), layers.Dense(3)),
    "smooth_on_input": lambda: seq(
        (5,), layers.Sigmoid(), layers.Tanh(), layers.GeLU()
    ),
    "deep_mixed": lambda: seq(
        (5,),
        layers.Dense(8),
        layers.GeLU(),
        layers.Dense(8),
        layers.ReLU(),
        layers.Dense(6),
        layers.Tanh(),
        layers.Dense(3),
    ),
    # --- BatchNormalization (random moving stats, gamma of both signs) -----
    "bn": lambda: seq((5,), layers.Dense(6), layers.BatchNormalization()),
    "bn_relu": lambda: seq(
        (5,),
        layers.Dense(6),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Dense(3),
    ),
    "bn_no_center_scale": lambda: seq(
        (5,),
        layers.Dense(6),
        layers.BatchNormalization(center=False, scale=False),
        layers.ReLU(),
        layers.Dense(3),
    ),
    "bn_conv": lambda: seq(
        (6, 6, 2),
        layers.Conv2D(3, 3),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Flatten(),
        layers.Dense(3),
    ),
    # --- Preprocessing -----------------------------------------------------
    "rescaling_negative": lambda: seq(
        (5,),
        layers.Rescaling(-1.5, offset=0.3),
        layers.Dense(6),
        layers.ReLU(),
        layers.Rescaling(-2.0),
    ),
    "rescaling_per_channel": lambda: seq(
        (4, 4, 2),
        layers.Rescaling([-1.0, 2.0], offset=[0.1, -0.2]),
        layers.Conv2D(2, 2),
        layers.ReLU(),
        layers.Flatten(),
    ),
    "normalization": lambda: seq(
        (3,),
        layers.Normalization(mean=[0.1, -0.2, 0.3], variance=[0.5, 2.0, 0.01]),
        layers.Dense(4),
        layers.ReLU(),
        layers.Dense(2),
    ),
    "normalization_invert": lambda: seq(
        (3,),
        layers.Normalization(
            mean=[0.1, -0.2, 0.3], variance=[0.5, 2.0, 0.01], invert=True
        ),
        layers.Dense(4),
        layers.ReLU(),
    ),
    "normalization_image": lambda: seq(
        (4, 4, 2),
        layers.Normalization(mean=[0.4, 0.6], variance=[0.04, 0.2]),
        layers.Conv2D(2, 2),
        layers.Tanh(),
        layers.Flatten(),
    ),
    # --- Shape layers --------------------------------------------------------
    "flatten_reshape": lambda: seq(
        (6,),
        layers.Dense(12),
        layers.Reshape((2, 3, 2)),
        layers.Conv2D(2, 2),
        layers.ReLU(),
        layers.Flatten(),
        layers.Dense(2),
    ),
    "dropout": lambda: seq(
        (5,), layers.Dense(6), layers.Dropout(0.5), layers.ReLU(), layers.Dense(3)
    ),
    # --- Residual connections ----------------------------------------------
    "residual_block_dense": lambda: seq(
        (5,), layers.Dense(4), layers.ResidualBlock(6), layers.ReLU(), layers.Dense(3)
    ),
    "residual_block_dense_tanh": lambda: seq(
        (5,),
        layers.Dense(4),
        layers.ResidualBlock(6, activation="tanh"),
        layers.Dense(3),
    ),
    "residual_block_dense_gelu": lambda: seq(
        (5,), layers.ResidualBlock(3, activation="gelu"), layers.Dense(3)
    ),
    "residual_block_conv": lambda: seq(
        (5, 5, 2),
        layers.Conv2D(3, 3, padding="same"),
        layers.ResidualBlock(4),
        layers.ReLU(),
        layers.Flatten(),
        layers.Dense(3),
    ),
    "residual_block_conv_even": lambda: seq(
        (5, 5, 2),
        layers.ResidualBlock(3, kernel_size=2, activation="leaky_relu"),
        layers.Flatten(),
        layers.Dense(3),
    ),
    "add_functional": functional_add,
    "add_functional_conv": functional_conv_add,
    "nested_model": nested_model,
}

# --- Conv2D: strides 1/2/3, valid/same, even and odd kernels ---------------
for _k in (1, 2, 3, 4):
    for _s in (1, 2, 3):
        for _p in ("valid", "same"):
            CASES[f"conv_k{_k}_s{_s}_{_p}"] = conv_case(_k, _s, _p)
CASES["conv_rect_kernel"] = conv_case((3, 2), (2, 1), "same")
# Symmetric 'same' pads that differ between H and W: (1, 1) and (2, 2) on the
# (9, 8) input, the torch fast path's padding argument.
CASES["conv_rect_3x5_s21_same"] = conv_case((3, 5), (2, 1), "same")
# Two rectangular convolutions: the patches rows of the second cross the
# first with different window offsets along H and W ((2, 1): 'same' pads of
# a 5x3 kernel at strides (1, 2)).
CASES["conv_rect_two"] = lambda: seq(
    (8, 7, 2),
    layers.Conv2D(3, (3, 5), padding="same"),
    layers.ReLU(),
    layers.Conv2D(2, (5, 3), strides=(1, 2), padding="same"),
    layers.ReLU(),
    layers.Flatten(),
    layers.Dense(3),
)
# More than 4 input channels: patches rows cross the second convolution by
# torch's transposed convolution instead of the few-channel overlap-add.
CASES["conv_wide_two"] = lambda: seq(
    (7, 7, 5),
    layers.Conv2D(6, 3, padding="same"),
    layers.ReLU(),
    layers.Conv2D(5, 3, strides=2, padding="same"),
    layers.ReLU(),
    layers.Flatten(),
    layers.Dense(3),
)
# Convolutions without bias, on both back-substitution forms (dense rows from
# the Dense, patches rows for the hidden bounds).
CASES["conv_no_bias"] = lambda: seq(
    (6, 6, 2),
    layers.Conv2D(3, 3, padding="same", use_bias=False),
    layers.ReLU(),
    layers.Conv2D(2, 3, strides=2, use_bias=False),
    layers.ReLU(),
    layers.Flatten(),
    layers.Dense(3),
)

# --- Pooling: strides != pool size, 'same' padding ---------------------------
POOLS = [
    # (kind, pool, strides, padding, hw)
    ("max", 2, None, "valid", (6, 6)),
    ("max", 2, 1, "valid", (6, 6)),
    ("max", 3, 2, "valid", (7, 6)),
    ("max", 3, 1, "same", (6, 6)),
    ("max", 3, 2, "same", (6, 6)),
    ("max", 2, 2, "same", (5, 7)),
    ("max", 4, 1, "same", (5, 6)),
    ("max", (2, 3), (1, 2), "same", (5, 6)),
    ("max", (3, 2), (2, 1), "same", (7, 6)),  # pads (1, 1) and (0, 1)
    ("avg", 2, None, "valid", (6, 6)),
    ("avg", 2, 1, "valid", (6, 6)),
    ("avg", 3, 2, "valid", (7, 6)),
    ("avg", (3, 2), None, "valid", (6, 6)),  # a 3x2 window: 6 elements
    # Keras's torch backend averages in-image elements when 'same' pads
    # symmetrically, but replicate-pads every axis (and averages the whole
    # window) as soon as one axis pads asymmetrically.
    ("avg", 3, 1, "same", (6, 6)),  # symmetric (1, 1)
    ("avg", 2, 2, "same", (6, 6)),  # no padding
    ("avg", 2, 1, "same", (6, 6)),  # (0, 1): replicates a lone pixel
    ("avg", 3, 2, "same", (6, 6)),  # (0, 1) under a 3-window
    ("avg", 4, 1, "same", (6, 6)),  # (1, 2)
    ("avg", 2, 2, "same", (5, 7)),  # (0, 1) at odd sizes
    ("avg", 3, 2, "same", (7, 6)),  # rows (1, 1), columns (0, 1)
    ("avg", (3, 2), (2, 1), "same", (7, 6)),  # pad sums 2 (rows), 1 (columns)
    ("avg", (5, 1), 1, "same", (6, 6)),  # rows padded (2, 2), columns not
]
for _kind, _pool, _strides, _pad, _hw in POOLS:
    _name = f"{_kind}pool_p{_pool}_s{_strides}_{_pad}_{_hw[0]}x{_hw[1]}".replace(
        " ", ""
    )
    CASES[_name] = pool_case(_kind, _pool, _strides, _pad, _hw)


# ---------------------------------------------------------------------------
# One model, input and search per (case, norm, range), shared by the methods
# ---------------------------------------------------------------------------

_SEARCHES = {}


def _seed(*key):
    return zlib.crc32(repr(key).encode())


def prepared(name, norm, ranged):
    key = (name, norm, ranged)
    if key not in _SEARCHES:
        rng = np.random.default_rng(_seed(*key))
        model = randomize_weights(CASES[name](), rng)
        input_range = RANGE if ranged else None
        x = random_inputs(model.inputs[0].shape[1:], 2, rng, input_range)
        eps = EPSILON[norm]
        ext = empirical_extremes(model, x, eps, norm, input_range, seed=_seed(*key))
        _SEARCHES[key] = (model, x, eps, input_range, ext)
    return _SEARCHES[key]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ranged", [False, True], ids=["free", "range01"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", list(CASES))
def test_layer_bounds_are_sound(name, norm, ranged, method):
    model, x, eps, input_range, ext = prepared(name, norm, ranged)
    lower, upper = vn.compute_bounds(
        model, x, eps, method=method, norm=norm, input_range=input_range
    )
    assert_contains(lower, upper, ext, f"{name}/{method}/{norm}/{input_range}")


# ---------------------------------------------------------------------------
# BatchNormalization with all-negative gamma; several radii
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("negative", [True, False])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batch_norm_gamma_sign(negative, norm):
    rng = np.random.default_rng(7 + negative)
    model = seq(
        (4, 4, 2),
        layers.Conv2D(4, 2),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Flatten(),
        layers.Dense(6),
        layers.BatchNormalization(),
        layers.Tanh(),
        layers.Dense(2),
    )
    randomize_weights(model, rng, negative_gamma=negative)
    bn = [la for la in model.layers if isinstance(la, layers.BatchNormalization)]
    assert all((np.asarray(b.gamma) < 0).all() == negative for b in bn)
    x = random_inputs((4, 4, 2), 3, rng)
    ext = empirical_extremes(model, x, 0.2, norm)
    for method in METHODS:
        low, up = vn.compute_bounds(model, x, 0.2, method=method, norm=norm)
        assert_contains(low, up, ext, f"bn negative={negative} {method}")


@pytest.mark.parametrize("epsilon", [0.0, 1e-3, 0.05, 1.0, 5.0])
@pytest.mark.parametrize(
    "name", ["deep_mixed", "maxpool_p3_s2_same_6x6", "add_functional"]
)
def test_radii(name, epsilon):
    rng = np.random.default_rng(_seed(name, epsilon))
    model = randomize_weights(CASES[name](), rng)
    x = random_inputs(model.inputs[0].shape[1:], 2, rng)
    for norm in ("linf", "l2"):
        ext = empirical_extremes(model, x, epsilon, norm, n_samples=128, n_extreme=128)
        for method in METHODS:
            low, up = vn.compute_bounds(model, x, epsilon, method=method, norm=norm)
            assert_contains(low, up, ext, f"{name}/{method}/{norm}/eps={epsilon}")
            if epsilon == 0.0:
                # A zero radius pins the output: bounds collapse onto f(x).
                np.testing.assert_allclose(low, up, rtol=1e-4, atol=1e-4)


def test_average_pooling_same_asymmetric_padding():
    """Regression: AveragePooling2D 'same' with asymmetric padding, at eps = 0
    (the rule once averaged in-image elements only, unlike Keras's forward)."""
    model = seq(
        (4, 4, 1),
        layers.AveragePooling2D(3, strides=2, padding="same"),
        layers.Flatten(),
    )
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    f = model.predict(x, verbose=0)
    # Rows/cols {2, 3} of the last window pad one element after the image;
    # Keras's torch backend replicates the border, so the bottom-right output
    # is (10 + 2*11 + 2*14 + 4*15) / 9 = 13.33, not mean(10, 11, 14, 15) = 12.5.
    np.testing.assert_allclose(f[0, 3], 120 / 9, rtol=1e-6)
    for method in METHODS:
        low, up = vn.compute_bounds(model, x, 0.0, method=method)
        assert low[0, 3] <= f[0, 3] + 1e-4 and f[0, 3] <= up[0, 3] + 1e-4, (
            f"{method}: bounds [{low[0, 3]}, {up[0, 3]}] exclude f(x) = {f[0, 3]}"
        )


# ---------------------------------------------------------------------------
# Rule-level checks: each layer's bound rule on its own, pointwise
# ---------------------------------------------------------------------------
#
# The model-level checks above only see concretized numbers. Here a rule's
# linear bounds are checked *pointwise* on its input box: an affine rule's
# ``backward_affine`` must be the exact adjoint of the layer's forward map
# (A·f(x) == A_in·x + bias for every x), and a nonlinear rule's linear bounds
# must hold at every sampled x (A_l·x + b_l <= A·f(x) <= A_u·x + b_u).


def _t(a):
    return ops.convert_to_tensor(np.asarray(a, dtype=np.float32))  # Keras's device


def _np(t):
    return np.asarray(
        t.detach().cpu().numpy() if hasattr(t, "detach") else t, np.float64
    )


def _dot(A, v):
    """Sum ``A * v`` over the node axes: ``(batch, specs, ...)`` x ``(batch, ...)``."""
    A = _np(A)
    return (A * _np(v)[:, None]).reshape(*A.shape[:2], -1).sum(-1)


AFFINE_LAYERS = {
    "dense": ((5,), lambda: layers.Dense(4)),
    "dense_on_image": ((3, 2, 4), lambda: layers.Dense(3)),
    "bn": ((3, 3, 4), layers.BatchNormalization),
    "rescaling": ((3, 3, 2), lambda: layers.Rescaling([-1.5, 0.5], offset=[0.2, 1.0])),
    "normalization": (
        (4,),
        lambda: layers.Normalization(mean=[0.3, 0, -1, 2], variance=[0.5, 1, 2, 4]),
    ),
    "normalization_scalar": (
        (2, 2, 3),
        lambda: layers.Normalization(mean=0.3, variance=2.0),
    ),
    "normalization_invert": (
        (4,),
        lambda: layers.Normalization(
            mean=[1, 2, 3, 4], variance=[0.25] * 4, invert=True
        ),
    ),
    "flatten": ((3, 2, 2), layers.Flatten),
    "reshape": ((12,), lambda: layers.Reshape((2, 3, 2))),
    "dropout": ((4,), lambda: layers.Dropout(0.5)),
}
for _k in (1, 2, 3, 4):
    for _s in (1, 2, 3):
        for _p in ("valid", "same"):
            AFFINE_LAYERS[f"conv_k{_k}_s{_s}_{_p}"] = (
                (8, 7, 2),
                lambda k=_k, s=_s, p=_p: layers.Conv2D(3, k, strides=s, padding=p),
            )
for _kind, _pool, _strides, _pad, _hw in POOLS:
    if _kind == "avg":
        _name = f"avgpool_p{_pool}_s{_strides}_{_pad}_{_hw[0]}x{_hw[1]}".replace(
            " ", ""
        )
        AFFINE_LAYERS[_name] = (
            (*_hw, 2),
            lambda p=_pool, s=_strides, pad=_pad: layers.AveragePooling2D(
                p, strides=s, padding=pad
            ),
        )


@pytest.mark.parametrize("name", list(AFFINE_LAYERS))
def test_affine_rule_is_the_adjoint_of_the_forward_map(name):
    shape, make = AFFINE_LAYERS[name]
    rng = np.random.default_rng(_seed("adjoint", name))
    model = randomize_weights(seq(shape, make()), rng)
    layer = model.layers[-1]
    x = rng.standard_normal((3, *shape))
    y = _np(layer(_t(x), training=False))
    A = rng.standard_normal((3, 5, *y.shape[1:]))
    A_in, bias = layer.backward_affine(_t(A), shape)
    got = _dot(A_in, x) + (0.0 if bias is None else _np(bias))
    np.testing.assert_allclose(got, _dot(A, y), rtol=1e-4, atol=1e-4)
    # The interval rule contains the forward map on a box around x.
    low, up = layer.interval(_t(x - 0.3), _t(x + 0.3))
    xs = x + rng.uniform(-0.3, 0.3, size=(64, *x.shape))
    ys = _np(layer(_t(xs.reshape(-1, *shape)), training=False)).reshape(64, *y.shape)
    assert np.all(ys >= _np(low) - 1e-4) and np.all(ys <= _np(up) + 1e-4)


def test_add_rule_is_the_adjoint_of_the_sum():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 4, 4, 3)) for _ in range(3)]
    A = rng.standard_normal((2, 5, 4, 4, 3))
    pairs, lbias, ubias = layers.Add().bound_backward(_t(A), _t(-A), [(None, None)] * 3)
    assert len(pairs) == 3
    np.testing.assert_allclose(
        sum(_dot(la, x) for (la, _), x in zip(pairs, xs, strict=True))
        + (0 if lbias is None else _np(lbias)),
        _dot(A, sum(xs)),
        rtol=1e-5,
        atol=1e-5,
    )
    low, up = layers.Add().bound_interval([(_t(x - 1), _t(x + 1)) for x in xs])
    np.testing.assert_allclose(_np(low), sum(xs) - 3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(up), sum(xs) + 3, rtol=1e-5, atol=1e-5)


def _box(rng, shape, grid):
    """Random boxes; on a coarse grid (``grid``) lower bounds often tie with
    other upper bounds, the corner cases of max-pooling's relaxation."""
    if grid:
        lower = rng.integers(-6, 6, size=shape) * 0.05
        upper = lower + rng.integers(0, 4, size=shape) * 0.05
    else:
        lower = rng.standard_normal(shape)
        upper = lower + rng.exponential(0.7, size=shape)
    return lower.astype(np.float32), upper.astype(np.float32)


def _points(rng, lower, upper, n):
    """Uniform points and vertices of the box: ``(n, *lower.shape)``."""
    t = rng.uniform(size=(n, *lower.shape))
    t[: n // 2] = np.round(t[: n // 2])  # vertices
    return lower + (upper - lower) * t


NONLINEAR_LAYERS = {
    "relu": ((6,), layers.ReLU),
    "leaky_relu": ((6,), lambda: layers.LeakyReLU(0.2)),
    "gelu": ((6,), layers.GeLU),
    "gelu_tanh": ((6,), lambda: layers.GeLU(approximate=True)),
    "sigmoid": ((6,), layers.Sigmoid),
    "tanh": ((2, 3), layers.Tanh),
    "relu_image": ((3, 3, 2), layers.ReLU),
}
for _kind, _pool, _strides, _pad, _hw in POOLS:
    if _kind == "max":
        _name = f"maxpool_p{_pool}_s{_strides}_{_pad}_{_hw[0]}x{_hw[1]}".replace(
            " ", ""
        )
        NONLINEAR_LAYERS[_name] = (
            (*_hw, 2),
            lambda p=_pool, s=_strides, pad=_pad: layers.MaxPooling2D(
                p, strides=s, padding=pad
            ),
        )


@pytest.mark.parametrize("grid", [False, True], ids=["continuous", "ties"])
@pytest.mark.parametrize("name", list(NONLINEAR_LAYERS))
def test_nonlinear_rule_bounds_hold_pointwise(name, grid):
    shape, make = NONLINEAR_LAYERS[name]
    rng = np.random.default_rng(_seed("pointwise", name, grid))
    layer = seq(shape, make()).layers[-1]
    lower, upper = _box(rng, (4, *shape), grid)
    out_shape = tuple(layer.compute_output_shape((None, *shape))[1:])
    lA = rng.standard_normal((4, 6, *out_shape))
    uA = rng.standard_normal((4, 6, *out_shape))
    [(lA_in, uA_in)], lbias, ubias = layer.bound_backward(
        _t(lA), _t(uA), [(_t(lower), _t(upper))]
    )
    lbias = 0.0 if lbias is None else _np(lbias)
    ubias = 0.0 if ubias is None else _np(ubias)
    i_low, i_up = (_np(v) for v in layer.interval(_t(lower), _t(upper)))
    for x in _points(rng, lower, upper, 200):
        y = _np(layer(_t(x)))
        low_line = _dot(lA_in, x) + lbias
        up_line = _dot(uA_in, x) + ubias
        assert np.all(low_line <= _dot(lA, y) + 1e-4 * (1 + np.abs(low_line))), name
        assert np.all(_dot(uA, y) <= up_line + 1e-4 * (1 + np.abs(up_line))), name
        assert np.all(i_low <= y + 1e-5) and np.all(y <= i_up + 1e-5), name
