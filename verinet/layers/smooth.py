"""Bound-aware smooth activations: GeLU, Sigmoid and Tanh."""

import math

import keras
from keras import ops

from verinet.bounds.relaxations import smooth_relaxation
from verinet.layers.base import ElementwiseRule
from verinet.layers.registry import register

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class _SmoothActivation(keras.layers.Layer, ElementwiseRule):
    """An elementwise smooth activation with a curvature-bounded relaxation.

    Subclasses define ``function``, ``derivative`` and ``curvature`` (an upper
    bound on ``|f''|`` over the real line).
    """

    curvature = 1.0

    def call(self, inputs):
        return self.function(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def interval(self, lower, upper):
        return self.function(lower), self.function(upper)

    def relax(self, lower, upper):
        return smooth_relaxation(
            self.function, self.derivative, lower, upper, self.curvature
        )


@keras.saving.register_keras_serializable(package="verinet")
class Sigmoid(_SmoothActivation):
    """``1 / (1 + exp(-x))`` with sound linear relaxations.

    Example:
        >>> from verinet import layers
        >>> act = layers.Sigmoid()
    """

    curvature = 0.0963  # max |sigmoid''| = 1 / (6 sqrt 3) = 0.09623

    def function(self, x):
        return ops.sigmoid(x)

    def derivative(self, x):
        s = ops.sigmoid(x)
        return s * (1.0 - s)


@keras.saving.register_keras_serializable(package="verinet")
class Tanh(_SmoothActivation):
    """``tanh(x)`` with sound linear relaxations.

    Example:
        >>> from verinet import layers
        >>> act = layers.Tanh()
    """

    curvature = 0.7699  # max |tanh''| = 4 / (3 sqrt 3) = 0.76980

    def function(self, x):
        return ops.tanh(x)

    def derivative(self, x):
        t = ops.tanh(x)
        return 1.0 - t * t


@keras.saving.register_keras_serializable(package="verinet")
class GeLU(_SmoothActivation):
    """Gaussian error linear unit, ``x * Phi(x)``, with sound relaxations.

    Args:
        approximate: ``False`` (default) for the exact erf form, like
            ``torch.nn.GELU()``; ``True`` for the tanh approximation.

    Example:
        >>> from verinet import layers
        >>> act = layers.GeLU()
    """

    curvature = 0.7990  # max |gelu''| = 2 phi(0) = 0.79789, both forms
    # The minimum of each form and a value at or below it (for IBP).
    _ARGMIN = {False: -0.751791, True: -0.752464}
    _MINIMUM = {False: -0.169972, True: -0.170041}

    def __init__(self, approximate: bool = False, **kwargs):  # pragma: no mutate block
        super().__init__(**kwargs)
        self.approximate = bool(approximate)

    def function(self, x):
        return ops.gelu(x, approximate=self.approximate)

    def derivative(self, x):
        if self.approximate:
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
            t = ops.tanh(inner)
            d_inner = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner
        cdf = 0.5 * (1.0 + ops.erf(x / math.sqrt(2.0)))
        pdf = ops.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return cdf + x * pdf

    def interval(self, lower, upper):
        f_low, f_up = self.function(lower), self.function(upper)
        argmin = self._ARGMIN[self.approximate]
        inside = ops.logical_and(lower < argmin, upper > argmin)
        low = ops.where(
            inside, self._MINIMUM[self.approximate], ops.minimum(f_low, f_up)
        )
        return low, ops.maximum(f_low, f_up)

    def get_config(self):
        return {**super().get_config(), "approximate": self.approximate}


register(
    Sigmoid,
    onnx_export="verinet.onnx.emitters:emit_sigmoid",
    onnx_import=("Sigmoid",),
    activation="sigmoid",
)
register(
    Tanh,
    onnx_export="verinet.onnx.emitters:emit_tanh",
    onnx_import=("Tanh",),
    activation="tanh",
)
# ONNX Gelu, or the Erf pattern exporters emit for it.
register(
    GeLU,
    onnx_export="verinet.onnx.emitters:emit_gelu",
    onnx_import=("Gelu",),
    activation="gelu",
)
