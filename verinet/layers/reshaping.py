"""Bound-aware shape layers: Flatten, Reshape and Dropout."""

import keras
from keras import ops

from verinet.layers._checks import require_channels_last
from verinet.layers.base import AffineRule, IdentityRule


class _ReshapeRule(AffineRule):
    """A rule for layers that only rearrange elements in row-major order."""

    def interval(self, lower, upper):
        return self.call(lower), self.call(upper)

    def backward_affine(self, A, input_shape):
        return ops.reshape(A, (A.shape[0], A.shape[1], *input_shape)), None


@keras.saving.register_keras_serializable(package="verinet")
class Flatten(keras.layers.Flatten, _ReshapeRule):
    """``keras.layers.Flatten`` (channels_last) with bound rules.

    Example:
        >>> from verinet import layers
        >>> layer = layers.Flatten()
    """

    def __init__(self, data_format=None, **kwargs):
        # The bound rule flattens in row-major (channels_last) order; Keras's
        # channels_first Flatten moves the channels last first.
        require_channels_last("Flatten", data_format)
        super().__init__(data_format="channels_last", **kwargs)


@keras.saving.register_keras_serializable(package="verinet")
class Reshape(keras.layers.Reshape, _ReshapeRule):
    """``keras.layers.Reshape`` with bound rules.

    Example:
        >>> from verinet import layers
        >>> layer = layers.Reshape((8, 8, 1))
    """


@keras.saving.register_keras_serializable(package="verinet")
class Dropout(keras.layers.Dropout, IdentityRule):
    """``keras.layers.Dropout``: the identity in inference and in bounds.

    Example:
        >>> from verinet import layers
        >>> layer = layers.Dropout(0.2)
    """

    def interval(self, lower, upper):
        return lower, upper
