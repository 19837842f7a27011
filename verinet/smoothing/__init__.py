"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): L2 certificates that
hold with high probability, for any base classifier.

``SmoothedClassifier(model, sigma)`` wraps a Keras classifier; its
``predict`` and ``certify`` are the paper's PREDICT and CERTIFY, and
``certify`` returns a ``SmoothingReport``. Train the base model on noise of
the same ``sigma`` with ``compile(robust="smoothing")``.

Example:
    >>> smoothed = vn.smoothing.SmoothedClassifier(model, sigma=0.25)
    >>> report = smoothed.certify(x_test, y_test, n0=100, n=100_000, seed=0)
    >>> report.certified_accuracy([0.0, 0.25, 0.5, 0.75])
"""

from verinet.smoothing.classifier import SmoothedClassifier
from verinet.smoothing.report import ABSTAIN, SmoothingReport
from verinet.smoothing.statistics import (
    abstain_p_value,
    certified_radius,
    lower_confidence_bound,
)

__all__ = [
    "ABSTAIN",
    "SmoothedClassifier",
    "SmoothingReport",
    "abstain_p_value",
    "certified_radius",
    "lower_confidence_bound",
]
