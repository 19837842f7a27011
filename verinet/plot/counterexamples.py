"""``counterexamples``: clean inputs beside the adversarial examples the
attack found."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from verinet._validation import check_int
from verinet.errors import InvalidInputError
from verinet.plot._common import check_certification_report, class_namer, new_figure

_PAIRS_PER_ROW = 4

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import FigureBase

    from verinet.certify.report import CertificationReport


def counterexamples(
    report: CertificationReport,
    model: keras.Model | None = None,
    count: int = 8,
    class_names: Sequence[str] | None = None,
    fig: FigureBase | None = None,
) -> FigureBase:
    """A grid of clean inputs, each beside the counterexample the attack found.

    Only attack-found counterexamples are shown: falsified samples whose
    clean input is correctly classified (a misclassified input is its own
    counterexample and has nothing to show), in sample order, at most
    ``count`` of them, four pairs per row. Each pair is the clean input
    (``report.inputs``), titled with its index and label, and its
    counterexample (``report.adversarial_examples``), titled with the
    model's prediction on it when ``model`` is given.

    How an input is drawn depends on its shape (without the batch axis):

    * ``(H, W)`` or ``(H, W, 1)``: a grey image, the colour scale spanning
      the report's ``input_range`` (else the shown values' range); the
      panel's image data is the input itself.
    * ``(H, W, 3)``: an RGB image; when the value range (as for grey
      images) exceeds ``[0, 1]``, it is rescaled to ``[0, 1]`` for display.
    * ``(F,)`` (a feature vector): a bar per feature, one bar chart for the
      clean input and one for the counterexample.

    Any other shape (e.g. channels-first images) is refused.

    Args:
        report: a ``vn.CertificationReport`` that holds its clean inputs
            (reports of verinet 0.1 do not).
        model: optional Keras model; when given, the counterexamples are
            classified by it and their titles show the prediction.
        count: the most pairs to show (an int >= 1).
        class_names: optional names indexed by label, for the titles.
        fig: a matplotlib ``Figure`` (or ``SubFigure``) to draw the grid in;
            ``None`` makes a new one.

    Returns:
        The ``matplotlib.figure.Figure`` (``fig`` when given). With no
        attack-found counterexample it holds one panel saying so.

    Raises:
        InvalidInputError: for something other than a ``CertificationReport``,
            a report without clean inputs, an input shape that cannot be
            drawn, a bad ``count``, ``class_names`` that miss a label, a
            ``model`` that is not a Keras model, or a ``fig`` that is not a
            matplotlib figure.

    Example:
        >>> report = vn.certify(model, x_test, y_test, 0.1, input_range=(0, 1))
        >>> fig = vn.plot.counterexamples(report, model=model, count=6)
    """
    check_certification_report(report)
    count = check_int("count", count)
    if report.inputs is None:
        raise InvalidInputError(
            "The report does not hold its clean inputs (a report of verinet "
            "0.1): certify again to plot counterexamples."
        )
    draw = _drawer(report.inputs.shape[1:])
    index, adversarial = _attack_found(report, count)
    clean = np.asarray(report.inputs)[index]
    predicted = _predict(model, adversarial) if model is not None else None
    shown = [report.labels, report.predictions]
    if predicted is not None:
        shown.append(predicted)
    name = class_namer(class_names, np.concatenate(shown))
    figure = _figure_or_new(fig, len(index))
    if not len(index):
        ax = figure.add_subplot()
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "No attack-found counterexample\n(no correctly classified sample "
            "was broken by the attack)",
            ha="center",
            va="center",
        )
        return figure

    low, high = _value_range(report, clean, adversarial)
    per_row = min(_PAIRS_PER_ROW, len(index))
    rows = math.ceil(len(index) / per_row)
    axes = figure.subplots(rows, 2 * per_row, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(index):
        row, col = divmod(k, per_row)
        left, right = axes[row, 2 * col], axes[row, 2 * col + 1]
        draw(left, clean[k], low, high)
        draw(right, adversarial[k], low, high)
        left.set_title(f"#{i} label {name(report.labels[i])}", fontsize="small")
        right.set_title(
            "adversarial"
            if predicted is None
            else f"adversarial \u2192 {name(predicted[k])}",
            fontsize="small",
        )
    return figure


def _attack_found(report, count: int):
    """Indices and counterexamples of the first ``count`` falsified samples
    whose clean input is correctly classified."""
    index, examples = report.counterexamples()
    correct = report.predictions[index] == report.labels[index]
    finite = np.all(np.isfinite(examples.reshape(len(index), -1)), axis=1)
    keep = correct & finite
    return index[keep][:count], np.asarray(examples[keep][:count])


def _predict(model, inputs) -> np.ndarray:
    import keras

    if not isinstance(model, keras.Model):
        raise InvalidInputError(
            f"model must be a Keras model, got {type(model).__name__}."
        )
    if not len(inputs):
        return np.zeros(0, dtype=np.int64)
    return np.argmax(model.predict(inputs, verbose=0), axis=-1)


def _figure_or_new(fig, pairs: int):
    from matplotlib.figure import FigureBase

    if fig is None:
        per_row = max(1, min(_PAIRS_PER_ROW, pairs))
        rows = max(1, math.ceil(pairs / per_row))
        return new_figure((3.0 * per_row, 1.8 * rows + 0.4))
    if not isinstance(fig, FigureBase):
        raise InvalidInputError(
            "fig must be a matplotlib Figure (or None for a new one), got "
            f"{type(fig).__name__}."
        )
    return fig


def _value_range(report, clean, adversarial) -> tuple[float, float]:
    """The colour scale: the report's input range, else the shown values'."""
    if report.input_range is not None:
        low, high = report.input_range
        return float(np.min(low)), float(np.max(high))
    both = np.concatenate([clean.ravel(), adversarial.ravel()])
    return float(both.min()), float(both.max())


def _drawer(shape: tuple):
    """The function drawing one input of ``shape`` on an axes."""
    if len(shape) == 1:
        return _draw_vector
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] == 1):
        return _draw_grey
    if len(shape) == 3 and shape[-1] == 3:
        return _draw_rgb
    raise InvalidInputError(
        f"Cannot draw inputs of shape {tuple(shape)}: counterexamples draws "
        "images (H, W), (H, W, 1) or (H, W, 3) (channels last) and feature "
        "vectors (F,)."
    )


def _draw_grey(ax, image, low, high):
    image = image.reshape(image.shape[:2])
    ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_rgb(ax, image, low, high):
    if low < 0 or high > 1:
        image = (image - low) / (high - low if high > low else 1.0)
    ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_vector(ax, values, low, high):
    ax.axis("on")
    ax.bar(np.arange(len(values)), values, color="tab:blue", width=0.8)
    ax.set_ylim(min(low, 0.0), high if high > low else low + 1.0)
    ax.set_xticks([])
    ax.tick_params(labelsize="x-small")
