"""The threat model a trained model is certified against after training.

``CertifyEvery`` and ``vn.refine`` certify at the *target* epsilon that
``compile(robust=..., epsilon=...)`` ramps towards, never at the value the
ramp has reached, with compile's norm and input range unless the caller
overrides them.
"""

from __future__ import annotations

import numpy as np

from verinet._validation import check_epsilon
from verinet.errors import InvalidInputError


def check_target_epsilon(epsilon):
    """``None``, a finite radius >= 0, or a per-feature array of such radii.

    Args:
        epsilon: the argument as given.

    Returns:
        ``None``, a float, or a float64 array.

    Raises:
        InvalidInputError: for a negative, NaN or infinite radius, or a value
            that is not a number.

    Example:
        >>> check_target_epsilon(0.1)
        0.1
    """
    if epsilon is None:
        return None
    if np.ndim(epsilon) == 0:
        return check_epsilon(epsilon)
    try:
        radii = np.asarray(epsilon, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"epsilon must be a number or an array of numbers, got {epsilon!r}."
        ) from exc
    if not np.all(np.isfinite(radii)) or np.any(radii < 0):
        raise InvalidInputError(
            "epsilon (per feature) must be finite and >= 0 everywhere; it holds "
            f"values in [{np.nanmin(radii):g}, {np.nanmax(radii):g}]."
        )
    return radii


def target_settings(model, epsilon=None, norm=None, input_range=None, caller=""):
    """``(epsilon, norm, input_range)`` to certify ``model`` at.

    Each argument left ``None`` comes from ``compile(robust=...)``: the
    epsilon is the schedule's target (per feature: the target times each
    feature's share), not the value the ramp has reached.

    Args:
        model: a Keras model, compiled or not.
        epsilon: a radius (or per-feature radii) overriding compile's target.
        norm: ``"linf"``/``"l2"`` overriding compile's norm (default
            ``"linf"`` when compile gave none).
        input_range: ``(low, high)`` overriding compile's input range.
        caller: the name for the message, e.g. ``"CertifyEvery"``.

    Returns:
        ``(epsilon, norm, input_range)``.

    Raises:
        InvalidInputError: when ``epsilon`` is ``None`` and the model was not
            compiled with a robust objective that uses an epsilon.

    Example:
        >>> model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
        >>> target_settings(model)
        (0.1, 'linf', (0.0, 1.0))
    """
    state = getattr(model, "_robust", None)
    if epsilon is None:
        if state is None or not state.objective.uses_epsilon:
            how = (
                "was not compiled with robust=..."
                if state is None
                else f"was compiled with robust={state.objective.name!r}, which "
                "has no epsilon"
            )
            raise InvalidInputError(
                f"{caller or 'Certification'} needs an epsilon: model "
                f"{model.name!r} {how}. Pass epsilon=... or compile the model "
                "with robust='ibp' (or another robust objective) and epsilon=...."
            )
        epsilon = state.epsilon_target
        if state.epsilon_profile is not None:
            epsilon = epsilon * np.asarray(state.epsilon_profile)
    if norm is None:
        norm = state.norm if state is not None else "linf"
    if input_range is None and state is not None:
        input_range = state.input_range
    return epsilon, norm, input_range
