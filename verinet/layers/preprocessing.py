"""Bound-aware affine input preprocessing: Rescaling and Normalization.

Putting preprocessing inside the model keeps epsilon in raw input units.
"""

import keras
from keras import ops

from verinet.layers.base import cast_like
from verinet.layers.elementwise_affine import ElementwiseAffineRule
from verinet.layers.registry import register


@keras.saving.register_keras_serializable(package="verinet")
class Rescaling(keras.layers.Rescaling, ElementwiseAffineRule):
    """``x * scale + offset`` with exact bounds.

    Example:
        >>> from verinet import layers
        >>> layer = layers.Rescaling(1 / 255)
    """

    def affine_params(self, reference):
        scale = ops.convert_to_tensor(self.scale, dtype=reference.dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=reference.dtype)
        return scale * ops.ones_like(offset), offset * ops.ones_like(scale)


@keras.saving.register_keras_serializable(package="verinet")
class Normalization(keras.layers.Normalization, ElementwiseAffineRule):
    """``(x - mean) / std`` (or its inverse) with exact bounds.

    Example:
        >>> from verinet import layers
        >>> layer = layers.Normalization(mean=0.5, variance=0.25)
    """

    def affine_params(self, reference):
        mean = cast_like(self.mean, reference)
        std = ops.maximum(
            ops.sqrt(cast_like(self.variance, reference)), keras.backend.epsilon()
        )
        if self.invert:
            return std, mean
        return 1.0 / std, -mean / std


# ONNX Mul/Add by constants import as an ElementwiseAffine.
register(
    Rescaling,
    converts_from=(keras.layers.Rescaling,),
    onnx_export="verinet.onnx.emitters:emit_affine",
)
register(
    Normalization,
    converts_from=(keras.layers.Normalization,),
    onnx_export="verinet.onnx.emitters:emit_affine",
)
