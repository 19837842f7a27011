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
        raise InvalidInputError(f"epsilon must be a number, got {epsilon!r}.") from exc
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"epsilon must be finite and >= 0, got {epsilon!r}.")
    return value


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
