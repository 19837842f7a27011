"""Public entry points: ``compute_bounds`` and ``margin_bounds``."""

from __future__ import annotations

import numpy as np
from keras import ops

from verinet._validation import (
    check_batch_size,
    check_choice,
    check_epsilon,
    check_feature_epsilon,
    check_feature_range,
    check_input_range,
    check_x,
    check_y,
)
from verinet.bounds.alpha import AlphaCROWN
from verinet.bounds.graph import BoundGraph, bound_model
from verinet.bounds.memory import memory_budget, no_grad
from verinet.bounds.methods import METHODS as _BASE_METHODS
from verinet.bounds.methods import BoundMethod, interval_pass
from verinet.bounds.perturbation import NORMS, LinfBall, unpack_ball
from verinet.bounds.precision import float64_promotion, ieee_float32
from verinet.errors import InvalidInputError

METHODS = {**_BASE_METHODS, AlphaCROWN.name: AlphaCROWN}


def resolve_method(method) -> BoundMethod:
    """Turn ``"ibp" | "crown" | "crown-ibp" | "alpha-crown"`` or a method object
    into an object."""
    if isinstance(method, BoundMethod):
        return method
    return METHODS[check_choice("method", method, tuple(METHODS))]()


def make_perturbation(epsilon, norm="linf", input_range=None, x=None, shape=None):
    """Build the perturbation set after checking its arguments.

    With ``shape`` (the model's input shape) an L-inf ``epsilon`` and the
    two sides of ``input_range`` may also be arrays broadcastable to it: one
    value per feature (a radius of 0 leaves that feature unperturbed).
    ``epsilon`` may also be a ball (``LinfBall``/``L2Ball``), which carries
    its own norm and input range.
    """
    epsilon, norm, input_range = unpack_ball(epsilon, norm, input_range)
    norm = check_choice("norm", norm, tuple(NORMS))
    if shape is None or norm != "linf":
        if shape is not None and (
            np.ndim(epsilon) > 0
            or (input_range is not None and any(np.ndim(v) > 0 for v in input_range))
        ):
            raise InvalidInputError(
                "A per-feature epsilon or input_range (an array) describes an "
                "L-inf box; norm='l2' takes one number for each."
            )
        return NORMS[norm](check_epsilon(epsilon), check_input_range(input_range, x))
    epsilon = check_feature_epsilon(epsilon, shape)
    return LinfBall(epsilon, check_feature_range(input_range, shape, x))


def _model_dtype(model, dtype):
    if dtype is not None:
        return check_choice("dtype", str(dtype), ("float32", "float64"))
    return model.dtype if model.dtype in ("float32", "float64") else "float32"


def bound_batches(
    model,
    x,
    perturbation,
    method,
    C=None,
    lower=True,
    upper=True,
    dtype=None,
    batch_size=None,
    graph=None,
):
    """Run ``method`` over ``x`` in batches; return numpy ``(lower, upper)``.

    ``graph`` is ``model``'s ``BoundGraph`` when the caller has built it
    already (``bound_model``); otherwise it is built here.
    """
    if graph is None:
        graph = BoundGraph(model)
    dtype = _model_dtype(model, dtype)
    batch_size = check_batch_size(batch_size)
    size = len(x) if batch_size is None else batch_size
    size = min(size, _samples_in_budget(graph, method, x, perturbation, C, dtype))
    lows, ups = [], []
    with float64_promotion(dtype == "float64"), ieee_float32(), no_grad():
        for start in range(0, len(x), size):
            xb = ops.convert_to_tensor(x[start : start + size], dtype=dtype)
            Cb = (
                None
                if C is None
                else ops.convert_to_tensor(C[start : start + size], dtype=dtype)
            )
            low, up = method.bounds(graph, xb, perturbation, Cb, lower, upper)
            lows.append(None if low is None else ops.convert_to_numpy(low))
            ups.append(None if up is None else ops.convert_to_numpy(up))
    return _join(lows), _join(ups)


def _samples_in_budget(graph, method, x, perturbation, C, dtype) -> int:
    """How many samples one batch may hold within the memory budget."""
    probe = ops.convert_to_tensor(x[:1], dtype="float32")
    sizes = [
        int(np.prod(low.shape[1:]))
        for low, _ in interval_pass(graph, probe, perturbation)
    ]
    specs = sizes[graph.output] if C is None else C.shape[1]
    floats = method.floats_per_sample(graph, sizes, specs)
    itemsize = 8 if dtype == "float64" else 4
    return max(1, memory_budget() // (floats * itemsize))


def _join(parts):
    return None if parts[0] is None else np.concatenate(parts)


def compute_bounds(
    model,
    x,
    epsilon,
    method="crown",
    norm="linf",
    input_range=None,
    C=None,
    dtype=None,
    batch_size=None,
):
    """Bound a model's outputs over a perturbation set around each input.

    Args:
        model: a Keras model of verinet layers, or a stock Keras model that
            ``vn.convert`` can map (converted once per call).
        x: inputs ``(batch, *input_shape)``.
        epsilon: radius of the ball, in input units; with ``norm="linf"``
            also an array broadcastable to the input shape (one radius per
            feature; 0 keeps a feature fixed); or a ``vn.bounds.LinfBall`` /
            ``L2Ball``, which carries its own norm and input range.
        method: ``"crown"`` (the default, as in ``certify`` and
            ``model.bounds``), ``"ibp"``, ``"crown-ibp"``, ``"alpha-crown"`` or
            a bound method object (e.g. ``vn.bounds.AlphaCROWN(iterations=50)``).
        norm: ``"linf"`` or ``"l2"``.
        input_range: optional ``(low, high)`` valid input box; with
            ``norm="linf"`` either side may be an array broadcastable to the
            input shape.
        C: optional specification ``(batch, specs, classes)``; bounds are then
            on ``C @ output``.
        dtype: ``"float32"`` or ``"float64"`` (default: the model's dtype).
        batch_size: bound this many inputs at a time (default: all at once).

    Returns:
        ``(lower, upper)`` numpy arrays shaped ``(batch, classes)`` or
        ``(batch, specs)``.

    Example:
        >>> lower, upper = vn.compute_bounds(model, x_test[:8], 0.05, method="crown")
    """
    x = check_x(model, x)
    shape = x.shape[1:]
    perturbation = make_perturbation(epsilon, norm, input_range, x, shape)
    method = resolve_method(method)
    classes = model.outputs[0].shape[-1]
    if C is not None:
        C = np.asarray(C)
        if C.ndim != 3 or C.shape[0] != len(x) or C.shape[2] != classes:
            raise InvalidInputError(
                f"C must have shape (batch={len(x)}, specs, classes={classes}), "
                f"got {C.shape}."
            )
    model, graph = bound_model(model)
    lower, upper = bound_batches(
        model,
        x,
        perturbation,
        method,
        C,
        dtype=dtype,
        batch_size=batch_size,
        graph=graph,
    )
    if C is None:  # shaped like the model's output
        shape = (len(x), *model.outputs[0].shape[1:])
        lower, upper = lower.reshape(shape), upper.reshape(shape)
    return lower, upper


def margin_spec(y, classes: int) -> np.ndarray:
    """Specification rows ``e_y - e_j`` for every class ``j`` (row ``y`` is 0)."""
    C = np.zeros((len(y), classes, classes), dtype=np.float32)
    C[np.arange(len(y)), :, y] = 1.0
    C -= np.eye(classes, dtype=np.float32)[None]
    return C


def margin_bounds(
    model,
    x,
    y,
    epsilon,
    method="crown",
    norm="linf",
    input_range=None,
    dtype=None,
    batch_size=None,
):
    """Lower bounds of ``f_y(x') - f_j(x')`` over the perturbation set.

    Args:
        model, x, epsilon, method, norm, input_range, dtype, batch_size: as in
            ``compute_bounds``.
        y: integer labels ``(batch,)``.

    Returns:
        ``(batch, classes)`` numpy array; column ``j`` bounds the margin to
        class ``j`` and column ``y`` is ``+inf``. A sample is robust when every
        entry is positive.

    Example:
        >>> margins = vn.margin_bounds(model, x_test, y_test, 0.05)
        >>> verified = (margins > 0).all(axis=1)
    """
    x = check_x(model, x)
    classes = model.outputs[0].shape[-1]
    y = check_y(y, len(x), classes)
    perturbation = make_perturbation(epsilon, norm, input_range, x, x.shape[1:])
    model, graph = bound_model(model)
    lower, _ = bound_batches(
        model,
        x,
        perturbation,
        resolve_method(method),
        margin_spec(y, classes),
        upper=False,
        dtype=dtype,
        batch_size=batch_size,
        graph=graph,
    )
    lower[np.arange(len(y)), y] = np.inf
    return lower
