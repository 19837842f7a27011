"""matplotlib figures of training, certification, bounds and smoothing.

Every function returns a ``matplotlib.figure.Figure``. Given ``ax`` (or
``fig`` for the counterexample grid) it draws there; otherwise it builds a
figure outside pyplot, so nothing needs a display and pyplot's state is left
alone: save it with ``fig.savefig(...)`` or show it in a notebook.

Example:
    >>> history = model.fit(x, y, epochs=10)
    >>> vn.plot.training_curves(history).savefig("training.png")
    >>> report = vn.certify(model, x_test, y_test, 0.05, input_range=(0, 1))
    >>> vn.plot.verdicts_per_class(report)
"""

from verinet.plot.bounds import bound_widths
from verinet.plot.certification import (
    margin_histogram,
    robustness_curve,
    verdicts_per_class,
)
from verinet.plot.counterexamples import counterexamples
from verinet.plot.smoothing import smoothing_certified_accuracy
from verinet.plot.training import training_curves

__all__ = [
    "bound_widths",
    "counterexamples",
    "margin_histogram",
    "robustness_curve",
    "smoothing_certified_accuracy",
    "training_curves",
    "verdicts_per_class",
]
