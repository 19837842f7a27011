"""Figures of certification results: the robustness curve, verdicts per
class and the margin histogram."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from verinet._validation import check_int, check_vector
from verinet.errors import InvalidInputError
from verinet.plot._common import (
    COLORS,
    check_certification_report,
    class_namer,
    figure_and_axes,
    same_lengths,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from verinet.certify.report import CertificationReport


_CURVE_KEYS = ("epsilons", "verified_accuracy", "attack_accuracy")
VERDICTS = ("verified", "attacked", "misclassified", "unknown")


def robustness_curve(curve: Mapping, ax: Axes | None = None) -> Figure:
    """Plot verified and attack accuracy against epsilon.

    Verified accuracy (proven by the bound method) is a lower bound on the
    robust accuracy at each radius and attack accuracy (what the attack did
    not break) an upper bound; the band between them, where the true robust
    accuracy lies, is shaded. A dashed horizontal line marks the clean
    accuracy when the dict holds it. Points are drawn in increasing epsilon.

    Args:
        curve: the dict ``vn.robustness_curve(...)`` returns: ``"epsilons"``,
            ``"verified_accuracy"``, ``"attack_accuracy"`` (one value per
            epsilon), and optionally ``"clean_accuracy"``, ``"method"`` and
            ``"norm"``.
        ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.

    Returns:
        The ``matplotlib.figure.Figure``. Its lines are labelled
        ``"verified accuracy"``, ``"attack accuracy"`` and
        ``"clean accuracy"``.

    Raises:
        InvalidInputError: for a curve that is not a dict, lacks a key, is
            empty, has lists of different lengths, or holds accuracies
            outside ``[0, 1]`` or negative epsilons.

    Example:
        >>> curve = vn.robustness_curve(model, x_test, y_test, [0.01, 0.05, 0.1],
        ...                             input_range=(0, 1))
        >>> fig = vn.plot.robustness_curve(curve)
    """
    if not isinstance(curve, Mapping):
        raise InvalidInputError(
            "curve must be the dict vn.robustness_curve returns, got "
            f"{type(curve).__name__}."
        )
    missing = [key for key in _CURVE_KEYS if key not in curve]
    if missing:
        raise InvalidInputError(
            f"curve lacks {missing}; expected the dict vn.robustness_curve returns "
            f"(keys {list(_CURVE_KEYS)})."
        )
    epsilons = check_vector("curve['epsilons']", curve["epsilons"], low=0.0)
    verified = _accuracies("verified_accuracy", curve["verified_accuracy"])
    attack = _accuracies("attack_accuracy", curve["attack_accuracy"])
    same_lengths(
        {"epsilons": epsilons, "verified_accuracy": verified, "attack_accuracy": attack}
    )
    order = np.argsort(epsilons, kind="stable")
    epsilons, verified, attack = epsilons[order], verified[order], attack[order]

    figure, ax = figure_and_axes(ax)
    ax.fill_between(
        epsilons,
        verified,
        attack,
        color="tab:blue",
        alpha=0.15,
        label="robust accuracy lies here",
    )
    ax.plot(
        epsilons,
        verified,
        marker="o",
        color=COLORS["verified"],
        label="verified accuracy",
    )
    ax.plot(
        epsilons, attack, marker="s", color=COLORS["attacked"], label="attack accuracy"
    )
    clean = curve.get("clean_accuracy")
    if clean is not None:
        ax.axhline(float(clean), color="gray", linestyle="--", label="clean accuracy")
    norm = curve.get("norm")
    ax.set_xlabel(f"epsilon ({norm})" if norm else "epsilon")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    if curve.get("method"):
        ax.set_title(f"Robustness curve ({curve['method']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def verdicts_per_class(
    report: CertificationReport,
    ax: Axes | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Stacked bars per true class: verified / attacked / misclassified /
    unknown.

    The counts are ``report.analyze().per_class``: ``attacked`` are
    correctly classified inputs the attack broke (real vulnerabilities),
    ``misclassified`` clean inputs already wrong, ``unknown`` those whose
    bound was too loose to decide. Each bar's height is the class's sample
    count.

    Args:
        report: a ``vn.CertificationReport``.
        ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.
        class_names: optional names indexed by label, for the x-axis.

    Returns:
        The ``matplotlib.figure.Figure``. ``ax.containers`` holds one bar
        container per verdict, labelled as above, bottom to top.

    Raises:
        InvalidInputError: for something other than a ``CertificationReport``,
            a report without samples, or ``class_names`` that miss a label.

    Example:
        >>> report = vn.certify(model, x_test, y_test, 0.05, input_range=(0, 1))
        >>> fig = vn.plot.verdicts_per_class(report)
    """
    check_certification_report(report)
    per_class = report.analyze().per_class
    labels = sorted(per_class)
    name = class_namer(class_names, labels)
    figure, ax = figure_and_axes(ax, figsize=(max(5.0, 0.6 * len(labels) + 2), 4.0))
    positions = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for verdict in VERDICTS:
        heights = np.array([per_class[label][verdict] for label in labels], float)
        ax.bar(
            positions,
            heights,
            bottom=bottom,
            color=COLORS[verdict],
            label=verdict,
            width=0.8,
        )
        bottom += heights
    ax.set_xticks(positions, [name(label) for label in labels])
    ax.set_xlabel("true class")
    ax.set_ylabel("samples")
    ax.set_title(f"Verdicts per class ({report._settings()})", fontsize="small")
    ax.legend(fontsize="small")
    return figure


def margin_histogram(
    report: CertificationReport, bins: int = 30, ax: Axes | None = None
) -> Figure:
    """Histogram of each sample's smallest margin lower bound.

    The value is ``report.analyze().smallest_margin``: ``min_j`` of the
    lower bound of ``f_y - f_j`` over the perturbation set, for the
    correctly classified samples (misclassified ones have none). A sample
    right of the vertical line at 0 is verified. The bins are ``bins``
    equal bins over the margins' range, shifted so that 0 is a bin edge when
    the range straddles it (one more bin then); bars right of 0 are green,
    the others orange.

    Args:
        report: a ``vn.CertificationReport``.
        bins: the number of bins (an int >= 1; see above).
        ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.

    Returns:
        The ``matplotlib.figure.Figure``; the bar heights sum to the number of
        correctly classified samples.

    Raises:
        InvalidInputError: for something other than a ``CertificationReport``,
            a bad ``bins``, or a report with no correctly classified sample.

    Example:
        >>> fig = vn.plot.margin_histogram(report, bins=40)
    """
    check_certification_report(report)
    bins = check_int("bins", bins)
    margins = report.analyze().smallest_margin
    margins = margins[np.isfinite(margins)]
    if margins.size == 0:
        raise InvalidInputError(
            "The report has no correctly classified sample, so no margin bound to plot."
        )
    figure, ax = figure_and_axes(ax)
    edges = _edges_through_zero(margins, bins)
    _, edges, patches = ax.hist(margins, bins=edges, color=COLORS["unknown"])
    labelled = set()
    for patch, left in zip(patches, edges[:-1], strict=True):
        verified = left >= 0
        patch.set_facecolor(COLORS["verified" if verified else "unknown"])
        if verified not in labelled:
            patch.set_label(
                "margin > 0 (verified)" if verified else "margin <= 0 (not verified)"
            )
            labelled.add(verified)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("smallest margin lower bound  min_j (f_y - f_j)")
    ax.set_ylabel("samples")
    ax.set_title(
        f"{margins.size} correctly classified samples ({report._settings()})",
        fontsize="small",
    )
    ax.legend(fontsize="small")
    return figure


def _accuracies(name: str, values) -> np.ndarray:
    array = check_vector(f"curve[{name!r}]", values, low=0.0)
    if np.any(array > 1):
        raise InvalidInputError(
            f"curve[{name!r}] holds accuracies, fractions in [0, 1]; got "
            f"{array.max():g}."
        )
    return array


def _edges_through_zero(values: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` equal bins over ``values``, moved so that 0 is an edge when
    the values lie on both sides of it."""
    edges = np.histogram_bin_edges(values, bins=bins)
    if not edges[0] < 0 < edges[-1]:
        return edges
    width = edges[1] - edges[0]
    first = np.floor(edges[0] / width)
    last = np.ceil(edges[-1] / width)
    return np.arange(first, last + 1) * width
