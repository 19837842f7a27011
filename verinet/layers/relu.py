"""Bound-aware ReLU and LeakyReLU."""

import keras
from keras import ops

from verinet.bounds.relaxations import leaky_relu_relaxation
from verinet.errors import InvalidInputError
from verinet.layers.base import ElementwiseRule


@keras.saving.register_keras_serializable(package="verinet")
class ReLU(keras.layers.ReLU, ElementwiseRule):
    """``max(x, 0)`` with the CROWN relaxation (chord above, adaptive below).

    Example:
        >>> from verinet import layers
        >>> act = layers.ReLU()
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        if max_value is not None or negative_slope != 0.0 or threshold != 0.0:
            raise InvalidInputError(
                "verinet.layers.ReLU is the plain max(x, 0); use layers.LeakyReLU "
                "for a negative slope (max_value and threshold are not supported)."
            )
        super().__init__(**kwargs)

    piecewise_linear = True

    def interval(self, lower, upper):
        return ops.relu(lower), ops.relu(upper)

    def relax(self, lower, upper):
        return leaky_relu_relaxation(lower, upper, 0.0)


@keras.saving.register_keras_serializable(package="verinet")
class LeakyReLU(keras.layers.LeakyReLU, ElementwiseRule):
    """``max(x, a*x)`` for ``0 <= a <= 1`` with its CROWN relaxation.

    Example:
        >>> from verinet import layers
        >>> act = layers.LeakyReLU(negative_slope=0.1)
    """

    def __init__(self, negative_slope=0.3, **kwargs):
        if not 0.0 <= negative_slope <= 1.0:
            raise InvalidInputError(
                f"verinet.layers.LeakyReLU needs 0 <= negative_slope <= 1 "
                f"(got {negative_slope})."
            )
        super().__init__(negative_slope=negative_slope, **kwargs)

    piecewise_linear = True

    def interval(self, lower, upper):
        return self.call(lower), self.call(upper)

    def relax(self, lower, upper):
        return leaky_relu_relaxation(lower, upper, self.negative_slope)
