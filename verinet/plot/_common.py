"""Pieces every figure shares: where to draw, and checks of its inputs.

matplotlib is imported inside the functions, so ``import verinet`` does not
pay for it; figures are built with ``matplotlib.figure.Figure`` and never
registered with pyplot (no ``plt.show()``, no backend switch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from verinet.errors import InvalidInputError

# One colour per verdict, used by every figure that shows verdicts.
COLORS = {
    "verified": "tab:green",
    "attacked": "tab:red",
    "misclassified": "tab:gray",
    "unknown": "tab:orange",
}


def new_figure(figsize: tuple[float, float]):
    """A figure outside pyplot's list of figures (safe without a display)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def figure_and_axes(ax, figsize: tuple[float, float] = (6.0, 4.0)):
    """``(figure, axes)``: ``ax`` and its figure, or a new figure with one axes.

    Raises:
        InvalidInputError: when ``ax`` is neither ``None`` nor a matplotlib
            ``Axes``.
    """
    from matplotlib.axes import Axes

    if ax is None:
        figure = new_figure(figsize)
        return figure, figure.add_subplot()
    if not isinstance(ax, Axes):
        raise InvalidInputError(
            "ax must be a matplotlib Axes (or None for a new figure), got "
            f"{type(ax).__name__}."
        )
    return ax.figure, ax


def check_certification_report(report):
    """Refuse anything but a ``CertificationReport`` with samples."""
    from verinet.certify.report import CertificationReport

    if not isinstance(report, CertificationReport):
        raise InvalidInputError(
            "Expected a vn.CertificationReport (from vn.certify or "
            f"model.certify), got {type(report).__name__}."
        )
    if report.num_samples == 0:
        raise InvalidInputError("The report holds no samples: nothing to plot.")
    return report


def same_lengths(series: dict) -> int:
    """The common length of named 1-D arrays; an error naming each otherwise."""
    lengths = {name: len(values) for name, values in series.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise InvalidInputError(
            f"These series must have one value per entry, but their lengths "
            f"differ ({shown})."
        )
    return next(iter(lengths.values()))


def class_namer(class_names, labels) -> Callable[[int], str]:
    """``label -> text``: the name from ``class_names``, or the number.

    Raises:
        InvalidInputError: when ``class_names`` is not a sequence of names
            covering every label in ``labels``.
    """
    if class_names is None:
        return str
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise InvalidInputError(
            "class_names must be a list of names indexed by label, got "
            f"{type(class_names).__name__}."
        )
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else -1
    if top >= len(class_names):
        raise InvalidInputError(
            f"class_names has {len(class_names)} names, but the labels go up "
            f"to {top}: give one name per class."
        )
    return lambda label: str(class_names[int(label)])
