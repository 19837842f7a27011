"""Epsilon, kappa and beta schedules (per step, written in epochs)."""

from verinet.schedules.schedules import Constant, Linear, Schedule, SmoothRamp

__all__ = ["Constant", "Linear", "Schedule", "SmoothRamp"]
