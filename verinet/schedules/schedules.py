"""Schedules for epsilon, kappa and beta: values as a function of training time.

A schedule maps the model's schedule *position* ``t`` to a value. The
position is a fractional-epoch counter that the compiled model keeps: it
advances by ``1 / steps`` after every training batch, continues from one
``fit`` to the next (``fit(initial_epoch=k)`` with ``k > 0`` sets it to ``k``),
is saved in ``.keras`` files and restarts at 0 on ``compile``. So a schedule
advances every step and is written in epochs. ``end=None`` means "the target
given to ``compile``" (e.g. the epsilon), filled in by ``with_end``.
``ramp_epochs=None`` means "half of the first ``fit``'s epochs", filled in by
``with_epochs`` when that ``fit`` starts and kept from then on.

Every value a schedule is built from must be a finite number; ``compile``
additionally refuses an epsilon schedule that could go below 0, and kappa and
beta schedules must stay in [0, 1].
"""

from __future__ import annotations

import math

import keras

from verinet._validation import check_number
from verinet.errors import InvalidInputError


class Schedule:
    """Base class: ``schedule(t)`` returns the value at fractional epoch ``t``."""

    def __call__(self, epoch: float) -> float:
        raise NotImplementedError

    def with_end(self, end: float) -> Schedule:
        """A copy whose unset ``end`` is ``end``."""
        return self

    def with_epochs(self, epochs: int) -> Schedule:
        """A copy whose unset ramp length is derived from ``fit``'s epochs.

        A schedule whose ramp length is set (by the caller, or by an earlier
        ``fit``) returns itself unchanged.
        """
        return self

    def value_range(self) -> tuple[float, float] | None:
        """``(smallest, largest)`` value the schedule can take.

        Returns:
            The pair, or ``None`` while a value it depends on (``end``) is
            unset, or for a custom schedule that does not say.
        """
        return None

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
        self.value = check_number("Constant value", value, allow_none=True)

    def __call__(self, epoch):
        if self.value is None:
            raise InvalidInputError("Constant schedule has no value; pass one.")
        return self.value

    def with_end(self, end):
        return self if self.value is not None else Constant(end)

    def value_range(self):
        return None if self.value is None else (self.value, self.value)

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
        kind = type(self).__name__
        self.warmup_epochs = check_number(f"{kind} warmup_epochs", warmup_epochs, low=0)
        try:
            self.ramp_epochs = check_number(
                f"{kind} ramp_epochs",
                ramp_epochs,
                low=0,
                low_open=True,
                allow_none=True,
            )
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{exc} The schedule must end after it starts; None lets the "
                "first fit() set it to half of its epochs."
            ) from None
        self.start = check_number(f"{kind} start", start)
        self.end = check_number(f"{kind} end", end, allow_none=True)

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

    def value_range(self):
        if self.end is None:
            return None
        return (min(self.start, self.end), max(self.start, self.end))

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
        self.mid = check_number(
            "SmoothRamp mid", mid, low=0, high=1, low_open=True, high_open=True
        )

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
    """A number becomes ``Constant``; a schedule passes through.

    Args:
        value: a finite number ``>= 0`` or a ``Schedule``.
        name: the argument's name, for the message.

    Returns:
        A ``Schedule``.

    Raises:
        InvalidInputError: for a bool, string, NaN, infinity or negative number.

    Example:
        >>> resolve_schedule(0.1, "epsilon")
        Constant(value=0.1)
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, (bool, str, bytes)):
        raise InvalidInputError(
            f"{name} must be a number or a vn.schedules schedule, got {value!r}."
        )
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{name} must be a number or a vn.schedules schedule, got {value!r}."
        ) from exc
    if not math.isfinite(number) or number < 0:
        raise InvalidInputError(f"{name} must be finite and >= 0, got {value!r}.")
    return Constant(number)


def check_schedule(
    schedule: Schedule,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    complete: bool = False,
) -> Schedule:
    """Check that every value ``schedule`` can take lies in ``[low, high]``.

    Args:
        schedule: the schedule to check.
        name: the argument's name, for the message (``"epsilon"``).
        low: the smallest allowed value (``None``: no bound).
        high: the largest allowed value (``None``: no bound).
        complete: the schedule must be usable as is: its ``end`` (or value)
            and ``ramp_epochs`` set, since nothing fills them in later.

    Returns:
        ``schedule``.

    Raises:
        InvalidInputError: naming the schedule and the value out of bounds.

    Example:
        >>> check_schedule(Linear(ramp_epochs=5, end=0.1), "epsilon", low=0)
        Linear(warmup_epochs=0.0, ramp_epochs=5.0, start=0.0, end=0.1)
    """
    if not isinstance(schedule, Schedule):
        raise InvalidInputError(
            f"{name} must be a number or a vn.schedules schedule, got {schedule!r}."
        )
    if complete and getattr(schedule, "ramp_epochs", 1.0) is None:
        raise InvalidInputError(
            f"The {name} schedule {schedule!r} has no ramp_epochs; only the "
            "epsilon schedule gets one from fit(). Give ramp_epochs=..."
        )
    span = schedule.value_range()
    if span is None:
        if complete or isinstance(schedule, (Constant, _Ramp)):
            field = "value" if isinstance(schedule, Constant) else "end"
            hint = (
                " (or pass the number as epsilon= and the schedule as "
                "epsilon_schedule=)"
                if name == "epsilon"
                else ""
            )
            raise InvalidInputError(
                f"The {name} schedule {schedule!r} has no {field}; give "
                f"{field}=...{hint}."
            )
        return schedule  # a custom schedule that does not state its range
    smallest, largest = span
    if (low is not None and smallest < low) or (high is not None and largest > high):
        bounds = (
            f">= {low:g}"
            if high is None
            else f"<= {high:g}"
            if low is None
            else f"in [{low:g}, {high:g}]"
        )
        raise InvalidInputError(
            f"The {name} schedule {schedule!r} reaches values in "
            f"[{smallest:g}, {largest:g}]; every {name} must be {bounds}."
        )
    return schedule
