"""Bound-aware axis permutation (e.g. NCHW <-> NHWC)."""

import keras
from keras import ops

from verinet.layers.base import AffineRule
from verinet.layers.registry import register


@keras.saving.register_keras_serializable(package="verinet")
class Permute(keras.layers.Permute, AffineRule):
    """``keras.layers.Permute`` with bound rules.

    A permutation only moves elements, so its interval bound is exact and
    CROWN moves coefficients back with the inverse permutation.

    Args:
        dims: 1-indexed permutation of the non-batch axes, as in Keras:
            output axis ``i`` is input axis ``dims[i - 1]``.

    Example:
        >>> from verinet import layers
        >>> to_nhwc = layers.Permute((2, 3, 1))   # (C, H, W) -> (H, W, C)
    """

    def interval(self, lower, upper):
        return self.call(lower), self.call(upper)

    def backward_affine(self, A, input_shape):
        inverse = [0] * len(self.dims)
        for out_axis, in_axis in enumerate(self.dims):
            inverse[in_axis - 1] = out_axis
        return ops.transpose(A, (0, 1, *(i + 2 for i in inverse))), None


register(
    Permute,
    converts_from=(keras.layers.Permute,),
    onnx_export="verinet.onnx.emitters:emit_permute",
    onnx_import=("Transpose",),
)
