"""Checks of user arguments, with errors that say what to fix."""

from __future__ import annotations

import math

import numpy as np

from verinet.errors import InvalidInputError


def check_x(model, x, name: str = "x") -> np.ndarray:
    """Return ``x`` as a float array shaped ``(batch, *model_input_shape)``."""
    try:
        array = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible
        raise InvalidInputError(
            f"{name} must be array-like, got {type(x).__name__}."
        ) from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
    ):
        raise InvalidInputError(
            f"{name} must hold numbers (float or int), got dtype {array.dtype}."
        )
    expected = (
        tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    )
    if expected is not None:
        if array.ndim == len(expected):
            hint = f" For one sample use {name}[None]."
        else:
            hint = ""
        if array.ndim != len(expected) + 1 or any(
            e is not None and e != s
            for e, s in zip(expected, array.shape[1:], strict=True)
        ):
            raise InvalidInputError(
                f"{name} has shape {array.shape}, but model {model.name!r} takes "
                f"(batch, {', '.join(str(e) for e in expected)}).{hint}"
            )
    if array.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty.")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise InvalidInputError(f"{name} contains {bad} NaN or infinite values.")
    return array


def check_y(y, batch: int, classes: int) -> np.ndarray:
    """Return integer labels of length ``batch`` within ``[0, classes)``."""
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == classes and array.shape[0] == batch:
        raise InvalidInputError(
            "y looks one-hot encoded; pass integer labels (y.argmax(axis=1))."
        )
    if array.ndim != 1 or array.shape[0] != batch:
        raise InvalidInputError(
            f"y must be a vector of {batch} integer labels, got shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise InvalidInputError(
                f"y must hold integer labels, got dtype {array.dtype}."
            )
    if array.min() < 0 or array.max() >= classes:
        raise InvalidInputError(
            f"y holds labels in [{array.min()}, {array.max()}], but the model has "
            f"{classes} outputs (labels 0..{classes - 1})."
        )
    return array.astype(np.int64)


def check_epsilon(epsilon) -> float:
    """Return a finite, non-negative float radius."""
    try:
        if isinstance(epsilon, (str, bytes)):
            raise TypeError(epsilon)
        value = float(epsilon)
    except (TypeError, ValueError) as exc:
        hint = (
            " A per-feature epsilon (an array) is accepted by vn.compute_bounds, "
            "vn.margin_bounds, vn.certify and the attacks with norm='linf'."
            if np.ndim(epsilon) > 0
            else ""
        )
        raise InvalidInputError(
            f"epsilon must be a number, got {epsilon!r}.{hint}"
        ) from exc
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"epsilon must be finite and >= 0, got {epsilon!r}.")
    return value


def _feature_array(name: str, value, shape: tuple) -> np.ndarray:
    """``value`` as a float64 array of the input ``shape`` (broadcast)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must hold numbers, got {value!r}.") from exc
    try:
        return np.broadcast_to(array, shape).copy()
    except ValueError as exc:
        raise InvalidInputError(
            f"{name} has shape {array.shape}, which does not broadcast to the "
            f"input shape {shape}."
        ) from exc


def check_feature_epsilon(epsilon, shape: tuple):
    """A float radius, or for an array a float64 array of the input
    ``shape`` (one radius per feature, each finite and >= 0)."""
    if np.ndim(epsilon) == 0 or isinstance(epsilon, (str, bytes)):
        return check_epsilon(epsilon)
    array = _feature_array("epsilon", epsilon, shape)
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        bad = ~np.isfinite(array) | (array < 0)
        raise InvalidInputError(
            f"epsilon must be finite and >= 0 for every feature; {int(bad.sum())} "
            "entries are negative, NaN or infinite."
        )
    return array


def check_feature_range(input_range, shape: tuple, x: np.ndarray | None = None):
    """``(low, high)`` floats or ``None``, or with an array on either side
    float64 arrays of the input ``shape``; ``x`` must lie inside."""
    if input_range is None or all(np.ndim(v) == 0 for v in input_range):
        return check_input_range(input_range, x)
    try:
        low, high = input_range
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"input_range must be a (low, high) pair, got {input_range!r}."
        ) from exc
    low = _feature_array("input_range's low", low, shape)
    high = _feature_array("input_range's high", high, shape)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(
        low > high
    ):
        raise InvalidInputError(
            "input_range needs finite low <= high for every feature."
        )
    if x is not None and (np.any(x < low) or np.any(x > high)):
        bad = int(np.sum(np.any((x < low) | (x > high), axis=tuple(range(1, x.ndim)))))
        raise InvalidInputError(
            f"{bad} sample(s) of x lie outside the per-feature input_range; "
            "scale the data or widen the range."
        )
    return low, high


def check_batch_size(batch_size) -> int | None:
    """Return a positive int batch size (or ``None`` for "all at once")."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise InvalidInputError(
            f"batch_size must be a positive int, got {batch_size!r}."
        )
    if batch_size <= 0:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size}.")
    return int(batch_size)


def check_choice(name: str, value, choices) -> str:
    """Return ``value`` lower-cased if it is one of ``choices``."""
    key = value.lower() if isinstance(value, str) else value
    if key not in choices:
        raise InvalidInputError(
            f"Unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}."
        )
    return key


def check_input_range(input_range, x: np.ndarray | None = None):
    """Return ``(low, high)`` floats or ``None``; ``x`` must lie inside."""
    if input_range is None:
        return None
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"input_range must be a (low, high) pair of numbers, got {input_range!r}."
        ) from exc
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise InvalidInputError(
            f"input_range needs finite low <= high, got ({low}, {high})."
        )
    if x is not None and (x.min() < low or x.max() > high):
        raise InvalidInputError(
            f"x lies in [{x.min():.4g}, {x.max():.4g}], outside input_range "
            f"({low}, {high}); scale the data or widen the range."
        )
    return low, high


def check_number(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` as a finite float inside the given bounds.

    Bools and strings are refused (``True`` is not a radius); so are NaN and
    infinities.

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        low: the smallest allowed value (``None``: no bound).
        high: the largest allowed value (``None``: no bound).
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
        allow_none: ``None`` passes through (e.g. "use the default").

    Returns:
        The float (or ``None`` when allowed and given).

    Example:
        >>> check_number("step_size", 0.01, low=0, low_open=True)
        0.01
    """
    if value is None and allow_none:
        return None
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    want = " and ".join(p for p in (lo, hi) if p)
    wanted = f"a finite number{' ' + want if want else ''}" + (
        " (or None)" if allow_none else ""
    )
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise InvalidInputError(f"{name} must be {wanted}, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be {wanted}, got {value!r}.") from exc
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or too_low or too_high:
        raise InvalidInputError(f"{name} must be {wanted}, got {value!r}.")
    return number


def check_vector(name: str, values, *, low: float | None = None) -> np.ndarray:
    """``values`` as a non-empty 1-D float64 array of finite numbers
    (``>= low`` when given); the error names the first bad position."""
    if isinstance(values, (str, bytes)):
        raise InvalidInputError(f"{name} must be a list of numbers, got {values!r}.")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{name} must be a list of numbers, got {type(values).__name__}."
        ) from exc
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError(
            f"{name} must be a non-empty 1-D list of numbers, got shape {array.shape}."
        )
    bad = ~np.isfinite(array)
    if low is not None:
        bad |= array < low
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        wanted = "finite numbers" + ("" if low is None else f" >= {low:g}")
        raise InvalidInputError(
            f"{name} must be {wanted}; got {array[first]!r} at position {first}."
        )
    return array


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """Return ``value`` as an int ``>= minimum``; bools and floats are refused.

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        minimum: the smallest allowed value.

    Returns:
        The int.

    Example:
        >>> check_int("steps", 10)
        10
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(
            f"{name} must be an int >= {minimum}, got {value!r}"
            f" ({type(value).__name__})."
        )
    if value < minimum:
        raise InvalidInputError(f"{name} must be an int >= {minimum}, got {value}.")
    return int(value)


def check_training_data(
    model,
    x,
    y,
    *,
    input_range=None,
    classes: int | None = None,
    labels: bool = True,
    where: str = "",
) -> None:
    """Check one dataset given to ``fit``/``evaluate`` as ``certify`` would.

    ``x`` must match the model's input shape, hold finite numbers and lie in
    ``input_range``; with ``labels``, ``y`` must hold integer class labels in
    ``[0, classes)`` (shape ``(batch,)`` or ``(batch, 1)``), and one-hot rows
    are named as such. Nothing is returned; a problem raises.

    Args:
        model: the model the data is for (its input shape is checked).
        x: one array (numpy or a torch tensor on any device).
        y: the labels, or ``None``.
        input_range: compile's ``(low, high)`` or ``None``.
        classes: the number of model outputs (``None``: unknown).
        labels: whether ``y`` must be class indices (sparse labels).
        where: a prefix for the message, e.g. ``"validation_data"``.

    Raises:
        InvalidInputError: naming the dataset, the problem and the fix.

    Example:
        >>> check_training_data(model, x_train, y_train, input_range=(0, 1),
        ...                     classes=10)
    """
    prefix = f"{where}: " if where else ""
    values = as_numpy(x)
    try:
        array = check_x(model, values)
    except InvalidInputError as exc:
        hint = ""
        if "NaN" in str(exc):
            rows = np.flatnonzero(
                ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            )
            hint = (
                f" They are in {len(rows)} of {len(values)} samples (first at "
                f"index {rows[0]}). Training on them would turn every weight "
                "into NaN; drop or repair those samples first."
            )
        raise InvalidInputError(f"{prefix}{exc}{hint}") from None
    if input_range is not None and any(np.ndim(v) > 0 for v in input_range):
        low, high = input_range
        outside = np.any(
            (array < low) | (array > high), axis=tuple(range(1, array.ndim))
        )
        if outside.any():
            raise InvalidInputError(
                f"{prefix}{int(outside.sum())} of {len(array)} samples lie outside "
                f"compile's per-feature input_range (first at index "
                f"{int(np.flatnonzero(outside)[0])}): bounds and attacks clip to "
                "that box. Scale the data or widen the range."
            )
    elif input_range is not None:
        low, high = input_range
        x_low, x_high = array.min(), array.max()
        if x_low < low or x_high > high:
            raise InvalidInputError(
                f"{prefix}x lies in [{x_low:.4g}, {x_high:.4g}], outside "
                f"compile's input_range ({low:g}, {high:g}): bounds and attacks "
                "clip to that box, so robust metrics would be meaningless. Scale "
                "the data into the range (e.g. x / x.max()) or compile with an "
                "input_range that holds it."
            )
    if not labels or y is None:
        return
    labels_array = as_numpy(y)
    batch = array.shape[0]
    if (
        labels_array.ndim == 2
        and labels_array.shape[0] == batch
        and labels_array.shape[1] == 1
        and classes != 1
    ):
        labels_array = labels_array[:, 0]
    if classes is None:
        # Unbuilt model, unknown output count: a 2-D y is taken as one-hot
        # rows, a vector must still hold non-negative integers.
        classes = _label_bound(labels_array)
    try:
        check_y(labels_array, batch, classes)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{prefix}{exc}") from None


def _label_bound(labels: np.ndarray) -> int:
    """The output count to check labels against when the model's is unknown."""
    if labels.ndim == 2:
        return labels.shape[1]
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.number):
        return 1
    top = np.max(labels)
    return int(top) + 1 if np.isfinite(top) and top >= 0 else 1


def as_numpy(value) -> np.ndarray:
    """A numpy view of an array or a (possibly device) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
