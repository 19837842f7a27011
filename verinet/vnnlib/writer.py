"""Write VNN-LIB properties: local L-infinity robustness of one input."""

from __future__ import annotations

import operator

import numpy as np

from verinet.errors import InvalidInputError


def _number(value: float) -> str:
    """``value`` as VNN-LIB text that reads back as exactly the same float64.

    ``repr`` of a Python float is the shortest decimal that rounds back to
    it, and the parser reads decimals exactly (as fractions) before rounding
    to float64, so the round trip is exact. ``-0.0`` is written as ``0.0``.
    """
    return repr(float(value) + 0.0)


def _array(value, name: str, shape) -> np.ndarray:
    """``value`` as float64 broadcast to ``shape``, refusing NaN and non-numbers."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{name} must be a number or an array of numbers, got "
            f"{type(value).__name__}."
        ) from exc
    try:
        array = np.broadcast_to(array, shape)
    except ValueError:
        raise InvalidInputError(
            f"{name} has shape {array.shape}, which does not broadcast to the "
            f"input's shape {tuple(shape)}."
        ) from None
    if np.any(np.isnan(array)):
        raise InvalidInputError(f"{name} contains NaN.")
    return array


def robustness_property(x, label, epsilon, num_classes, input_range=None) -> str:
    """VNN-LIB text for local L-infinity robustness of one input.

    The property's counterexample is an input within ``epsilon`` of ``x``
    (in every coordinate, and inside ``input_range``) at which some class
    other than ``label`` scores at least as high as ``label``: ``vn.verify``
    answers ``"unsat"`` when the network provably keeps ``label`` strictly on
    top over the whole box, ``"sat"`` with such an input otherwise (or
    ``"unknown"``).

    ``X_0 .. X_{n-1}`` are ``x`` flattened in row-major order (as the ONNX
    input is flattened), ``Y_0 .. Y_{k-1}`` the ``num_classes`` outputs. The
    box is ``max(x - epsilon, low) <= X_i <= min(x + epsilon, high)``; every
    number is written as the ``repr`` of a float64, so ``vn.vnnlib.parse``
    reads back exactly that box.

    Pass ``x`` as the values the network sees (float32 data stays exact in
    float64): ``vn.verify`` only confirms float32 counterexamples, so where
    ``epsilon`` is 0 on a feature whose value is not a float32 (e.g. ``0.1``
    in float64) the box holds no float32 input and the answer cannot be
    ``"sat"``.

    Args:
        x: one input (any shape, without a batch axis), finite numbers.
        label: the class that must stay on top, in ``[0, num_classes)``.
        epsilon: radius, ``>= 0``; a number or an array broadcastable to
            ``x``'s shape (a radius per feature).
        num_classes: number of network outputs, ``>= 2``.
        input_range: ``None`` (no clipping) or ``(low, high)``, each a number
            or an array broadcastable to ``x``'s shape; the box is clipped to
            it.

    Returns:
        The property as a string, ready to write to a ``.vnnlib`` file.

    Raises:
        InvalidInputError: for NaN or infinite values in ``x``, a negative or
            NaN ``epsilon``, a label out of range, fewer than two classes, a
            malformed ``input_range``, or a box that is empty or unbounded.

    Example:
        >>> text = vn.vnnlib.robustness_property(x_test[0], 3, 0.02, 10, (0, 1))
        >>> Path("prop.vnnlib").write_text(text)
        >>> vn.verify("net.onnx", "prop.vnnlib", timeout=30)
    """
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"x must be an array of numbers, got {type(x).__name__}."
        ) from exc
    if x.size == 0:
        raise InvalidInputError("x is empty: the property needs at least one input.")
    if np.any(np.isnan(x)):
        raise InvalidInputError(f"x contains {int(np.isnan(x).sum())} NaN values.")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("x contains infinite values.")
    try:
        num_classes = operator.index(num_classes)
    except TypeError:
        raise InvalidInputError(
            f"num_classes must be an integer, got {num_classes!r}."
        ) from None
    if num_classes < 2:
        raise InvalidInputError(
            f"num_classes must be at least 2 (another class must exist to "
            f"overtake the label), got {num_classes}."
        )
    try:
        label = operator.index(label)
    except TypeError:
        raise InvalidInputError(
            f"label must be an integer class index, got {label!r}."
        ) from None
    if not 0 <= label < num_classes:
        raise InvalidInputError(
            f"label {label} is out of range: with {num_classes} classes it must "
            f"be in 0..{num_classes - 1}."
        )
    eps = _array(epsilon, "epsilon", x.shape)
    if np.any(eps < 0):
        raise InvalidInputError(
            f"epsilon must be >= 0, got a minimum of {float(eps.min())!r}."
        )
    lower, upper = x - eps, x + eps
    if input_range is not None:
        try:
            low, high = input_range
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"input_range must be None or a pair (low, high), got {input_range!r}."
            ) from None
        low = _array(low, "input_range's low", x.shape)
        high = _array(high, "input_range's high", x.shape)
        if np.any(low > high):
            raise InvalidInputError("input_range has low > high for some feature.")
        lower, upper = np.maximum(lower, low), np.minimum(upper, high)
    lower, upper = lower.ravel(), upper.ravel()
    if np.any(lower > upper):
        i = int(np.flatnonzero(lower > upper)[0])
        raise InvalidInputError(
            f"The box is empty at feature {i}: x[{i}] = {x.ravel()[i]!r} lies "
            "outside input_range by more than epsilon."
        )
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
        raise InvalidInputError(
            "The box is unbounded (infinite epsilon and no finite input_range); "
            "VNN-LIB needs finite bounds on every input."
        )

    n = x.size
    lines = [
        f"; Local L-infinity robustness of one input ({n} features), label "
        f"{label} of {num_classes} classes.",
        "; A counterexample: an input in the box where another class scores "
        "at least the label.",
        "",
    ]
    lines += [f"(declare-const X_{i} Real)" for i in range(n)]
    lines.append("")
    lines += [f"(declare-const Y_{j} Real)" for j in range(num_classes)]
    lines.append("")
    for i, (lo, up) in enumerate(zip(lower, upper, strict=True)):
        lines.append(f"(assert (>= X_{i} {_number(lo)}))")
        lines.append(f"(assert (<= X_{i} {_number(up)}))")
    lines.append("")
    lines.append("(assert (or")
    lines += [
        f"    (and (>= Y_{j} Y_{label}))" for j in range(num_classes) if j != label
    ]
    lines.append("))")
    return "\n".join(lines) + "\n"
