"""Certified radius per sample: the largest radius a bound method proves,
found by bisection with one bound pass per step for a whole batch."""

from __future__ import annotations

import numpy as np
from keras import ops

from verinet.bounds.api import _model_dtype, _samples_in_budget, margin_spec
from verinet.bounds.memory import no_grad
from verinet.bounds.perturbation import NORMS
from verinet.bounds.precision import float64_promotion, ieee_float32

#: Bisection steps by default: the radius is found to ``radius_max / 2**12``.
DEFAULT_STEPS = 12


def _proven_at(graph, method, x, y, radii, norm, input_range, classes, dtype):
    """Per sample: every margin bound positive on the ball of its own radius."""
    shape = (len(x),) + (1,) * (x.ndim - 1)
    ball = NORMS[norm](radii.reshape(shape), input_range)
    xb = ops.convert_to_tensor(x, dtype=dtype)
    C = ops.convert_to_tensor(margin_spec(y, classes), dtype=dtype)
    low, _ = method.bounds(graph, xb, ball, C, True, False)
    low = ops.convert_to_numpy(low).astype(np.float64)
    low[np.arange(len(y)), y] = np.inf
    return np.all(low > 0, axis=1)


def certified_radii(
    model,
    graph,
    x: np.ndarray,
    y: np.ndarray,
    method,
    norm: str,
    input_range,
    radius_max: float,
    proven_at: float = 0.0,
    proven: np.ndarray | None = None,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    dtype=None,
) -> np.ndarray:
    """The largest radius in ``[0, radius_max]`` that ``method`` proves for
    each sample, to within ``radius_max / 2**steps``.

    Each sample's interval starts at ``[proven_at, radius_max]`` where
    ``proven`` is set (a radius already proven, e.g. ``certify``'s epsilon)
    and at ``[0, proven_at or radius_max]`` elsewhere (``proven_at`` is then
    taken as already tried with ``method``: not proven there); every bisection step
    bounds the whole batch at once, each sample on the ball of its own
    midpoint. A returned radius ``r > 0`` was proven (the ball of radius
    ``r`` keeps the label), so every smaller ball keeps it too. Bounds are
    not always monotone in the radius, so a larger proven radius may exist.
    ``0.0`` means none was proven (a misclassified input included).

    Args:
        model: the (converted) Keras model.
        graph: its ``BoundGraph``.
        x: inputs ``(n, *input_shape)``; y: integer labels ``(n,)``.
        method: a bound method object.
        norm: ``"linf"`` or ``"l2"``.
        input_range: ``None`` or ``(low, high)`` as the perturbation takes it.
        radius_max: the largest radius searched, ``> 0``.
        proven_at: a radius proven for the samples in ``proven``.
        proven: boolean ``(n,)`` or ``None``.
        steps: bisection steps.
        batch_size: samples bounded at a time (default: all that fit the
            memory budget).
        dtype: ``"float32"`` or ``"float64"`` (default: the model's).

    Returns:
        float64 ``(n,)`` radii.
    """
    n = len(x)
    classes = model.outputs[0].shape[-1]
    dtype = _model_dtype(model, dtype)
    proven = np.zeros(n, dtype=bool) if proven is None else np.asarray(proven)
    low = np.where(proven, proven_at, 0.0).astype(np.float64)
    high = np.where(proven, radius_max, proven_at or radius_max).astype(np.float64)
    probe = NORMS[norm](radius_max, input_range)
    fits = _samples_in_budget(graph, method, x, probe, None, dtype)
    size = max(1, min(batch_size or n, fits))
    with float64_promotion(dtype == "float64"), ieee_float32(), no_grad():
        for start in range(0, n, size):
            part = slice(start, start + size)
            xb, yb = x[part], y[part]
            lo, hi = low[part], high[part]  # views: updated in place
            # A sample not proven at ``proven_at`` (the caller bounded it
            # there already) starts bisecting below it; the others are first
            # tried at their top.
            ask = proven[part] | (proven_at <= 0)
            if ask.any():
                index = np.flatnonzero(ask)
                top = _proven_at(
                    graph,
                    method,
                    xb[index],
                    yb[index],
                    hi[index],
                    norm,
                    input_range,
                    classes,
                    dtype,
                )
                lo[index[top]] = hi[index[top]]
            for _ in range(steps):
                todo = lo < hi
                if not todo.any():
                    break
                mid = (lo + hi) / 2
                ok = _proven_at(
                    graph,
                    method,
                    xb[todo],
                    yb[todo],
                    mid[todo],
                    norm,
                    input_range,
                    classes,
                    dtype,
                )
                index = np.flatnonzero(todo)
                lo[index[ok]] = mid[index[ok]]
                hi[index[~ok]] = mid[index[~ok]]
    return low


def resolve_radius_max(radius_max, epsilon, input_range) -> float:
    """``radius_max`` as given, else 4 x ``epsilon``, else the input range's
    width (1.0 without one)."""
    from verinet._validation import check_number

    if radius_max is not None:
        return check_number("radius_max", radius_max, low=0, low_open=True)
    if np.ndim(epsilon) == 0 and float(epsilon) > 0:
        return 4.0 * float(epsilon)
    if input_range is not None:
        low, high = (np.asarray(v, dtype=np.float64) for v in input_range)
        width = float(np.max(high - low))
        if width > 0:
            return width
    return 1.0
