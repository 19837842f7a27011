"""The pure relaxation functions of ``verinet.bounds.relaxations``.

Every relaxation promises ``lw*x + lb <= f(x) <= uw*x + ub`` on ``[l, u]``.
We check that on a dense grid (endpoints included) against ``f`` evaluated in
float64, for many intervals: tiny, huge, all-negative, all-positive,
straddling zero, around GeLU's minimum, in the saturated tails. We also check
the lines are reasonably tight.
"""

import math

import keras
import numpy as np
import pytest
import torch
from keras import ops

from verinet import layers
from verinet.bounds.relaxations import leaky_relu_relaxation, smooth_relaxation

# ---------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------

HAND_PICKED = [
    (-1.0, 1.0),
    (-2.0, 2.0),
    (-1.5, 2.5),
    (-2.5, 1.5),
    (0.0, 0.0),
    (2.0, 2.0),
    (-3.0, -3.0),
    (0.0, 1.0),
    (-1.0, 0.0),
    (-5.0, -4.0),
    (3.0, 7.0),
    (-1e-6, 1e-6),
    (1e-7, 2e-7),
    (-0.7518, -0.7517),  # GeLU's minimum
    (-0.76, -0.74),
    (-3.0, -0.5),
    (-30.0, -29.0),  # saturated tails
    (29.0, 30.0),
    (-1e3, 1e3),  # huge
    (-1e4, 1.0),
    (-1.0, 1e4),
    (-1e4, -1e4 + 1.0),
    (1e3, 1e3 + 1e-3),
    (-0.001, 1000.0),
    (-1000.0, 0.001),
]


def random_intervals(n=400, seed=0):
    """Intervals of every scale and position, as float32 (lower, upper)."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.1, 1.0, 5.0, 50.0], size=n)
    centre = rng.standard_normal(n) * scale
    width = 10 ** rng.uniform(-7, 3, size=n)
    start = centre - width * rng.uniform(0, 1, size=n)
    lower = np.concatenate([[a for a, _ in HAND_PICKED], start])
    upper = np.concatenate([[b for _, b in HAND_PICKED], start + width])
    lower32 = lower.astype(np.float32)
    upper32 = np.maximum(upper.astype(np.float32), lower32)
    return lower32, upper32


def grid(lower, upper, points=1001):
    """A dense float64 grid per interval, endpoints included: ``(n, points)``."""
    lo, up = lower.astype(np.float64), upper.astype(np.float64)
    t = np.linspace(0.0, 1.0, points)
    return lo[:, None] + (up - lo)[:, None] * t


def relax_numpy(fn, lower, upper):
    """Call a relaxation on float32 tensors; return float64 numpy lines."""
    out = fn(ops.convert_to_tensor(lower), ops.convert_to_tensor(upper))
    return [ops.convert_to_numpy(v).astype(np.float64) for v in out]


def assert_sound(lines, truth, lower, upper, name, rel=0.0):
    """``lw*x+lb <= f(x) <= uw*x+ub`` on the grid, up to ``rel`` relative slack."""
    lw, lb, uw, ub = lines
    xs = grid(lower, upper)
    f = truth(xs)
    low_line = lw[:, None] * xs + lb[:, None]
    up_line = uw[:, None] * xs + ub[:, None]
    # Float64 evaluation error of the lines themselves, plus ``rel``.
    slack = 1e-12 * (1 + np.abs(lw[:, None] * xs) + np.abs(lb[:, None]) + np.abs(f))
    slack = slack + rel * (1 + np.abs(xs) + np.abs(f))
    assert np.all(np.isfinite(lines)), f"{name}: non-finite relaxation"
    bad_low = low_line > f + slack
    bad_up = up_line < f - slack
    for bad, side in ((bad_low, "lower"), (bad_up, "upper")):
        if bad.any():
            i, j = np.argwhere(bad)[0]
            pytest.fail(
                f"{name}: {side} line cuts f on [{lower[i]!r}, {upper[i]!r}] at "
                f"x={xs[i, j]!r}: f={f[i, j]!r}, line="
                f"{(low_line if side == 'lower' else up_line)[i, j]!r}"
            )


def _t(fn):
    return lambda x: fn(torch.as_tensor(x, dtype=torch.float64)).numpy()


SMOOTH = {
    "sigmoid": (layers.Sigmoid(), _t(torch.sigmoid)),
    "tanh": (layers.Tanh(), _t(torch.tanh)),
    "gelu": (layers.GeLU(), _t(lambda x: torch.nn.functional.gelu(x))),
    "gelu_tanh": (
        layers.GeLU(approximate=True),
        _t(lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    ),
}

# ---------------------------------------------------------------------------
# ReLU / LeakyReLU
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 0.5, 1.0])
def test_leaky_relu_relaxation_sound(slope):
    lower, upper = random_intervals()
    lines = relax_numpy(
        lambda lo, up: leaky_relu_relaxation(lo, up, slope), lower, upper
    )

    def truth(x):
        return np.maximum(x, slope * x)

    # Coefficients are rounded to float32 (no slack is added for ReLU), so the
    # chord may miss an endpoint by float32 rounding of its coefficients.
    assert_sound(lines, truth, lower, upper, f"leaky_relu({slope})", rel=1e-6)


def test_relu_relaxation_exact_on_stable_and_adaptive_lower():
    lower = np.array([0.5, -3.0, -1.0, -3.0, -2.0, 0.0, -4.0], dtype=np.float32)
    upper = np.array([2.0, -1.0, 3.0, 1.0, 2.0, 0.0, 0.0], dtype=np.float32)
    lw, lb, uw, ub = relax_numpy(
        lambda lo, up: leaky_relu_relaxation(lo, up, 0.0), lower, upper
    )
    # Stable active [0.5, 2] and inactive [-3, -1]: the exact linear piece.
    np.testing.assert_array_equal([lw[0], lb[0], uw[0], ub[0]], [1, 0, 1, 0])
    np.testing.assert_array_equal([lw[1], lb[1], uw[1], ub[1]], [0, 0, 0, 0])
    # Unstable [-1, 3]: chord slope 3/4, intercept 3/4; u > -l so lower slope 1.
    np.testing.assert_allclose([lw[2], lb[2], uw[2], ub[2]], [1, 0, 0.75, 0.75])
    # Unstable [-3, 1]: chord slope 1/4, intercept 3/4; u < -l so lower slope 0.
    np.testing.assert_allclose([lw[3], lb[3], uw[3], ub[3]], [0, 0, 0.25, 0.75])
    # [-2, 2]: u == -l, the lower slope is 0 (strict comparison).
    np.testing.assert_allclose([lw[4], lb[4], uw[4], ub[4]], [0, 0, 0.5, 1.0])
    # Degenerate [0, 0] and [-4, 0] are stable: finite, exact lines.
    assert np.all(np.isfinite([lw, lb, uw, ub]))
    np.testing.assert_array_equal([uw[5] * 0 + ub[5], uw[6] * 0 + ub[6]], [0, 0])


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_relu_layers_relax_with_their_own_slope(slope):
    """``layer.relax`` is the layer's relaxation: ReLU's and LeakyReLU's
    lines are those of ``leaky_relu_relaxation`` at their slope, and sound."""
    layer = layers.ReLU() if slope == 0.0 else layers.LeakyReLU(slope)
    lower, upper = random_intervals(seed=5)
    lines = relax_numpy(layer.relax, lower, upper)
    want = relax_numpy(
        lambda lo, up: leaky_relu_relaxation(lo, up, slope), lower, upper
    )
    for got, expected in zip(lines, want, strict=True):
        np.testing.assert_array_equal(got, expected)
    # As in test_leaky_relu_relaxation_sound: float32 coefficients, no slack.
    assert_sound(
        lines, lambda x: np.maximum(x, slope * x), lower, upper, "layer", rel=1e-6
    )


def test_leaky_relu_relaxation_tight():
    # On [l, u] the chord's largest gap is at 0: (1-a)(-l)u/(u-l) <= (u-l)/4.
    lower, upper = random_intervals(seed=1)
    for slope in (0.0, 0.1, 0.3):
        lw, lb, uw, ub = relax_numpy(
            lambda lo, up, a=slope: leaky_relu_relaxation(lo, up, a), lower, upper
        )
        xs = grid(lower, upper)
        f = np.maximum(xs, slope * xs)
        gap = (uw[:, None] * xs + ub[:, None] - f).max(axis=1)
        width = upper.astype(np.float64) - lower
        assert np.all(gap <= (1 - slope) * width / 4 + 1e-5 * (1 + np.abs(upper)))


# ---------------------------------------------------------------------------
# Smooth activations (GeLU both forms, Sigmoid, Tanh)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_relaxation_sound(name):
    layer, truth = SMOOTH[name]
    lower, upper = random_intervals()
    lines = relax_numpy(layer.relax, lower, upper)
    assert_sound(lines, truth, lower, upper, name)


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_relaxation_sound_float64(name):
    layer, truth = SMOOTH[name]
    lower, upper = random_intervals(seed=3)
    lo64, up64 = lower.astype(np.float64), upper.astype(np.float64)
    lines = relax_numpy(layer.relax, lo64, up64)
    assert_sound(lines, truth, lo64, up64, f"{name}/float64")


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_relaxation_tight(name):
    layer, truth = SMOOTH[name]
    rng = np.random.default_rng(2)
    a, b = rng.uniform(-1, 1, size=(2, 300))
    lower = np.minimum(a, b).astype(np.float32)
    upper = np.maximum(a, b).astype(np.float32)
    lw, lb, uw, ub = relax_numpy(layer.relax, lower, upper)
    mid = (lower.astype(np.float64) + upper) / 2
    f_mid = truth(mid)
    up_gap = uw * mid + ub - f_mid
    low_gap = f_mid - (lw * mid + lb)
    assert up_gap.max() < 0.5 and low_gap.max() < 0.5
    # Much tighter in fact: the curve deviates from a line by at most
    # curvature * width^2 / 8, so sensible lines stay within a few times that.
    width = upper.astype(np.float64) - lower
    allowed = layer.curvature * width**2 + 1e-4
    assert np.all(up_gap <= allowed) and np.all(low_gap <= allowed)


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_relaxation_float64_is_as_tight_as_float64_allows(name):
    """In float64 the rounding slack is float64's (1e-13 relative), not
    float32's: on narrow intervals the lines hug the curve to within the
    curvature term, far below the 1e-6 a float32 slack would add."""
    layer, truth = SMOOTH[name]
    rng = np.random.default_rng(4)
    centre = rng.uniform(-3, 3, size=200)
    width = rng.uniform(1e-5, 1e-4, size=200)
    lower, upper = centre - width / 2, centre + width / 2
    out = layer.relax(ops.convert_to_tensor(lower), ops.convert_to_tensor(upper))
    assert all(keras.backend.standardize_dtype(v.dtype) == "float64" for v in out)
    lw, lb, uw, ub = (ops.convert_to_numpy(v) for v in out)
    assert_sound((lw, lb, uw, ub), truth, lower, upper, f"{name}/float64 narrow")
    xs = grid(lower, upper, points=11)
    f = truth(xs)
    up_gap = (uw[:, None] * xs + ub[:, None] - f).max(axis=1)
    low_gap = (f - lw[:, None] * xs - lb[:, None]).max(axis=1)
    allowed = layer.curvature * width**2 + 1e-10
    assert np.all(up_gap <= allowed) and np.all(low_gap <= allowed)


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_relaxation_converges_to_tangent(name):
    layer, truth = SMOOTH[name]
    centre = np.linspace(-4, 4, 41)
    for width in (1e-2, 1e-4):
        lower = (centre - width / 2).astype(np.float32)
        upper = (centre + width / 2).astype(np.float32)
        lw, lb, uw, ub = relax_numpy(layer.relax, lower, upper)
        xs = grid(lower, upper, 11)
        f = truth(xs)
        gap = np.maximum(
            (uw[:, None] * xs + ub[:, None] - f).max(1),
            (f - lw[:, None] * xs - lb[:, None]).max(1),
        )
        assert gap.max() < 1e-3 * width + 1e-5, (name, width, gap.max())


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_relaxation_is_stable(name):
    layer, _ = SMOOTH[name]
    rng = np.random.default_rng(5)
    lower = rng.uniform(-3, 1, 2000).astype(np.float32)
    upper = (lower + rng.uniform(0.05, 3, 2000)).astype(np.float32)
    a = relax_numpy(layer.relax, lower, upper)
    # Widen every interval by one float32 ulp on each side.
    b = relax_numpy(
        layer.relax,
        np.nextafter(lower, np.float32(-np.inf)),
        np.nextafter(upper, np.float32(np.inf)),
    )
    # The line is chosen among candidates, so a threshold can be crossed, but
    # only rarely and with a small jump: near-ties go to the first candidate.
    for before, after, what in zip(a, b, ("lw", "lb", "uw", "ub"), strict=True):
        jump = np.abs(before - after)
        assert np.mean(jump > 1e-4) <= 0.002, what
        assert jump.max() < 1e-2, what


# ---------------------------------------------------------------------------
# The generic smooth_relaxation on other curvature-bounded functions
# ---------------------------------------------------------------------------

GENERIC = {
    # name: (fn, derivative, curvature bound, float64 truth)
    "sin": (ops.sin, ops.cos, 1.0, np.sin),
    "cos": (ops.cos, lambda x: -ops.sin(x), 1.0, np.cos),
    "softplus": (
        ops.softplus,
        ops.sigmoid,
        0.25,
        lambda x: np.logaddexp(0.0, x),
    ),
    "half_square_clip": (
        # x^2/2 on [-3, 3], linear outside: |f''| <= 1.
        lambda x: ops.where(ops.abs(x) <= 3, x * x / 2, 3 * ops.abs(x) - 4.5),
        lambda x: ops.clip(x, -3.0, 3.0),
        1.0,
        lambda x: np.where(np.abs(x) <= 3, x * x / 2, 3 * np.abs(x) - 4.5),
    ),
}


@pytest.mark.parametrize("samples", [2, 5, 17])
@pytest.mark.parametrize("name", list(GENERIC))
def test_generic_smooth_relaxation_sound(name, samples):
    fn, derivative, curvature, truth = GENERIC[name]
    lower, upper = random_intervals(n=200, seed=4)
    keep = np.maximum(np.abs(lower), np.abs(upper)) < 1e3  # sin/cos accuracy
    lower, upper = lower[keep], upper[keep]
    lines = relax_numpy(
        lambda lo, up: smooth_relaxation(fn, derivative, lo, up, curvature, samples),
        lower,
        upper,
    )
    assert_sound(lines, truth, lower, upper, f"{name}/{samples}")


def test_smooth_curvature_constants_bound_second_derivative():
    """The engine's soundness rests on ``curvature >= max |f''|``."""
    x = torch.linspace(-12, 12, 480001, dtype=torch.float64, requires_grad=True)
    fns = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": torch.nn.functional.gelu,
        "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    }
    for name, fn in fns.items():
        (d1,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), x)
        assert d2.abs().max().item() <= SMOOTH[name][0].curvature, name
    # The derivative each layer states matches autograd's.
    xs = torch.linspace(-8, 8, 1601, dtype=torch.float64, requires_grad=True)
    for name, (layer, _) in SMOOTH.items():
        (d1,) = torch.autograd.grad(fns[name](xs).sum(), xs)
        mine = layer.derivative(ops.convert_to_tensor(xs.detach()))
        mine = ops.convert_to_numpy(mine)
        np.testing.assert_allclose(mine, d1.numpy(), atol=1e-10, err_msg=name)


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_interval_minimum_is_below_true_minimum(approximate):
    layer = layers.GeLU(approximate=approximate)
    form = "tanh" if approximate else "none"
    xs = torch.linspace(-1.0, -0.5, 200001, dtype=torch.float64)
    true_min = torch.nn.functional.gelu(xs, approximate=form).min().item()
    lo, up = layer.interval(
        ops.convert_to_tensor(np.array([-1.0, -0.8, -0.76], dtype=np.float32)),
        ops.convert_to_tensor(np.array([0.5, -0.7, -0.74], dtype=np.float32)),
    )
    lo = ops.convert_to_numpy(lo)
    assert np.all(lo <= true_min)
    assert np.all(lo >= true_min - 1e-5)  # and not needlessly loose
    assert math.isfinite(float(ops.convert_to_numpy(up).max()))


def test_smooth_relaxation_lines_are_tangent_and_chord_where_concave():
    # On [0.5, 2.5] the sigmoid is concave: the tangent at the midpoint is a
    # valid upper line, and of all tangents it leaves the least mean gap.
    # The relaxation offers that slope among its candidates, so its upper line
    # must be as close to the curve as the midpoint tangent, up to its slack.
    lower = np.array([0.5, 1.0, 0.6], dtype="float64")
    upper = np.array([2.5, 3.0, 1.4], dtype="float64")

    def sig(v):
        return 1 / (1 + np.exp(-v))

    lw, lb, uw, ub = (
        ops.convert_to_numpy(t)
        for t in smooth_relaxation(
            ops.sigmoid,
            lambda v: ops.sigmoid(v) * (1 - ops.sigmoid(v)),
            ops.convert_to_tensor(lower),
            ops.convert_to_tensor(upper),
            curvature=0.1,
        )
    )
    for i in range(len(lower)):
        xs = np.linspace(lower[i], upper[i], 401)
        m = (lower[i] + upper[i]) / 2
        tangent = sig(m) + sig(m) * (1 - sig(m)) * (xs - m)
        assert np.all(tangent >= sig(xs) - 1e-12)  # the reference is an upper line
        line = uw[i] * xs + ub[i]
        slack = 0.1 * ((upper[i] - lower[i]) / 16) ** 2 / 8 + 1e-6
        assert np.mean(line - sig(xs)) <= np.mean(tangent - sig(xs)) + slack
        # Below a concave curve the chord is the tightest line.
        slope = (sig(upper[i]) - sig(lower[i])) / (upper[i] - lower[i])
        chord = sig(lower[i]) + slope * (xs - lower[i])
        below = lw[i] * xs + lb[i]
        assert np.mean(sig(xs) - below) <= np.mean(sig(xs) - chord) + slack
