"""Bound-aware shape layers: Flatten, Reshape and Dropout."""

import keras
from keras import ops

from verinet.layers._checks import require_channels_last
from verinet.layers._stock import from_config
from verinet.layers.base import AffineRule, IdentityRule
from verinet.layers.permute import Permute
from verinet.layers.registry import register


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


def _flatten_from_stock(layer, config, input_shape):
    """Keras moves a channels_first input's channel axis last, then flattens."""
    rank = len(input_shape)
    if rank > 2 and config.get("data_format") == "channels_first":
        return [Permute((*range(2, rank), 1)), Flatten()]
    return [from_config(Flatten, layer, config)]


register(
    Flatten,
    converts_from=(keras.layers.Flatten,),
    from_stock=_flatten_from_stock,
    onnx_export="verinet.onnx.emitters:emit_flatten",
    onnx_import=("Flatten", "Reshape"),
)
register(
    Reshape,
    converts_from=(keras.layers.Reshape,),
    onnx_export="verinet.onnx.emitters:emit_reshape",
    onnx_import=("Reshape",),
)
# ONNX Dropout imports as nothing: it is the identity at inference.
register(
    Dropout,
    converts_from=(keras.layers.Dropout,),
    onnx_export="verinet.onnx.emitters:emit_identity",
)
