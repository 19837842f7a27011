"""Soundness on Hypothesis-generated random stacks of zoo layers.

Strategies draw a *spec* (plain data, printed when an example fails) — depth,
widths, activations, Dense or Conv2D, BatchNormalization, pooling, functional
residual branches joined by ``Add``, ``ResidualBlock``, nested models — plus a
weight scale (above 1 the intermediate values grow and many neurons are
unstable), a radius, a norm and an optional input range. The model is built
from the spec with weights drawn from a seeded generator, and every method's
bounds are checked against sampling, vertices and PGD (``soundness_utils``).
"""

import keras
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from soundness_utils import (
    METHODS,
    assert_contains,
    empirical_extremes,
    random_inputs,
    randomize_weights,
)

import verinet as vn
from verinet import layers

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "gelu_tanh", "sigmoid", "tanh")


def activation(name):
    return {
        "relu": layers.ReLU,
        "leaky_relu": lambda: layers.LeakyReLU(0.1),
        "gelu": layers.GeLU,
        "gelu_tanh": lambda: layers.GeLU(approximate=True),
        "sigmoid": layers.Sigmoid,
        "tanh": layers.Tanh,
    }[name]()


# Names ResidualBlock accepts for its inner activation.
BLOCK_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "sigmoid", "tanh")

common = st.fixed_dictionaries(
    {
        "scale": st.sampled_from([0.5, 1.0, 2.0, 4.0]),
        "epsilon": st.floats(-3.0, 0.3).map(lambda e: float(10**e)),
        "norm": st.sampled_from(["linf", "l2"]),
        "ranged": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)

# ---------------------------------------------------------------------------
# Vector stacks
# ---------------------------------------------------------------------------


@st.composite
def dense_specs(draw):
    spec = {"inputs": draw(st.integers(1, 6)), "blocks": []}
    width = spec["inputs"]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["dense", "dense", "residual_block", "add_branch", "nested"]
            )
        )
        act = draw(st.sampled_from(ACTIVATIONS))
        if kind == "dense":
            width = draw(st.integers(1, 8))
            spec["blocks"].append(("dense", width, draw(st.booleans()), act))
        elif kind == "residual_block":
            hidden = draw(st.integers(1, 8))
            spec["blocks"].append(
                ("residual_block", hidden, draw(st.sampled_from(BLOCK_ACTIVATIONS)))
            )
        elif kind == "add_branch":
            # x -> act(x + Dense(act(Dense(x)))) (+ a second linear branch).
            hidden = draw(st.integers(1, 8))
            spec["blocks"].append(("add_branch", hidden, act, draw(st.booleans())))
        else:
            width = draw(st.integers(1, 6))
            spec["blocks"].append(("nested", width, act))
    spec["dropout"] = draw(st.booleans())
    spec["outputs"] = draw(st.integers(1, 4))
    return spec


def build_dense(spec):
    inp = layers.Input((spec["inputs"],))
    x = inp
    for block in spec["blocks"]:
        kind = block[0]
        if kind == "dense":
            _, width, bn, act = block
            x = layers.Dense(width)(x)
            if bn:
                x = layers.BatchNormalization()(x)
            x = activation(act)(x)
        elif kind == "residual_block":
            _, hidden, act = block
            x = layers.ResidualBlock(hidden, activation=act)(x)
        elif kind == "add_branch":
            _, hidden, act, third = block
            width = x.shape[-1]
            branch = layers.Dense(width)(activation(act)(layers.Dense(hidden)(x)))
            parts = [x, branch] + ([layers.Dense(width)(x)] if third else [])
            x = activation(act)(layers.Add()(parts))
        else:
            _, width, act = block
            inner = keras.Sequential(
                [layers.Input((x.shape[-1],)), layers.Dense(width), activation(act)]
            )
            x = inner(x)
    if spec["dropout"]:
        x = layers.Dropout(0.3)(x)
    return keras.Model(inp, layers.Dense(spec["outputs"])(x))


# ---------------------------------------------------------------------------
# Image stacks
# ---------------------------------------------------------------------------


def _out_size(size, window, stride, padding):
    if padding == "same":
        return -(-size // stride)
    return (size - window) // stride + 1


@st.composite
def conv_specs(draw):
    h, w = draw(st.integers(3, 8)), draw(st.integers(3, 8))
    channels = draw(st.integers(1, 3))
    spec = {"input": (h, w, channels), "blocks": []}
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(["conv", "conv", "pool", "residual_block", "add_branch"])
        )
        if kind == "conv":
            kernel = draw(st.integers(1, min(3, h, w)))
            stride = draw(st.integers(1, 2))
            padding = draw(st.sampled_from(["valid", "same"]))
            channels = draw(st.integers(1, 4))
            bn = draw(st.booleans())
            act = draw(st.sampled_from(ACTIVATIONS))
            spec["blocks"].append(("conv", channels, kernel, stride, padding, bn, act))
            h = _out_size(h, kernel, stride, padding)
            w = _out_size(w, kernel, stride, padding)
        elif kind == "pool":
            pool_kind = draw(st.sampled_from(["max", "avg"]))
            pool = draw(st.integers(1, min(3, h, w)))
            stride = draw(st.integers(1, 2))
            padding = draw(st.sampled_from(["valid", "same"]))
            spec["blocks"].append(("pool", pool_kind, pool, stride, padding))
            h = _out_size(h, pool, stride, padding)
            w = _out_size(w, pool, stride, padding)
        elif kind == "residual_block":
            hidden = draw(st.integers(1, 4))
            kernel = draw(st.integers(1, 3))
            act = draw(st.sampled_from(BLOCK_ACTIVATIONS))
            spec["blocks"].append(("residual_block", hidden, kernel, act))
        else:
            hidden = draw(st.integers(1, 4))
            act = draw(st.sampled_from(ACTIVATIONS))
            spec["blocks"].append(("add_branch", hidden, act))
        assert h >= 1 and w >= 1
    spec["outputs"] = draw(st.integers(1, 4))
    return spec


def build_conv(spec):
    inp = layers.Input(spec["input"])
    x = inp
    for block in spec["blocks"]:
        kind = block[0]
        if kind == "conv":
            _, channels, kernel, stride, padding, bn, act = block
            x = layers.Conv2D(channels, kernel, strides=stride, padding=padding)(x)
            if bn:
                x = layers.BatchNormalization()(x)
            x = activation(act)(x)
        elif kind == "pool":
            _, pool_kind, pool, stride, padding = block
            cls = layers.MaxPooling2D if pool_kind == "max" else layers.AveragePooling2D
            x = cls(pool, strides=stride, padding=padding)(x)
        elif kind == "residual_block":
            _, hidden, kernel, act = block
            x = layers.ResidualBlock(hidden, kernel_size=kernel, activation=act)(x)
        else:
            _, hidden, act = block
            branch = layers.Conv2D(hidden, 3, padding="same")(x)
            branch = layers.Conv2D(x.shape[-1], 1)(activation(act)(branch))
            x = activation(act)(layers.Add()([x, branch]))
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(spec["outputs"])(x))


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def prepare(model, options, batch=2):
    """Random weights and inputs for a drawn example."""
    rng = np.random.default_rng(options["seed"])
    randomize_weights(model, rng, scale=options["scale"])
    input_range = (0.0, 1.0) if options["ranged"] else None
    x = random_inputs(model.inputs[0].shape[1:], batch, rng, input_range)
    return x, input_range, rng


def search(model, x, options, input_range, C=None):
    return empirical_extremes(
        model,
        x,
        options["epsilon"],
        options["norm"],
        input_range,
        C,
        n_samples=192,
        n_extreme=192,
        seed=options["seed"],
    )


def check_methods(model, x, options, input_range, ext, C=None):
    eps, norm = options["epsilon"], options["norm"]
    for method in METHODS:
        low, up = vn.compute_bounds(
            model, x, eps, method=method, norm=norm, input_range=input_range, C=C
        )
        assert_contains(low, up, ext, f"{method}/{norm}/eps={eps:.3g}")


@given(spec=dense_specs(), options=common)
def test_random_dense_stacks_are_sound(spec, options):
    model = build_dense(spec)
    x, input_range, _ = prepare(model, options)
    check_methods(
        model, x, options, input_range, search(model, x, options, input_range)
    )


@given(spec=conv_specs(), options=common)
def test_random_conv_stacks_are_sound(spec, options):
    model = build_conv(spec)
    x, input_range, _ = prepare(model, options)
    check_methods(
        model, x, options, input_range, search(model, x, options, input_range)
    )


@given(spec=dense_specs(), options=common, specs=st.integers(1, 4))
def test_random_specifications_and_margins_are_sound(spec, options, specs):
    model = build_dense(spec)
    x, input_range, rng = prepare(model, options)
    classes = spec["outputs"]
    # Random specification rows, and the margin rows e_y - e_j: one search.
    C = rng.standard_normal((2, specs, classes)).astype(np.float32)
    y = rng.integers(0, classes, size=2)
    C_margin = np.zeros((2, classes, classes), dtype=np.float32)
    C_margin[np.arange(2), :, y] = 1.0
    C_margin -= np.eye(classes, dtype=np.float32)
    ext = search(model, x, options, input_range, np.concatenate([C, C_margin], 1))
    check_methods(model, x, options, input_range, ext.columns(slice(0, specs)), C=C)
    reached = ext.lo[:, specs:]
    eps, norm = options["epsilon"], options["norm"]
    for method in METHODS:
        margins = vn.margin_bounds(
            model, x, y, eps, method=method, norm=norm, input_range=input_range
        )
        assert np.all(np.isposinf(margins[np.arange(2), y]))
        finite = ~np.isinf(margins)
        tol = 1e-4 * (1 + np.abs(margins[finite]))
        assert np.all(reached[finite] >= margins[finite] - tol), (
            f"{method}: margin bounds {margins[finite]} above reached {reached[finite]}"
        )
