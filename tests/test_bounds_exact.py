"""Exact bound values on hand-derived networks, and relations between methods.

* A 2-2-1 ReLU network whose IBP, CROWN and CROWN-IBP bounds are derived by
  hand below (L∞, L∞ with an input range, and L2).
* A single Dense layer, where IBP is exactly the true range.
* On random ReLU MLPs: CROWN is much tighter than IBP on average; CROWN and
  CROWN-IBP are never looser than IBP; margin_bounds agrees with
  compute_bounds given the same specification; float64 agrees with float32.
"""

import itertools
import math

import keras
import numpy as np
import pytest
import torch
from soundness_utils import (
    METHODS,
    assert_contains,
    empirical_extremes,
    random_inputs,
    randomize_weights,
)

import verinet as vn
from verinet import layers
from verinet.bounds.methods import crown_pass
from verinet.bounds.perturbation import LinfBall


def assert_bounds(model, x, eps, expected, norm="linf", input_range=None, **kw):
    """``expected`` maps method -> (lower, upper) (scalars for one output)."""
    for method, (low, up) in expected.items():
        lower, upper = vn.compute_bounds(
            model, x, eps, method=method, norm=norm, input_range=input_range, **kw
        )
        np.testing.assert_allclose(
            [lower[0, 0], upper[0, 0]], [low, up], rtol=1e-6, atol=1e-7, err_msg=method
        )


# ---------------------------------------------------------------------------
# The hand network
# ---------------------------------------------------------------------------
#
#   h1 = x1 + x2 + 0.5          (unstable on the sets below)
#   h2 = x1 + 3                 (always active: h2 >= 2)
#   y  = relu(h1) - relu(h2)
#
# Keras kernels are (inputs, units): column j holds the weights of unit j.
W1 = np.array([[1.0, 1.0], [1.0, 0.0]], dtype=np.float32)
B1 = np.array([0.5, 3.0], dtype=np.float32)
W2 = np.array([[1.0], [-1.0]], dtype=np.float32)
B2 = np.array([0.0], dtype=np.float32)
X0 = np.zeros((1, 2), dtype=np.float32)


def hand_network():
    model = keras.Sequential(
        [layers.Input((2,)), layers.Dense(2), layers.ReLU(), layers.Dense(1)]
    )
    model.layers[0].set_weights([W1, B1])
    model.layers[2].set_weights([W2, B2])
    return model


def true_value(x1, x2):
    return np.maximum(x1 + x2 + 0.5, 0) - np.maximum(x1 + 3, 0)


def test_hand_network_forward():
    model = hand_network()
    x = np.array([[0.3, -0.9], [-1.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(
        model.predict(x, verbose=0)[:, 0], true_value(x[:, 0], x[:, 1]), rtol=1e-6
    )


def test_hand_network_linf():
    # Set: x ∈ [-1, 1]^2 (centre 0, eps 1).
    #
    # IBP:  h1 ∈ [-1.5, 2.5], h2 ∈ [2, 4]  → relu(h1) ∈ [0, 2.5], relu(h2) ∈ [2, 4]
    #       y ∈ [0 - 4, 2.5 - 2] = [-4, 0.5].
    #
    # CROWN: the first layer sits on the box, so its intervals are exact and
    # CROWN and CROWN-IBP relax with the same [-1.5, 2.5]:
    #   upper line (chord): slope u/(u-l) = 2.5/4 = 5/8,
    #                       intercept -u·l/(u-l) = 3.75/4 = 15/16;
    #   lower line: u = 2.5 > -l = 1.5, so slope 1 through the origin;
    #   relu(h2) = h2 exactly (stable).
    # Lower: y >= h1 - h2 = x2 - 2.5                     → min -3.5.
    # Upper: y <= 5/8 (x1 + x2 + 1/2) + 15/16 - x1 - 3
    #          = -3/8 x1 + 5/8 x2 + 5/16 + 15/16 - 3     → max 3/8 + 5/8 - 28/16
    #          = -0.75.
    # Both beat IBP, so the intersection with IBP keeps them: [-3.5, -0.75].
    # (The true range is [-3.5, -1.5]: y is convex, its max is at a vertex.)
    model = hand_network()
    assert_bounds(
        model,
        X0,
        1.0,
        {"ibp": (-4.0, 0.5), "crown": (-3.5, -0.75), "crown-ibp": (-3.5, -0.75)},
    )
    vertices = [true_value(a, b) for a, b in itertools.product([-1, 1], repeat=2)]
    assert max(vertices) == -1.5 and min(vertices) == -3.5


def test_hand_network_linf_with_input_range():
    # Set: [-1, 1]^2 ∩ [-0.5, 1]^2 = [-0.5, 1]^2.
    #
    # IBP:  h1 ∈ [-0.5, 2.5], h2 ∈ [2.5, 4] → y ∈ [0 - 4, 2.5 - 2.5] = [-4, 0].
    # CROWN: chord slope 2.5/3 = 5/6, intercept 0.5·2.5/3 = 5/12; lower slope 1
    # (2.5 > 0.5).
    # Lower: y >= x2 - 2.5                                   → min -3.
    # Upper: y <= 5/6 (x1 + x2 + 1/2) + 5/12 - x1 - 3
    #          = -1/6 x1 + 5/6 x2 + 5/12 + 5/12 - 3
    #          max at x1 = -0.5, x2 = 1: 1/12 + 10/12 + 10/12 - 36/12 = -15/12.
    model = hand_network()
    assert_bounds(
        model,
        X0,
        1.0,
        {"ibp": (-4.0, 0.0), "crown": (-3.0, -1.25), "crown-ibp": (-3.0, -1.25)},
        input_range=(-0.5, 1.0),
    )


def test_hand_network_l2():
    # Set: the unit L2 disc around 0. A linear a·x + c ranges over c ± ||a||.
    #
    # IBP works on the enclosing box [-1, 1]^2: as in L∞, y ∈ [-4, 0.5].
    #
    # CROWN-IBP relaxes with the IBP interval h1 ∈ [-1.5, 2.5] (as in L∞):
    #   lower: y >= x2 - 2.5                  → -1 - 2.5 = -3.5;
    #   upper: y <= -3/8 x1 + 5/8 x2 - 7/4    → sqrt(9 + 25)/8 - 7/4.
    #
    # CROWN first bounds h1 = (1, 1)·x + 0.5 over the disc: 0.5 ± √2, i.e.
    # l = 0.5 - √2 ≈ -0.914, u = 0.5 + √2 ≈ 1.914 (h2 = x1 + 3 ∈ [2, 4]).
    #   chord slope s = u/(u-l) = (0.5 + √2)/(2√2) = 1/2 + √2/8,
    #   intercept -s·l = (0.5 + √2)(√2 - 0.5)/(2√2) = 7/(8√2);
    #   lower slope 1 (u > -l): lower bound -3.5 as above.
    #   upper: y <= (s - 1) x1 + s x2 + s/2 + 7/(8√2) - 3
    #          max = sqrt((s-1)^2 + s^2) + s/2 + 7/(8√2) - 3
    #              = 3/4 + 1/4 + √2/16 + 7√2/16 - 3 = √2/2 - 2
    #   since (s-1)^2 + s^2 = 2s^2 - 2s + 1 = 9/16.
    model = hand_network()
    s = 0.5 + math.sqrt(2) / 8
    assert math.isclose((s - 1) ** 2 + s**2, 9 / 16)
    assert_bounds(
        model,
        X0,
        1.0,
        {
            "ibp": (-4.0, 0.5),
            "crown": (-3.5, math.sqrt(2) / 2 - 2),
            "crown-ibp": (-3.5, math.sqrt(34) / 8 - 7 / 4),
        },
        norm="l2",
    )
    # The true maximum over the disc is -1.5 (at x = (0, 1)), below both.
    theta = np.linspace(0, 2 * np.pi, 20001)
    r = np.linspace(0, 1, 101)[:, None]
    values = true_value(r * np.cos(theta), r * np.sin(theta))
    assert values.max() <= math.sqrt(2) / 2 - 2 and values.min() >= -3.5


def test_hand_network_specification():
    # C = [[-1]] asks for bounds on -y: the same numbers, negated and swapped.
    model = hand_network()
    C = -np.ones((1, 1, 1), dtype=np.float32)
    expected = {"ibp": (-0.5, 4.0), "crown": (0.75, 3.5), "crown-ibp": (0.75, 3.5)}
    assert_bounds(model, X0, 1.0, expected, C=C)


# ---------------------------------------------------------------------------
# One Dense layer: IBP is exactly the true range
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("input_range", [None, (-0.25, 0.875)])
def test_single_dense_bounds_are_the_true_range(input_range):
    rng = np.random.default_rng(1)
    model = keras.Sequential([layers.Input((4,)), layers.Dense(3)])
    randomize_weights(model, rng)
    W, b = (w.astype(np.float64) for w in model.layers[0].get_weights())
    x = random_inputs((4,), 2, rng, (-0.25, 0.875)).astype(np.float64)
    eps = 0.3
    # A linear function reaches its extremes on the vertices of the box.
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=4)))  # (16, 4)
    vertices = x[:, None, :] + eps * signs[None]
    if input_range is not None:
        vertices = np.clip(vertices, *input_range)
    values = vertices @ W + b  # (batch, 16, 3)
    for method in METHODS:
        low, up = vn.compute_bounds(
            model, x, eps, method=method, input_range=input_range
        )
        np.testing.assert_allclose(low, values.min(1), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(up, values.max(1), rtol=1e-6, atol=1e-6)


def test_single_dense_l2_bounds_are_the_true_range():
    rng = np.random.default_rng(2)
    model = keras.Sequential([layers.Input((5,)), layers.Dense(3)])
    randomize_weights(model, rng)
    W, b = (w.astype(np.float64) for w in model.layers[0].get_weights())
    x = rng.standard_normal((2, 5))
    eps = 0.7
    centre = x @ W + b
    radius = eps * np.linalg.norm(W, axis=0)  # attained at x ± eps w/||w||
    for method in METHODS:
        low, up = vn.compute_bounds(model, x, eps, method=method, norm="l2")
        np.testing.assert_allclose(low, centre - radius, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(up, centre + radius, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# L2 ball intersected with an input range
# ---------------------------------------------------------------------------


def l2_box_min(a, x, eps, low, high):
    """Exact ``min a·z`` over ``{||z - x||_2 <= eps, low <= z <= high}``.

    The problem is convex; for a multiplier ``1/t`` on the ball its
    minimizer over the box is ``z(t) = clip(x - t a, low, high)``, whose
    distance to ``x`` grows with ``t``. Either the box's own minimizer lies
    in the ball, or the ball constraint is active: bisect ``t`` until
    ``||z(t) - x|| = eps`` (KKT).
    """
    a, x = np.asarray(a, np.float64), np.asarray(x, np.float64)
    vertex = np.where(a > 0, low, np.where(a < 0, high, x))
    if np.linalg.norm(vertex - x) <= eps:
        return float(a @ vertex)
    lo, hi = 0.0, 1.0
    while np.linalg.norm(np.clip(x - hi * a, low, high) - x) < eps:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.linalg.norm(np.clip(x - mid * a, low, high) - x) < eps:
            lo = mid
        else:
            hi = mid
    return float(a @ np.clip(x - hi * a, low, high))


def clipped_box_min(a, x, eps, low, high):
    """``min a·z`` over the box ``[max(x - eps, low), min(x + eps, high)]``."""
    lower, upper = np.maximum(x - eps, low), np.minimum(x + eps, high)
    return float(np.sum(np.where(a > 0, a * lower, a * upper)))


def test_l2_box_min_agrees_with_scipy():
    from scipy.optimize import minimize

    rng = np.random.default_rng(5)
    for _ in range(4):
        x = rng.uniform(0.0, 1.0, 5)
        a = rng.standard_normal(5)
        cons = [{"type": "ineq", "fun": lambda z, x=x: 1.0 - np.sum((z - x) ** 2)}]
        result = minimize(
            lambda z, a=a: a @ z,
            x,
            jac=lambda z, a=a: a,
            bounds=[(0.0, 1.0)] * 5,
            constraints=cons,
            method="SLSQP",
            options={"ftol": 1e-12, "maxiter": 500},
        )
        assert result.success
        assert l2_box_min(a, x, 1.0, 0.0, 1.0) == pytest.approx(result.fun, abs=1e-6)


L2_RANGE_CASES = [
    # (dims, eps)
    (6, 0.5),
    (6, 1.5),
    (12, 1.0),
]


def toward_faces(a, rng, low=0.0, high=1.0, reach=0.2):
    """A centre in the range close to the faces that minimize ``a·z``: a
    short way along ``-a`` the range stops the ball."""
    gap = rng.uniform(0.0, reach, a.shape)
    return np.where(a > 0, low + gap, high - gap)


@pytest.mark.parametrize("dims, eps", L2_RANGE_CASES)
def test_l2_ball_with_input_range_concretizes_between_box_and_exact(dims, eps):
    """``L2Ball.concretize`` with a range lies between the clipped box's bound
    and the exact optimum over ball ∩ box.

    Each centre sits near the faces of the range that the minimization
    heads for, so the clipped box is much tighter than the ball alone: a
    bound that ignored the range (the ball's ``a·x - eps ||a||``) falls
    below the box's. Rows share the first row's sign pattern; maxima are
    checked as the minima of ``-a``.
    """
    from verinet.bounds.perturbation import L2Ball

    rng = np.random.default_rng(dims)
    low, high = 0.0, 1.0
    batch, specs = 3, 3
    A = np.empty((batch, specs, dims))
    x = np.empty((batch, dims))
    for b in range(batch):
        a0 = rng.standard_normal(dims)
        A[b] = a0 * rng.uniform(0.5, 1.5, (specs, dims))
        x[b] = toward_faces(a0, rng, low, high)
    ball = L2Ball(eps, (low, high))
    xt = keras.ops.convert_to_tensor(x)
    got_low = keras.ops.convert_to_numpy(
        ball.concretize(xt, keras.ops.convert_to_tensor(A), -1)
    )
    got_up = keras.ops.convert_to_numpy(
        ball.concretize(xt, keras.ops.convert_to_tensor(-A), +1)
    )
    for b in range(batch):
        for s in range(specs):
            a = A[b, s]
            exact = l2_box_min(a, x[b], eps, low, high)
            box = clipped_box_min(a, x[b], eps, low, high)
            ball_only = a @ x[b] - eps * np.linalg.norm(a)
            # The range binds: the box alone is clearly tighter than the ball.
            assert box > ball_only + 0.1, (box, ball_only)
            assert box - 1e-9 <= got_low[b, s] <= exact + 1e-9, (b, s)
            # max (-a)·z = -min a·z.
            assert box - 1e-9 <= -got_up[b, s] <= exact + 1e-9, (b, s)


def _stable_relu_mlp(rng, dims, hidden=8, outputs=3):
    """Dense -> ReLU -> Dense with every ReLU active on [0, 1]^dims
    (non-negative first-layer weights, positive biases): on the range the
    network is the affine map ``x @ M + c``."""
    model = keras.Sequential(
        [
            layers.Input((dims,)),
            layers.Dense(hidden),
            layers.ReLU(),
            layers.Dense(outputs),
        ]
    )
    W1 = rng.uniform(0.0, 1.0, (dims, hidden)).astype(np.float32)
    B1 = rng.uniform(0.1, 0.5, hidden).astype(np.float32)
    W2 = rng.standard_normal((hidden, outputs)).astype(np.float32)
    B2 = rng.standard_normal(outputs).astype(np.float32)
    model.layers[0].set_weights([W1, B1])
    model.layers[2].set_weights([W2, B2])
    W1, B1, W2, B2 = (w.astype(np.float64) for w in (W1, B1, W2, B2))
    return model, W1 @ W2, B1 @ W2 + B2


def test_l2_bounds_with_input_range_hand_network():
    """h = (x1 + x2 + 1, x1 + 1) (active on [0, 1]^2), y = h1 - h2 = x2.

    Around (0.5, 0.5) with eps = 1 the ball holds the whole unit square, so
    y ranges over exactly [0, 1]. IBP sees h1 in [1, 3], h2 in [1, 2]:
    y in [-1, 2]. The ball alone gives 0.5 ± 1. CROWN's linear bound is x2
    itself, which the clipped box concretizes to exactly [0, 1].
    """
    model = keras.Sequential(
        [layers.Input((2,)), layers.Dense(2), layers.ReLU(), layers.Dense(1)]
    )
    model.layers[0].set_weights(
        [np.array([[1.0, 1.0], [1.0, 0.0]], np.float32), np.ones(2, np.float32)]
    )
    model.layers[2].set_weights(
        [np.array([[1.0], [-1.0]], np.float32), np.zeros(1, np.float32)]
    )
    x = np.full((1, 2), 0.5, np.float32)
    assert_bounds(
        model,
        x,
        1.0,
        {"ibp": (-1.0, 2.0), "crown": (0.0, 1.0), "crown-ibp": (0.0, 1.0)},
        norm="l2",
        input_range=(0.0, 1.0),
    )


@pytest.mark.parametrize("dims, eps", L2_RANGE_CASES)
def test_l2_bounds_with_input_range_are_sound_and_use_the_box(dims, eps):
    """On a network affine over the range (one output ``x @ m + c``), the L2
    bounds with a range are sound against the exact optimum over ball ∩ box
    and at least as tight as the clipped box's bound of the affine map
    (numpy). Sample 0 sits near the faces that minimize the output, sample 1
    near those that maximize it, so the range binds on that side; the ball
    alone, and IBP's layer-by-layer interval, are both looser there.
    """
    rng = np.random.default_rng(100 + dims)
    model, M, c = _stable_relu_mlp(rng, dims, outputs=1)
    m, c = M[:, 0], float(c[0])
    x = np.stack([toward_faces(m, rng), toward_faces(-m, rng)])
    x = x.astype(np.float32)
    ibp_low, ibp_up = vn.compute_bounds(
        model, x, eps, method="ibp", norm="l2", input_range=(0.0, 1.0)
    )
    for method in ("crown", "crown-ibp"):
        low, up = vn.compute_bounds(
            model,
            x,
            eps,
            method=method,
            norm="l2",
            input_range=(0.0, 1.0),
            dtype="float64",
        )
        for b in range(2):
            xb = x[b].astype(np.float64)
            exact_low = l2_box_min(m, xb, eps, 0.0, 1.0) + c
            exact_up = -l2_box_min(-m, xb, eps, 0.0, 1.0) + c
            box_low = clipped_box_min(m, xb, eps, 0.0, 1.0) + c
            box_up = -clipped_box_min(-m, xb, eps, 0.0, 1.0) + c
            assert low[b, 0] <= exact_low + 1e-6, (method, b)
            assert up[b, 0] >= exact_up - 1e-6, (method, b)
            if b == 0:
                assert box_low > xb @ m + c - eps * np.linalg.norm(m) + 0.1
                assert box_low > ibp_low[b, 0] + 0.1
                assert low[b, 0] >= box_low - 1e-6, (method, low[b, 0], box_low)
            else:
                assert box_up < xb @ m + c + eps * np.linalg.norm(m) - 0.1
                assert box_up < ibp_up[b, 0] - 0.1
                assert up[b, 0] <= box_up + 1e-6, (method, up[b, 0], box_up)


# ---------------------------------------------------------------------------
# Random ReLU MLPs
# ---------------------------------------------------------------------------


def random_mlp(seed, hidden=(16, 16, 16), inputs=8, outputs=4, act=layers.ReLU):
    rng = np.random.default_rng(seed)
    stack = [layers.Input((inputs,))]
    for width in hidden:
        stack += [layers.Dense(width), act()]
    model = keras.Sequential([*stack, layers.Dense(outputs)])
    return randomize_weights(model, rng), rng


def test_crown_is_tighter_than_ibp_on_average():
    ratios, ratios_cibp = [], []
    for seed in range(20):
        model, rng = random_mlp(seed)
        x = rng.standard_normal((4, 8)).astype(np.float32)
        width = {}
        for method in METHODS:
            low, up = vn.compute_bounds(model, x, 0.1, method=method)
            width[method] = up - low
        ratios.append(np.mean(width["crown"] / width["ibp"]))
        ratios_cibp.append(np.mean(width["crown-ibp"] / width["ibp"]))
    # Measured: CROWN ≈ 0.12 of IBP's width, CROWN-IBP ≈ 0.33.
    assert np.mean(ratios) < 0.5
    assert np.mean(ratios_cibp) < 0.8
    # Tighter intermediate bounds help: CROWN beats CROWN-IBP on average.
    assert np.mean(ratios) < np.mean(ratios_cibp)


NETS = {
    "relu_mlp": lambda seed: random_mlp(seed),
    "gelu_mlp": lambda seed: random_mlp(seed, (8, 8), act=layers.GeLU),
    "sigmoid_mlp": lambda seed: random_mlp(seed, (8, 8), act=layers.Sigmoid),
    "leaky_mlp": lambda seed: random_mlp(
        seed, (8, 8), act=lambda: layers.LeakyReLU(0.2)
    ),
}


def conv_net(seed, act=layers.Tanh):
    rng = np.random.default_rng(seed)
    model = keras.Sequential(
        [
            layers.Input((6, 6, 2)),
            layers.Conv2D(4, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.Conv2D(4, 2),
            act(),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    return randomize_weights(model, rng, scale=1.5), rng


NETS["conv_net"] = conv_net


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("net", list(NETS))
def test_crown_never_looser_than_ibp(net, norm):
    for seed in range(3):
        model, rng = NETS[net](seed)
        for input_range in (None, (0.0, 1.0)):
            x = random_inputs(model.inputs[0].shape[1:], 3, rng, input_range)
            eps = 0.15 if norm == "linf" else 0.6
            y = rng.integers(0, model.outputs[0].shape[-1], size=3)
            bounds = {
                m: vn.compute_bounds(
                    model, x, eps, method=m, norm=norm, input_range=input_range
                )
                for m in METHODS
            }
            margins = {
                m: vn.margin_bounds(
                    model, x, y, eps, method=m, norm=norm, input_range=input_range
                )
                for m in METHODS
            }
            ibp_low, ibp_up = bounds["ibp"]
            for m in ("crown", "crown-ibp"):
                low, up = bounds[m]
                # CROWN's intermediate intervals are tighter than IBP's, so its
                # own IBP pass may differ from plain IBP by float rounding.
                tol = 1e-6 * (1 + np.abs(ibp_low) + np.abs(ibp_up))
                assert np.all(low >= ibp_low - tol), (net, m)
                assert np.all(up <= ibp_up + tol), (net, m)
                finite = np.isfinite(margins["ibp"])
                assert np.all(margins[m][finite] >= margins["ibp"][finite] - 1e-5), (
                    net,
                    m,
                )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_margin_bounds_match_compute_bounds_with_spec(method, norm):
    model, rng = conv_net(5)
    x = random_inputs((6, 6, 2), 4, rng, (0.0, 1.0))
    y = np.array([0, 1, 2, 1])
    classes = 3
    # Row j of C[b] is e_{y_b} - e_j: it bounds f_y - f_j.
    C = np.zeros((4, classes, classes), dtype=np.float32)
    C[np.arange(4), :, y] = 1.0
    C -= np.eye(classes, dtype=np.float32)
    margins = vn.margin_bounds(model, x, y, 0.05, method=method, norm=norm)
    low, up = vn.compute_bounds(model, x, 0.05, method=method, norm=norm, C=C)
    assert margins.shape == (4, classes) and low.shape == (4, classes)
    assert np.all(np.isposinf(margins[np.arange(4), y]))
    mask = np.ones_like(margins, dtype=bool)
    mask[np.arange(4), y] = False
    np.testing.assert_allclose(margins[mask], low[mask], rtol=1e-6, atol=1e-6)
    # The margins are sound lower bounds of f_y - f_j over the set.
    ext = empirical_extremes(model, x, 0.05, norm, C=C)
    assert_contains(low, up, ext, f"margin/{method}/{norm}")
    # Folding C into the last layer beats subtracting the output intervals.
    out_low, out_up = vn.compute_bounds(model, x, 0.05, method=method, norm=norm)
    naive = out_low[np.arange(4), y][:, None] - out_up
    assert np.all(margins[mask] >= naive[mask] - 1e-5)


def test_batch_size_does_not_change_bounds():
    # ReLU only: the smooth relaxations pick among slopes whose mean gaps tie
    # exactly, so 1-ulp differences between batched and single convolutions
    # may legitimately pick another (equally sound) line there.
    model, rng = conv_net(6, act=layers.ReLU)
    x = random_inputs((6, 6, 2), 5, rng)
    for method in METHODS:
        full = vn.compute_bounds(model, x, 0.1, method=method)
        split = vn.compute_bounds(model, x, 0.1, method=method, batch_size=2)
        single = vn.compute_bounds(model, x[2:3], 0.1, method=method)
        np.testing.assert_allclose(full, split, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(full[0][2:3], single[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(full[1][2:3], single[1], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# float64
# ---------------------------------------------------------------------------


NETS["relu_conv_net"] = lambda seed: conv_net(seed, act=layers.ReLU)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("net", ["relu_mlp", "leaky_mlp", "relu_conv_net", "gelu_mlp"])
def test_float64_agrees_with_float32_and_is_sound(net, norm):
    model, rng = NETS[net](11)
    x = random_inputs(model.inputs[0].shape[1:], 2, rng, (0.0, 1.0))
    eps = 0.1 if norm == "linf" else 0.4
    ext = empirical_extremes(model, x, eps, norm, (0.0, 1.0))
    # Smooth relaxations choose between slopes whose mean gaps tie exactly
    # (see test_relaxations.py::test_smooth_relaxation_is_stable), so float
    # rounding may pick another sound line: compare those more loosely.
    tol = 1e-2 if net == "gelu_mlp" else 1e-4
    for method in METHODS:
        kw = dict(method=method, norm=norm, input_range=(0.0, 1.0))
        low32, up32 = vn.compute_bounds(model, x, eps, dtype="float32", **kw)
        low64, up64 = vn.compute_bounds(model, x, eps, dtype="float64", **kw)
        np.testing.assert_allclose(low64, low32, rtol=tol, atol=tol)
        np.testing.assert_allclose(up64, up32, rtol=tol, atol=tol)
        assert_contains(low64, up64, ext, f"float64/{method}")


def test_float64_bounds_are_float64():
    model, rng = random_mlp(0, (4,))
    x = rng.standard_normal((2, 8))
    for method in METHODS:
        low, up = vn.compute_bounds(model, x, 0.1, method=method, dtype="float64")
        assert low.dtype == np.float64 and up.dtype == np.float64, method


def test_float64_bounds_have_float64_precision():
    # Two stacked Dense layers: every method must return the exact range of
    # x -> (x W1 + b1) W2 + b2, which numpy computes in float64.
    rng = np.random.default_rng(3)
    model = keras.Sequential([layers.Input((3,)), layers.Dense(3), layers.Dense(2)])
    randomize_weights(model, rng)
    (W1, b1), (W2, b2) = (
        [w.astype(np.float64) for w in layer.get_weights()] for layer in model.layers
    )
    x = rng.standard_normal((1, 3))
    W = W1 @ W2
    centre = x @ W + b1 @ W2 + b2
    exact_low = centre - 0.1 * np.abs(W).sum(0)
    for method in METHODS:
        low, _ = vn.compute_bounds(model, x, 0.1, method=method, dtype="float64")
        np.testing.assert_allclose(low, exact_low, rtol=1e-12, err_msg=method)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "gelu", "relu"])
def test_hidden_bounds_are_the_prefix_networks_crown_bounds(act):
    """CROWN refines every neuron that feeds an activation: its interval
    equals the CROWN output bounds of the network cut at that layer. Smooth
    activations need this for stable neurons too (their relaxation depends on
    the whole interval), ReLU-family ones only for straddling neurons."""
    act_layer = {
        "sigmoid": layers.Sigmoid,
        "tanh": layers.Tanh,
        "gelu": layers.GeLU,
        "relu": layers.ReLU,
    }[act]
    model, rng = random_mlp(7, (10, 10, 10), act=act_layer)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    eps = 0.2 if act == "relu" else 0.08
    graph = vn.bounds.BoundGraph(model)
    xt = keras.ops.convert_to_tensor(x)
    with torch.no_grad():
        hidden = crown_pass(graph, xt, LinfBall(eps))
    checked = stable = 0
    for depth in (3, 5):  # the second and third Dense layers
        prefix = keras.Sequential([layers.Input((8,)), *model.layers[:depth]])
        low, up = vn.compute_bounds(prefix, x, eps, method="crown")
        ibp_low, ibp_up = vn.compute_bounds(prefix, x, eps, method="ibp")
        got_low, got_up = (keras.ops.convert_to_numpy(b) for b in hidden[depth])
        if act == "relu":
            # Exact once the sign is known: only rows that straddle zero are
            # refined (a row still straddling in some sample was one of them).
            keep = ((got_low < 0) & (got_up > 0)).any(axis=0)
            assert keep.sum() >= 3
            got_low, got_up, low, up = (b[:, keep] for b in (got_low, got_up, low, up))
            ibp_low, ibp_up = ibp_low[:, keep], ibp_up[:, keep]
        np.testing.assert_allclose(got_low, low, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_up, up, rtol=1e-5, atol=1e-5)
        checked += low.size
        stable += np.sum((ibp_low > 0) | (ibp_up < 0))
        # The refinement matters: CROWN beats IBP clearly here.
        assert np.mean(up - low) < 0.9 * np.mean(ibp_up - ibp_low)
    if act != "relu":
        assert stable > checked // 4, "too few stable neurons to test the rule"


def test_max_pooling_inputs_are_refined_whole():
    """Max pooling's relaxation depends on its inputs' whole intervals, so
    CROWN refines every neuron feeding it, even ReLU outputs (which never
    straddle zero): they equal the prefix network's CROWN bounds."""
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [
            layers.Input((6, 6, 2)),
            layers.Conv2D(3, 3, padding="same"),
            layers.ReLU(),
            layers.Conv2D(3, 3, padding="same"),
            layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    model = randomize_weights(model, rng, scale=1.5)
    x = random_inputs((6, 6, 2), 2, rng)
    eps = 0.05
    graph = vn.bounds.BoundGraph(model)
    with torch.no_grad():
        hidden = crown_pass(graph, keras.ops.convert_to_tensor(x), LinfBall(eps))
    prefix = keras.Sequential([layers.Input((6, 6, 2)), *model.layers[:4]])
    low, up = vn.compute_bounds(prefix, x, eps, method="crown")
    ibp_low, ibp_up = vn.compute_bounds(prefix, x, eps, method="ibp")
    got_low, got_up = (keras.ops.convert_to_numpy(b) for b in hidden[4])
    np.testing.assert_allclose(got_low, low, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_up, up, rtol=1e-5, atol=1e-5)
    assert np.mean(up - low) < 0.9 * np.mean(ibp_up - ibp_low)


@pytest.mark.parametrize("method", ["ibp", "crown", "crown-ibp", "alpha-crown"])
def test_a_bound_method_gives_both_sides_by_default(method):
    """``method.bounds(graph, x, perturbation)`` is public: with no side named
    it returns both, equal to ``compute_bounds``."""
    model, rng = random_mlp(3, (6,))
    x = rng.standard_normal((2, 8)).astype(np.float32)
    resolved = vn.bounds.api.resolve_method(method)
    graph = vn.bounds.BoundGraph(model)
    low, up = resolved.bounds(graph, keras.ops.convert_to_tensor(x), LinfBall(0.1))
    assert low is not None and up is not None
    want = vn.compute_bounds(model, x, 0.1, method=method)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(low), want[0], rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(up), want[1], rtol=1e-5)
