"""Perturbation sets: L-infinity and L2 balls, optionally clipped to a box.

A perturbation turns linear bounds ``A·x' + b`` over the set into numbers
(``concretize``) and gives the smallest box holding the set (``box``).
"""

from __future__ import annotations

from keras import ops

from verinet.bounds.patches import Patches, to_dense


class Perturbation:
    """The set ``{x' : ||x' - x|| <= epsilon, low <= x' <= high}``.

    Args:
        epsilon: radius, in input units.
        input_range: optional ``(low, high)`` box intersected with the ball.
    """

    def __init__(self, epsilon: float, input_range=None):
        self.epsilon = float(epsilon)
        self.input_range = input_range

    def box(self, x):
        """Return the elementwise ``(lower, upper)`` enclosing the set."""
        lower, upper = x - self.epsilon, x + self.epsilon
        if self.input_range is not None:
            low, high = self.input_range
            lower, upper = ops.maximum(lower, low), ops.minimum(upper, high)
        return lower, upper

    def concretize(self, x, A, sign: int):
        """Bound ``A·x'`` over the set.

        Args:
            x: the centre, ``(batch, *input_shape)``.
            A: coefficients ``(batch, specs, *input_shape)`` or ``Patches``.
            sign: ``-1`` for the minimum, ``+1`` for the maximum.

        Returns:
            ``(batch, specs)`` tensor.
        """
        raise NotImplementedError


def _flat(t, batch_dims):
    return ops.reshape(t, (*t.shape[:batch_dims], -1))


def concretize_box(lower, upper, A, sign: int):
    """Bound ``A·x`` over the box ``lower <= x <= upper`` (``A`` in either form)."""
    if isinstance(A, Patches):
        center, radius = (lower + upper) / 2, (upper - lower) / 2
        coeffs = A.coeffs
        dot = _flat(coeffs * A.unfold(center), 2)
        spread = _flat(ops.abs(coeffs) * A.unfold(radius), 2)
        return ops.sum(dot, axis=-1) + sign * ops.sum(spread, axis=-1)
    center = _flat((lower + upper) / 2, 1)[:, None, :]
    radius = _flat((upper - lower) / 2, 1)[:, None, :]
    A = _flat(A, 2)
    return ops.sum(A * center, axis=-1) + sign * ops.sum(ops.abs(A) * radius, axis=-1)


class LinfBall(Perturbation):
    """L-infinity ball (a box), optionally clipped to ``input_range``."""

    norm = "linf"

    def concretize(self, x, A, sign):
        lower, upper = self.box(x)
        return concretize_box(lower, upper, A, sign)


class L2Ball(Perturbation):
    """L2 ball, optionally intersected with the box ``input_range``.

    With a box the bound is the tighter of the ball's and the clipped box's
    bounds (each set contains the intersection).
    """

    norm = "l2"

    def concretize(self, x, A, sign):
        A = to_dense(A)
        flat_A = _flat(A, 2)
        centre = ops.sum(flat_A * _flat(x, 1)[:, None, :], axis=-1)
        ball = centre + sign * self.epsilon * ops.sqrt(
            ops.sum(flat_A * flat_A, axis=-1)
        )
        if self.input_range is None:
            return ball
        lower, upper = self.box(x)
        box = concretize_box(lower, upper, A, sign)
        return ops.maximum(ball, box) if sign < 0 else ops.minimum(ball, box)


NORMS = {"linf": LinfBall, "l2": L2Ball}
