"""Bound-aware batch normalization (an affine map in inference)."""

import keras
from keras import ops

from verinet.errors import InvalidInputError
from verinet.layers.base import cast_like
from verinet.layers.elementwise_affine import ElementwiseAffineRule


@keras.saving.register_keras_serializable(package="verinet")
class BatchNormalization(keras.layers.BatchNormalization, ElementwiseAffineRule):
    """``keras.layers.BatchNormalization`` bounded as the affine map of its
    moving statistics (inference mode), normalizing the last axis.

    ``vn.deploy`` folds it into the preceding Dense/Conv2D.

    Example:
        >>> from verinet import layers
        >>> bn = layers.BatchNormalization()
    """

    def __init__(self, axis=-1, **kwargs):  # pragma: no mutate block
        if axis not in (-1, [-1]) or kwargs.get("renorm") or kwargs.get("synchronized"):
            raise InvalidInputError(
                "verinet.layers.BatchNormalization normalizes the last axis "
                "(axis=-1) without renorm or synchronization."
            )
        super().__init__(axis=-1, **kwargs)

    def affine_params(self, reference):
        """Return the inference ``(scale, shift)`` per channel."""
        return self.affine_for_statistics(
            cast_like(self.moving_mean, reference),
            cast_like(self.moving_variance, reference),
            reference,
        )

    def affine_for_statistics(self, mean, variance, reference):
        """``(scale, shift)`` of normalizing with the given mean and variance."""
        scale = 1.0 / ops.sqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * cast_like(self.gamma, reference)
        shift = -mean * scale
        if self.center:
            shift = shift + cast_like(self.beta, reference)
        return scale, shift
