"""Bound-aware elementwise affine map ``y = x * scale + shift``."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from verinet.errors import InvalidInputError
from verinet.layers.base import cast_like
from verinet.layers.elementwise_affine import ElementwiseAffineRule
from verinet.layers.registry import register


@keras.saving.register_keras_serializable(package="verinet")
class ElementwiseAffine(keras.layers.Layer, ElementwiseAffineRule):
    """``x * scale + shift`` with learnable ``scale`` and ``shift`` weights.

    It is what a batch normalization becomes in inference when nothing
    precedes it that it could be folded into (``vn.deploy``), and what ONNX
    ``Mul``/``Add``/``Sub``/``Div`` by a constant become (``vn.from_onnx``).

    Args:
        param_shape: shape of ``scale`` and ``shift``; it must broadcast to
            one sample's shape without enlarging it. ``None`` (default) means
            one value per channel of the last axis, like batch normalization.

    Example:
        >>> from verinet import layers
        >>> layer = layers.ElementwiseAffine()          # per last-axis channel
        >>> layer = layers.ElementwiseAffine((1, 1, 3))  # on (H, W, 3) inputs
    """

    def __init__(self, param_shape=None, **kwargs):  # pragma: no mutate block
        super().__init__(**kwargs)
        self.param_shape = None if param_shape is None else tuple(param_shape)

    def build(self, input_shape):
        sample = tuple(input_shape[1:])
        shape = (sample[-1],) if self.param_shape is None else self.param_shape
        try:
            grown = np.broadcast_shapes(shape, sample) != sample
        except ValueError:
            grown = True
        if len(shape) > len(sample) or grown:
            raise InvalidInputError(
                f"ElementwiseAffine {self.name!r}: parameters of shape {shape} do "
                f"not broadcast to inputs of shape {sample}."
            )
        self.scale = self.add_weight(name="scale", shape=shape, initializer="ones")
        self.shift = self.add_weight(name="shift", shape=shape, initializer="zeros")

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype) + ops.cast(
            self.shift, inputs.dtype
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def affine_params(self, reference):
        scale = ops.expand_dims(cast_like(self.scale, reference), 0)
        shift = ops.expand_dims(cast_like(self.shift, reference), 0)
        return scale, shift

    def get_config(self):
        return {**super().get_config(), "param_shape": self.param_shape}


register(
    ElementwiseAffine,
    onnx_export="verinet.onnx.emitters:emit_affine",
    onnx_import=("Add", "BatchNormalization", "Div", "Mul", "Sub"),
)
