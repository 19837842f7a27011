"""What makes a ``CertificationReport`` consistent: the checks ``validate``
runs (on every report ``certify`` returns and every report read from a file).

- ``VERDICTS``, ``INTEGERS``, ``FLOATS`` and ``ARRAYS`` name the per-sample
  arrays, in the order they are hashed and stored.
- ``validate`` raises ``InvalidInputError`` naming the first setting, array
  or sample that is wrong.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

from verinet.bounds.perturbation import NORMS
from verinet.certify.integrity import in_perturbation_set, rows
from verinet.errors import InvalidInputError

if TYPE_CHECKING:
    from verinet.certify.report import CertificationReport

#: The three disjoint boolean verdict arrays.
VERDICTS = ("verified", "falsified", "unknown")
#: The integer arrays: true labels and clean predictions.
INTEGERS = ("labels", "predictions")
#: The float arrays: margin lower bounds and counterexamples.
FLOATS = ("margin_lower", "adversarial_examples")
#: Every per-sample array, in the order they are hashed and stored.
ARRAYS = (*VERDICTS, *INTEGERS, *FLOATS, "inputs")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DTYPES = ("float32", "float64")


def validate(report: CertificationReport) -> None:
    """Raise unless ``report`` is internally consistent.

    See ``CertificationReport.validate`` for what is checked.

    Args:
        report: a ``CertificationReport``.

    Returns:
        ``None``.

    Raises:
        InvalidInputError: naming the first thing (and the first sample)
            that is wrong.

    Example:
        >>> validate(report)
    """
    _check_settings(report)
    n = _check_shapes(report)
    verified, falsified = report.verified, report.falsified
    correct = report.predictions == report.labels
    with np.errstate(invalid="ignore"):
        margins_ok = np.all(report.margin_lower > 0, axis=1)  # NaN fails
    _first(
        verified & ~correct,
        lambda i: (
            f"sample {i} is marked verified but is misclassified "
            f"(prediction {report.predictions[i]}, label {report.labels[i]})"
        ),
    )
    _first(
        verified & ~margins_ok,
        lambda i: (
            f"sample {i} is marked verified but its margin lower bounds "
            f"{report.margin_lower[i].tolist()} are not all > 0, so nothing proves it"
        ),
    )
    _first(
        ~correct & ~falsified,
        lambda i: (
            f"sample {i} is misclassified (prediction "
            f"{report.predictions[i]}, label {report.labels[i]}) but not falsified"
        ),
    )
    adversarial = rows(report.adversarial_examples)
    _first(
        ~falsified & ~np.all(np.isnan(adversarial), axis=1),
        lambda i: f"sample {i} is not falsified but has a counterexample",
    )
    _first(
        falsified & ~np.all(np.isfinite(adversarial), axis=1),
        lambda i: (
            f"sample {i} is marked falsified but its counterexample is "
            "missing (NaN) or not finite"
        ),
    )
    attacked = np.flatnonzero(falsified & correct)
    # Without the clean inputs (reports of verinet 0.1) only the input
    # range can be checked: each point is then its own centre.
    centres = (
        report.inputs if report.inputs is not None else report.adversarial_examples
    )
    inside = in_perturbation_set(
        report.adversarial_examples[attacked],
        centres[attacked],
        report.epsilon,
        report.norm,
        report.input_range,
    )
    outside = np.zeros(n, dtype=bool)
    outside[attacked[~inside]] = True
    where = "input_range" if report.inputs is None else "perturbation set"
    _first(
        outside,
        lambda i: (
            f"sample {i} is marked falsified but its counterexample lies "
            f"outside the {where} ({report.norm}, epsilon={report.epsilon!r}, "
            f"input_range={report.input_range})"
        ),
    )


def _check_settings(report) -> None:
    def bad(message):
        raise InvalidInputError(message)

    eps = report.epsilon
    if np.ndim(eps) > 0:
        array = np.asarray(eps)
        if not np.issubdtype(array.dtype, np.number) or not (
            np.all(np.isfinite(array)) and np.all(array >= 0)
        ):
            bad("epsilon must be finite and >= 0 for every feature.")
        if report.norm != "linf":
            bad(f"a per-feature epsilon is an L-inf box, but norm is {report.norm!r}.")
    else:
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)):
            bad(f"epsilon must be a number, got {eps!r}.")
        if not (math.isfinite(eps) and eps >= 0):
            bad(f"epsilon must be finite and >= 0, got {eps!r}.")
    if report.norm not in NORMS:
        bad(f"norm must be one of {', '.join(map(repr, NORMS))}, got {report.norm!r}.")
    rng = report.input_range
    if rng is not None:
        try:
            low, high = (np.asarray(v, dtype=np.float64) for v in rng)
        except (TypeError, ValueError):
            bad(f"input_range must be null or [low, high], got {rng!r}.")
        if not (
            np.all(np.isfinite(low))
            and np.all(np.isfinite(high))
            and np.all(low <= high)
        ):
            bad("input_range needs finite low <= high (for every feature).")
    shape = report.adversarial_examples.shape[1:]
    for name, value in (
        ("epsilon", eps),
        *zip(("input_range low", "input_range high"), rng or (), strict=False),
    ):
        if np.ndim(value) > 0 and np.shape(value) != shape:
            bad(
                f"a per-feature {name} has shape {np.shape(value)}, not the "
                f"input shape {shape}."
            )
    if not isinstance(report.method, str) or not report.method:
        bad(f"method must be a non-empty string, got {report.method!r}.")
    if report.attack is not None and not isinstance(report.attack, str):
        bad(f"attack must be a string or null, got {report.attack!r}.")
    if report.dtype is not None and report.dtype not in _DTYPES:
        bad(f"dtype must be one of {_DTYPES} or null, got {report.dtype!r}.")
    for name in ("weights_sha256", "onnx_weights_sha256"):
        value = getattr(report, name)
        if value is not None and not (
            isinstance(value, str) and _SHA256.fullmatch(value)
        ):
            bad(f"{name} must be 64 lower-case hex digits or null, got {value!r}.")
    if not isinstance(report.extra, dict):
        bad(f"extra must be a dict, got {type(report.extra).__name__}.")


def _check_shapes(report) -> int:
    """The number of samples, after checking every array's shape and dtype."""
    n = report.num_samples
    for name in ARRAYS:
        array = getattr(report, name)
        if array is None and name == "inputs":
            continue
        array = np.asarray(array)
        kind = "b" if name in VERDICTS else "iu" if name in INTEGERS else "f"
        if array.dtype.kind not in kind:
            wanted = {"b": "bool", "iu": "integer", "f": "float"}[kind]
            raise InvalidInputError(
                f"{name} must be a {wanted} array, got dtype {array.dtype}."
            )
        if array.ndim < 1 or array.shape[0] != n:
            raise InvalidInputError(
                f"{name} has shape {array.shape}; every per-sample array needs "
                f"{n} rows (one per sample)."
            )
    classes = report.margin_lower.shape[1] if report.margin_lower.ndim == 2 else 0
    if classes < 1:
        raise InvalidInputError(
            f"margin_lower must be (samples, classes), got {report.margin_lower.shape}."
        )
    for name in INTEGERS:
        values = getattr(report, name)
        _first(
            (values < 0) | (values >= classes),
            lambda i, name=name, values=values: (
                f"{name}[{i}] = {values[i]} is not a class index in [0, {classes})"
            ),
        )
    if report.adversarial_examples.ndim < 2:
        raise InvalidInputError(
            "adversarial_examples must be (samples, *input_shape), got "
            f"{report.adversarial_examples.shape}."
        )
    if report.inputs is not None and (
        report.inputs.shape != report.adversarial_examples.shape
    ):
        raise InvalidInputError(
            f"inputs has shape {report.inputs.shape} but adversarial_examples "
            f"{report.adversarial_examples.shape}; they must match."
        )
    return n


def _first(mask, message) -> None:
    """Raise naming the first sample where ``mask`` holds."""
    hits = np.flatnonzero(mask)
    if len(hits):
        raise InvalidInputError(
            message(int(hits[0])) + f" ({len(hits)} such sample(s) in all)."
        )
