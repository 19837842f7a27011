"""Schedules for epsilon, kappa and beta: values as a function of training time.

A schedule maps the (fractional) epoch ``t`` — ``epoch + batch / steps`` —
to a value, so it advances every step and is written in epochs. ``end=None``
means "the target given to ``compile``" (e.g. the epsilon), filled in by
``with_end``. ``ramp_epochs=None`` means "half of ``fit``'s epochs", filled in
by ``with_epochs`` when ``fit`` starts.
"""

from __future__ import annotations

import math

import keras

from verinet.errors import InvalidInputError


class Schedule:
    """Base class: ``schedule(t)`` returns the value at fractional epoch ``t``."""

    def __call__(self, epoch: float) -> float:
        raise NotImplementedError

    def with_end(self, end: float) -> Schedule:
        """A copy whose unset ``end`` is ``end``."""
        return self

    def with_epochs(self, epochs: int) -> Schedule:
        """A copy whose unset ramp length is derived from ``fit``'s epochs."""
        return self

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


@keras.saving.register_keras_serializable(package="verinet")
class Constant(Schedule):
    """The same value at every step.

    Example:
        >>> vn.schedules.Constant(0.1)(5.0)
        0.1
    """

    def __init__(self, value: float | None = None):
        self.value = None if value is None else float(value)

    def __call__(self, epoch):
        if self.value is None:
            raise InvalidInputError("Constant schedule has no value; pass one.")
        return self.value

    def with_end(self, end):
        return self if self.value is not None else Constant(end)

    def get_config(self):
        return {"value": self.value}


class _Ramp(Schedule):
    """``start`` for ``warmup_epochs``, then a ramp to ``end`` over ``ramp_epochs``."""

    def __init__(
        self,
        warmup_epochs: float = 0.0,
        ramp_epochs: float | None = None,
        start: float = 0.0,
        end: float | None = None,
    ):
        if warmup_epochs < 0:
            raise InvalidInputError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if ramp_epochs is not None and ramp_epochs <= 0:
            raise InvalidInputError(
                f"ramp_epochs must be > 0 (the schedule must end after it starts), "
                f"got {ramp_epochs}."
            )
        self.warmup_epochs = float(warmup_epochs)
        self.ramp_epochs = None if ramp_epochs is None else float(ramp_epochs)
        self.start = float(start)
        self.end = None if end is None else float(end)

    def _fraction(self, epoch: float) -> float:
        if self.ramp_epochs is None:
            raise InvalidInputError(
                f"{type(self).__name__} has no ramp_epochs; give one, or let fit() "
                "set it to half of its epochs."
            )
        if self.end is None:
            raise InvalidInputError(f"{type(self).__name__} has no end value.")
        return min(max((epoch - self.warmup_epochs) / self.ramp_epochs, 0.0), 1.0)

    def with_end(self, end):
        if self.end is not None:
            return self
        return type(self)(**{**self.get_config(), "end": end})

    def with_epochs(self, epochs):
        if self.ramp_epochs is not None:
            return self
        ramp = max((epochs - self.warmup_epochs) / 2.0, 1.0)
        return type(self)(**{**self.get_config(), "ramp_epochs": ramp})

    def get_config(self):
        return {
            "warmup_epochs": self.warmup_epochs,
            "ramp_epochs": self.ramp_epochs,
            "start": self.start,
            "end": self.end,
        }


@keras.saving.register_keras_serializable(package="verinet")
class Linear(_Ramp):
    """Linear ramp from ``start`` to ``end``.

    Args:
        warmup_epochs: epochs at ``start`` before the ramp.
        ramp_epochs: epochs the ramp lasts (``None``: half of ``fit``'s epochs
            after the warmup).
        start: the initial value.
        end: the final value (``None``: the target, e.g. compile's epsilon).

    Example:
        >>> s = vn.schedules.Linear(warmup_epochs=1, ramp_epochs=4, end=0.1)
        >>> s(3.0)
        0.05
    """

    def __call__(self, epoch):
        return self.start + (self.end - self.start) * self._fraction(epoch)


@keras.saving.register_keras_serializable(package="verinet")
class SmoothRamp(_Ramp):
    """Exponential then linear growth (Shi et al. 2021).

    The first ``mid`` (default 1/4) of the ramp grows exponentially from
    ``end / 1000`` (or from ``start`` when it is positive) to the value the
    linear part starts at; the rest is linear. This avoids the large jumps
    in the relative size of epsilon that destabilize early IBP training.

    Example:
        >>> s = vn.schedules.SmoothRamp(warmup_epochs=1, ramp_epochs=10, end=0.1)
    """

    def __init__(
        self,
        warmup_epochs: float = 0.0,
        ramp_epochs: float | None = None,
        start: float = 0.0,
        end: float | None = None,
        mid: float = 0.25,
    ):
        super().__init__(warmup_epochs, ramp_epochs, start, end)
        if not 0.0 < mid < 1.0:
            raise InvalidInputError(f"mid must be in (0, 1), got {mid}.")
        self.mid = float(mid)

    def __call__(self, epoch):
        f = self._fraction(epoch)
        if f <= 0.0:
            return self.start
        span = self.end - self.start
        knee = self.start + span * self.mid
        if f >= self.mid:
            return knee + (self.end - knee) * (f - self.mid) / (1.0 - self.mid)
        base = self.start if self.start > 0 else self.end / 1000.0
        if base <= 0 or knee <= base:
            return self.start + span * f
        return base * math.exp(math.log(knee / base) * f / self.mid)

    def get_config(self):
        return {**super().get_config(), "mid": self.mid}


def resolve_schedule(value, name: str) -> Schedule:
    """A float becomes ``Constant``; a schedule passes through."""
    if isinstance(value, Schedule):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{name} must be a number or a vn.schedules schedule, got {value!r}."
        ) from exc
    if not math.isfinite(number) or number < 0:
        raise InvalidInputError(f"{name} must be finite and >= 0, got {value!r}.")
    return Constant(number)
