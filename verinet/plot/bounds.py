"""``bound_widths``: how loose each bound method is, layer by layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from verinet.errors import InvalidInputError
from verinet.plot._common import figure_and_axes

if TYPE_CHECKING:
    import keras
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from verinet.bounds.methods import BoundMethod
    from verinet.bounds.perturbation import Perturbation


def bound_widths(
    model: keras.Model,
    x: np.ndarray,
    epsilon: float | np.ndarray | Perturbation,
    methods: Sequence[str | BoundMethod] = ("ibp", "crown", "alpha-crown"),
    norm: str = "linf",
    input_range: tuple | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Plot the mean bound width of every layer, for each bound method.

    For each method, every node of the model's bound graph (each layer, in
    topological order; the input is left out) gets the mean of
    ``upper - lower`` over the samples and the layer's units, on a log
    scale. Hidden layers' bounds are those the method computes for its
    relaxations (IBP: intervals; CROWN: back-substitution for the layers
    that feed activations; alpha-CROWN: its optimized ones); the output
    layer's are the method's own output bounds (what ``vn.compute_bounds``
    returns). Computed in float32, without autograd.

    Args:
        model: a Keras model of verinet layers, or a stock Keras model that
            ``vn.convert`` can map.
        x: inputs ``(batch, *input_shape)``.
        epsilon: the radius (or a ``vn.bounds.LinfBall``/``L2Ball``), as in
            ``vn.compute_bounds``.
        methods: method names (``"ibp"``, ``"crown"``, ``"crown-ibp"``,
            ``"alpha-crown"``) or bound method objects, one line each.
        norm: ``"linf"`` or ``"l2"``.
        input_range: optional ``(low, high)`` valid input box.
        ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.

    Returns:
        The ``matplotlib.figure.Figure``: one line per method, labelled with
        the method's name (its ``repr`` where two methods share a name),
        whose y-data are the mean widths per layer; the x tick labels are the
        layers' names.

    Raises:
        InvalidInputError: for an empty or unknown method, inputs that do not
            fit the model, or a bad epsilon, norm or input range.
        UnsupportedLayerError: for a layer without a bound rule.

    Example:
        >>> fig = vn.plot.bound_widths(model, x_test[:16], 0.02,
        ...                            input_range=(0, 1))
    """
    from keras import ops

    from verinet._validation import check_x
    from verinet.bounds.alpha import AlphaCROWN
    from verinet.bounds.api import make_perturbation, resolve_method
    from verinet.bounds.graph import bound_model
    from verinet.bounds.memory import no_grad
    from verinet.bounds.precision import ieee_float32

    methods = _methods(methods, resolve_method)
    model, graph = bound_model(model)
    x = check_x(model, x).astype(np.float32)
    perturbation = make_perturbation(epsilon, norm, input_range, x, x.shape[1:])
    names = [node.name for node in graph.nodes[1:]]
    figure, ax = figure_and_axes(ax, figsize=(max(6.0, 0.7 * len(names) + 2), 4.0))
    widths = []
    with ieee_float32(), no_grad():
        xt = ops.convert_to_tensor(x, dtype="float32")
        for method in methods:
            if isinstance(method, AlphaCROWN):
                nodes = method.node_bounds(graph, xt, perturbation)
            else:
                nodes = method.hidden.node_bounds(graph, xt, perturbation)
            nodes = list(nodes)
            nodes[graph.output] = method.bounds(graph, xt, perturbation)
            widths.append([_mean_width(low, up) for low, up in nodes[1:]])

    positions = np.arange(len(names))
    for label, values in zip(_labels(methods), widths, strict=True):
        ax.plot(positions, values, marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xticks(positions, names, rotation=45, ha="right")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean bound width")
    ax.set_title(f"Bound widths, {perturbation.norm} ball, {len(x)} samples")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return figure


def _methods(methods, resolve) -> list:
    """Bound method objects, in order; a single name or object is a list of
    one."""
    from verinet.bounds.methods import BoundMethod

    if isinstance(methods, (str, BoundMethod)):
        methods = [methods]
    try:
        methods = list(methods)
    except TypeError as exc:
        raise InvalidInputError(
            f"methods must be a list of bound method names or objects, got {methods!r}."
        ) from exc
    if not methods:
        raise InvalidInputError(
            "methods is empty: name at least one, e.g. ('ibp', 'crown')."
        )
    return [resolve(method) for method in methods]


def _labels(methods: list) -> list[str]:
    """Each method's name; its ``repr`` where two share a name."""
    names = [method.name for method in methods]
    return [
        repr(method) if names.count(method.name) > 1 else method.name
        for method in methods
    ]


def _mean_width(low, up) -> float:
    from keras import ops

    return float(np.mean(ops.convert_to_numpy(up) - ops.convert_to_numpy(low)))
