"""Sound linear relaxations of scalar activations, as pure functions.

Each function takes elementwise pre-activation bounds ``lower <= upper`` and
returns ``(lw, lb, uw, ub)`` such that, for every ``x`` in
``[lower, upper]``::

    lw * x + lb <= f(x) <= uw * x + ub
"""

from __future__ import annotations

import keras
from keras import ops

# Relative float slack added to relaxations of smooth functions, so that the
# rounding of f at sampled points cannot make a line cut the curve.
_FLOAT_SLACK = {"float16": 1e-3, "bfloat16": 1e-2, "float32": 1e-6, "float64": 1e-13}


def leaky_relu_lines(lower, upper, negative_slope: float = 0.0):
    """``(lw, uw, ub)`` of the CROWN relaxation of ``max(x, a*x)``; ``lb = 0``.

    Upper: the chord from ``(l, f(l))`` to ``(u, f(u))`` on unstable neurons.
    Lower: the line through the origin with slope 1 where ``u > -l`` and slope
    ``a`` otherwise (the adaptive choice of Zhang et al. 2018).
    Stable neurons get the exact linear piece.
    """
    # ReLU first: with u+ = max(u, 0) and n = max(-l, 0) the chord's slope is
    # u+ / (u+ + n), which is also exact on stable neurons (1 or 0).
    up, nlow = ops.relu(upper), ops.relu(-lower)
    width = up + nlow
    chord = up / ops.where(width > 0, width, ops.ones_like(width))
    offset = nlow * chord
    adaptive = ops.cast(up > nlow, lower.dtype)
    a = negative_slope
    if a == 0:
        return adaptive, chord, offset
    # max(x, a x) = a x + (1 - a) relu(x), and 1 - a >= 0 keeps the sides.
    return a + (1.0 - a) * adaptive, a + (1.0 - a) * chord, (1.0 - a) * offset


def leaky_relu_relaxation(lower, upper, negative_slope: float = 0.0):
    """CROWN relaxation of ``max(x, a*x)`` for ``0 <= a <= 1`` (ReLU at ``a=0``).

    The lines of ``leaky_relu_lines`` as ``(lw, lb, uw, ub)`` with ``lb = 0``.
    """
    lw, uw, ub = leaky_relu_lines(lower, upper, negative_slope)
    return lw, ops.zeros_like(lower), uw, ub


def smooth_relaxation(fn, derivative, lower, upper, curvature: float, samples=17):
    """Sound lines around a smooth scalar function on ``[lower, upper]``.

    For each candidate slope ``k`` (the chord's and the tangent slopes at the
    two ends and the middle) the offsets are the extremes of
    ``g(x) = f(x) - k x`` over the interval, found on a grid of ``samples``
    points and widened by ``curvature * h**2 / 8`` (the most a function with
    ``|g''| = |f''| <= curvature`` can rise above its linear interpolation
    between grid points ``h`` apart) plus a float-rounding slack. Each side
    keeps the slope that leaves the least mean gap to the curve. This holds
    for any twice differentiable ``fn`` whose second derivative is bounded by
    ``curvature`` everywhere, whatever slope is chosen.

    Args:
        fn: the activation, applied elementwise.
        derivative: its derivative (for tangent slopes).
        lower: elementwise lower bounds of the input.
        upper: elementwise upper bounds of the input.
        curvature: an upper bound on ``|f''|`` over the real line.
        samples: grid points per interval (at least 2).

    Returns:
        ``(lw, lb, uw, ub)``.
    """
    width = upper - lower
    tiny = ops.cast(1e-6, lower.dtype)
    safe_width = ops.where(width > tiny, width, ops.ones_like(width))
    middle = (lower + upper) / 2
    chord = ops.where(
        width > tiny, (fn(upper) - fn(lower)) / safe_width, derivative(middle)
    )
    slopes = ops.stack(
        [chord, derivative(middle), derivative(lower), derivative(upper)], axis=-1
    )
    steps = ops.cast(ops.arange(samples), lower.dtype) / (samples - 1)
    grid = lower[..., None] + width[..., None] * steps
    f_grid = fn(grid)
    g = f_grid[..., None, :] - slopes[..., :, None] * grid[..., None, :]
    h = width / (samples - 1)
    scale = ops.max(ops.abs(f_grid), axis=-1) + ops.max(
        ops.abs(slopes), axis=-1
    ) * ops.maximum(ops.abs(lower), ops.abs(upper))
    dtype = keras.backend.standardize_dtype(lower.dtype)
    slack = curvature * h * h / 8.0 + _FLOAT_SLACK[dtype] * (1.0 + scale)
    g_mean = ops.mean(g, axis=-1)
    upper_offsets = ops.max(g, axis=-1) + slack[..., None]
    lower_offsets = ops.min(g, axis=-1) - slack[..., None]
    pick_u = _first_near_best(upper_offsets - g_mean)
    pick_l = _first_near_best(g_mean - lower_offsets)

    def take(values, index):
        return ops.squeeze(ops.take_along_axis(values, index, axis=-1), -1)

    return (
        take(slopes, pick_l),
        take(lower_offsets, pick_l),
        take(slopes, pick_u),
        take(upper_offsets, pick_u),
    )


def _first_near_best(gaps):
    """Index of the first candidate whose gap is within rounding of the best.

    Candidates often tie exactly (when the grid maximum sits at the interval's
    midpoint every slope leaves the same mean gap); preferring the first of
    the near-best keeps the chosen line stable under float noise.
    """
    best = ops.min(gaps, axis=-1, keepdims=True)
    near = gaps <= best + 1e-3 * (ops.abs(best) + 1e-6)
    return ops.expand_dims(ops.argmax(ops.cast(near, "int32"), axis=-1), -1)
