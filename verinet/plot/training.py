"""``training_curves``: a ``History``'s losses and accuracies per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from verinet.errors import InvalidInputError
from verinet.plot._common import figure_and_axes, new_figure, same_lengths

EPSILON_KEY = "epsilon"

if TYPE_CHECKING:
    import keras
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def training_curves(
    history: keras.callbacks.History | Mapping[str, Sequence[float]],
    metrics: str | Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Plot losses and accuracy-type metrics per epoch, with the epsilon ramp.

    Without ``ax`` the figure has one panel for the losses (keys containing
    ``"loss"``) and one for the other metrics (accuracies, including
    ``val_certified_accuracy`` and ``val_attack_accuracy`` written by
    ``vn.callbacks.CertifyEvery``); with ``ax`` everything is drawn there.
    Validation series (``val_...``) are dashed, in the colour of their
    training series. When the history holds ``"epsilon"`` (written by
    ``compile(robust=...)``), the epsilon schedule is drawn on a twin
    y-axis (right) of the last panel, as a dotted line labelled
    ``"epsilon"``.

    Args:
        history: a ``keras.callbacks.History`` (what ``fit`` returns) or its
            ``.history`` dict ``{name: [value per epoch]}``.
        metrics: the keys to plot (a name or a list of names); default every
            key containing ``"loss"`` or ``"acc"``. ``"epsilon"`` is always
            drawn on the twin axis when present, never on the left one.
        ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.

    Returns:
        The ``matplotlib.figure.Figure`` (``ax.figure`` when ``ax`` is given).

    Raises:
        InvalidInputError: for a history that is neither a ``History`` nor a
            dict, an empty history, a metric it does not hold, non-numeric
            values, or series of different lengths.

    Example:
        >>> history = model.fit(x, y, epochs=10, callbacks=[
        ...     vn.callbacks.CertifyEvery(x_val, y_val)])
        >>> fig = vn.plot.training_curves(history)
        >>> fig.savefig("training.png")
    """
    from matplotlib.ticker import MaxNLocator

    logs, epoch_index = _logs(history)
    names = _chosen(logs, metrics)
    series = {name: _values(name, logs[name]) for name in names}
    epsilon = _values(EPSILON_KEY, logs[EPSILON_KEY]) if EPSILON_KEY in logs else None
    if epsilon is not None:
        same_lengths({**series, EPSILON_KEY: epsilon})
    n = same_lengths(series)
    epochs = (
        np.asarray(epoch_index) + 1
        if epoch_index is not None and len(epoch_index) == n
        else np.arange(1, n + 1)
    )

    losses = [name for name in names if "loss" in name]
    others = [name for name in names if "loss" not in name]
    if ax is None:
        groups = [group for group in (losses, others) if group]
        figure = new_figure((5.2 * len(groups), 3.8))
        panels = list(figure.subplots(1, len(groups), squeeze=False)[0])
    else:
        figure, ax = figure_and_axes(ax)
        groups, panels = [names], [ax]

    colors = _colors(names)
    for panel, group in zip(panels, groups, strict=True):
        for name in group:
            panel.plot(
                epochs,
                series[name],
                label=name,
                color=colors[name],
                linestyle="--" if name.startswith("val_") else "-",
                marker="o",
                markersize=3,
            )
        panel.set_ylabel(_ylabel(group))
        panel.set_xlabel("epoch")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.grid(alpha=0.3)
    last = legend_on = panels[-1]
    handles, labels = last.get_legend_handles_labels()
    if epsilon is not None:
        twin = last.twinx()
        twin.plot(
            epochs, epsilon, label=EPSILON_KEY, color="black", linestyle=":", alpha=0.7
        )
        twin.set_ylabel(EPSILON_KEY)
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
        legend_on = twin  # drawn above the left axis's lines
    legend_on.legend(handles, labels, fontsize="small")
    for panel in panels[:-1]:
        panel.legend(fontsize="small")
    return figure


def _logs(history) -> tuple[dict, list | None]:
    """``(history dict, epoch indices or None)`` from a History or a dict."""
    import keras

    if isinstance(history, keras.callbacks.History):
        logs, epochs = history.history, list(history.epoch)
    elif isinstance(history, Mapping):
        logs, epochs = history, None
    else:
        raise InvalidInputError(
            "history must be a keras.callbacks.History (what fit returns) or "
            f"its .history dict, got {type(history).__name__}."
        )
    if not logs:
        raise InvalidInputError(
            "The history is empty: fit the model for at least one epoch first."
        )
    return dict(logs), epochs or None


def _chosen(logs: dict, metrics) -> list[str]:
    """The keys to draw on the left axis, in the history's order."""
    if metrics is None:
        names = [
            name
            for name in logs
            if name != EPSILON_KEY and ("loss" in name or "acc" in name)
        ]
    else:
        if isinstance(metrics, str):
            metrics = [metrics]
        try:
            metrics = list(metrics)
        except TypeError as exc:
            raise InvalidInputError(
                f"metrics must be a key or a list of keys, got {metrics!r}."
            ) from exc
        if not metrics:
            raise InvalidInputError("metrics is empty: name at least one key.")
        missing = [m for m in metrics if m not in logs]
        if missing:
            raise InvalidInputError(
                f"The history has no {missing}; its keys are {sorted(logs)}."
            )
        names = [m for m in dict.fromkeys(metrics) if m != EPSILON_KEY]
    if not names:
        raise InvalidInputError(
            "Nothing to plot on the left axis: the history holds no loss or "
            f"accuracy values besides the epsilon schedule (its keys: "
            f"{sorted(logs)}); name the ones to plot with metrics=[...]."
        )
    return names


def _values(name: str, values) -> np.ndarray:
    """One history series as a non-empty 1-D float array (NaN allowed)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"History key {name!r} must hold one number per epoch, got {values!r}."
        ) from exc
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError(
            f"History key {name!r} must hold a non-empty list of numbers (one "
            f"per epoch), got shape {array.shape}."
        )
    return array


def _colors(names: list[str]) -> dict:
    """A colour per series; ``val_x`` shares the colour of ``x``."""
    cycle = [f"C{i}" for i in range(10)]
    bases = list(dict.fromkeys(n.removeprefix("val_") for n in names))
    return {n: cycle[bases.index(n.removeprefix("val_")) % 10] for n in names}


def _ylabel(group: list[str]) -> str:
    if all("loss" in name for name in group):
        return "loss"
    if all("acc" in name for name in group):
        return "accuracy"
    return "value"
