"""Standard training and Gaussian-noise training (for randomized smoothing)."""

from __future__ import annotations

import keras
from keras import ops

from verinet._validation import check_number
from verinet.objectives.base import Objective


@keras.saving.register_keras_serializable(package="verinet")
class Standard(Objective):
    """The ordinary loss on clean inputs.

    Example:
        >>> model.compile("adam", robust=vn.objectives.Standard())
    """

    name = "standard"
    uses_epsilon = False

    def compute(self, context, x, y, y_pred):
        return context.loss(y_pred), {}


@keras.saving.register_keras_serializable(package="verinet")
class GaussianNoise(Objective):
    """The loss on inputs with Gaussian noise (Cohen et al. 2019).

    Trains the base classifier of randomized smoothing: each step sees
    ``x + sigma * N(0, I)``.

    Args:
        sigma: standard deviation of the noise, in input units: a finite
            number > 0 (0 would be standard training).

    Raises:
        InvalidInputError: for a ``sigma`` that is not a finite number > 0.

    Example:
        >>> model.compile("adam", robust=vn.objectives.GaussianNoise(sigma=0.25))
    """

    name = "smoothing"

    def __init__(self, sigma: float = 0.25):
        self.sigma = check_number("GaussianNoise sigma", sigma, low=0, low_open=True)

    def compute(self, context, x, y, y_pred):
        if not context.training:
            return context.loss(y_pred), {}
        noisy = x + self.sigma * keras.random.normal(ops.shape(x), dtype=x.dtype)
        return context.loss(context.model(noisy, training=True)), {}

    def get_config(self):
        return {"sigma": self.sigma}
