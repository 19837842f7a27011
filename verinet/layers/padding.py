"""Bound-aware zero padding of the spatial axes."""

import keras

from verinet.bounds.patches import Patches
from verinet.layers._checks import require_channels_last
from verinet.layers._stock import channels_last
from verinet.layers.base import AffineRule
from verinet.layers.registry import register


@keras.saving.register_keras_serializable(package="verinet")
class ZeroPadding2D(keras.layers.ZeroPadding2D, AffineRule):
    """``keras.layers.ZeroPadding2D`` (channels_last) with bound rules.

    The padded border is exactly zero, so bounds pass through unchanged and
    CROWN crops the coefficients back to the input. It lets explicit,
    asymmetric convolution padding (as in ONNX and PyTorch) be expressed
    as padding followed by a 'valid' ``Conv2D``.

    Example:
        >>> from verinet import layers
        >>> layer = layers.ZeroPadding2D(((1, 1), (1, 1)))
    """

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        require_channels_last("ZeroPadding2D", data_format)
        super().__init__(padding, data_format="channels_last", **kwargs)

    supports_patches = True

    def interval(self, lower, upper):
        return self.call(lower), self.call(upper)

    def backward_affine(self, A, input_shape):
        (top, _), (left, _) = self.padding
        if isinstance(A, Patches):  # the same windows, seen from the input
            out = A.replace(
                A.coeffs,
                offset=(A.offset[0] + top, A.offset[1] + left),
                shape=tuple(input_shape),
            )
            return out.replace(out.coeffs * out.mask()), None
        height, width = input_shape[0], input_shape[1]
        return A[:, :, top : top + height, left : left + width, :], None


register(
    ZeroPadding2D,
    converts_from=(keras.layers.ZeroPadding2D,),
    from_stock=channels_last(ZeroPadding2D),
    onnx_export="verinet.onnx.emitters:emit_zero_pad",
    onnx_import=("Pad",),
)
