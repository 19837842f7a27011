"""``smoothing_certified_accuracy``: randomized smoothing's certified
accuracy against the L2 radius."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from verinet._validation import check_vector
from verinet.errors import InvalidInputError
from verinet.plot._common import figure_and_axes

_GRID = 256

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from verinet.smoothing.report import SmoothingReport


def smoothing_certified_accuracy(
    report: SmoothingReport,
    radii: Sequence[float] | np.ndarray | None = None,
    ax: Axes | None = None,
    label: str | None = None,
    color: str | None = None,
) -> Figure:
    """Plot certified accuracy against the L2 radius, as a step curve.

    Certified accuracy at radius ``r`` is the fraction of samples predicted
    correctly with a certified radius ``>= r``
    (``report.certified_accuracy``); it only falls, at the samples' radii.
    By default it is evaluated on a fine grid from 0 to a little past the
    largest certified radius (5% past it, so the last drop shows; ``sigma``
    when every radius is 0) together with every sample's radius, so the
    steps are exact.

    Args:
        report: a ``vn.smoothing.SmoothingReport``.
        radii: optional radii to evaluate at (numbers ``>= 0``), drawn in
            increasing order.
        ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.
        label: the line's legend label (default ``"sigma = ..."``), to tell
            several reports apart on one ``ax``.
        color: the line's colour (default: the axes' next colour).

    Returns:
        The ``matplotlib.figure.Figure``; its line's x-data are the radii and
        y-data ``report.certified_accuracy(radii)``.

    Raises:
        InvalidInputError: for something other than a ``SmoothingReport``, a
            report without samples, or radii that are empty, negative or not
            numbers.

    Example:
        >>> report = vn.smoothing.SmoothedClassifier(model, 0.25).certify(
        ...     x_test, y_test, n=10_000)
        >>> fig = vn.plot.smoothing_certified_accuracy(report)
    """
    from verinet.smoothing.report import SmoothingReport

    if not isinstance(report, SmoothingReport):
        raise InvalidInputError(
            "Expected a vn.smoothing.SmoothingReport (from "
            f"SmoothedClassifier.certify), got {type(report).__name__}."
        )
    if report.num_samples == 0:
        raise InvalidInputError("The report holds no samples: nothing to plot.")
    if radii is None:
        radii = _default_radii(report)
    else:
        radii = np.sort(check_vector("radii", radii, low=0.0))
    accuracy = report.certified_accuracy(radii)

    figure, ax = figure_and_axes(ax)
    ax.step(
        radii,
        accuracy,
        where="pre",
        label=f"sigma = {report.sigma:g}" if label is None else label,
        color=color,
    )
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_title(
        f"Randomized smoothing: {report.num_samples} samples, n={report.n}, "
        f"alpha={report.alpha:g}",
        fontsize="small",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def _default_radii(report) -> np.ndarray:
    """A fine grid to the largest radius, plus each sample's radius."""
    radius = report.radius[np.isfinite(report.radius)]
    top = float(radius.max()) if radius.size else 0.0
    if top <= 0:
        top = float(report.sigma) if report.sigma > 0 else 1.0
    grid = np.linspace(0.0, 1.05 * top, _GRID)
    return np.unique(np.concatenate([grid, radius]))
