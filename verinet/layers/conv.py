"""Bound-aware 2-D convolution."""

import keras
from keras import ops

from verinet.bounds.patches import Patches
from verinet.errors import InvalidInputError
from verinet.layers._checks import require_channels_last, require_linear_activation
from verinet.layers._conv_ops import conv2d, conv2d_transpose, window_conv_transpose
from verinet.layers._fold import fold_last_axis
from verinet.layers._spatial import paddings
from verinet.layers._stock import (
    refuse,
    require_plain_kernel,
    require_stock_channels_last,
    with_fused_activation,
)
from verinet.layers.base import AffineRule, cast_like, center_radius
from verinet.layers.initializers import resolve_kernel_initializer
from verinet.layers.registry import register


@keras.saving.register_keras_serializable(package="verinet")
class Conv2D(keras.layers.Conv2D, AffineRule):
    """``keras.layers.Conv2D`` with IBP and CROWN bound rules.

    Supports strides and 'valid'/'same' padding in channels_last layout.
    Activations are separate layers, so ``activation`` must be ``None``.
    ``kernel_initializer="ibp"`` selects the IBP initialization (recommended
    for certified training).

    Example:
        >>> from verinet import layers
        >>> layer = layers.Conv2D(16, 3, strides=2, padding="same")
    """

    def __init__(
        self, filters, kernel_size, activation=None, **kwargs
    ):  # pragma: no mutate block
        require_linear_activation("Conv2D", activation)
        require_channels_last("Conv2D", kwargs.get("data_format"))
        kwargs["data_format"] = "channels_last"  # not Keras's global default
        if kwargs.get("groups", 1) != 1:
            raise InvalidInputError("verinet.layers.Conv2D supports groups=1 only.")
        if kwargs.get("dilation_rate", 1) not in (1, (1, 1), [1, 1]):
            raise InvalidInputError(
                "verinet.layers.Conv2D supports dilation_rate=1 only."
            )
        if "kernel_initializer" in kwargs:
            kwargs["kernel_initializer"] = resolve_kernel_initializer(
                kwargs["kernel_initializer"]
            )
        super().__init__(filters, kernel_size, activation=None, **kwargs)

    supports_patches = True

    def _pads(self, hw):
        return paddings(hw, self.kernel_size, self.strides, self.padding)

    def _conv(self, x, kernel):
        """The convolution without bias."""
        return conv2d(x, kernel, self.strides, self._pads(x.shape[1:3]))

    def _linear(self, x):
        return self._conv(x, cast_like(self.kernel, x))

    def interval(self, lower, upper):
        center, radius = center_radius(lower, upper)
        mid = self._linear(center)
        if self.use_bias:
            mid = mid + cast_like(self.bias, lower)
        rad = self._conv(radius, ops.abs(cast_like(self.kernel, lower)))
        return mid - rad, mid + rad

    def backward_affine(self, A, input_shape):
        if isinstance(A, Patches):
            return self._backward_patches(A, input_shape)
        batch, specs, ho, wo, co = A.shape
        in_hw = tuple(input_shape[:2])
        flat = ops.reshape(A, (batch * specs, ho, wo, co))
        A_in = conv2d_transpose(
            flat, cast_like(self.kernel, A), self.strides, self._pads(in_hw), in_hw
        )
        A_in = ops.reshape(A_in, (batch, specs, *A_in.shape[1:]))
        bias = None
        if self.use_bias:  # sum over positions first: A · b with fewer products
            bias = ops.matmul(ops.sum(A, axis=(2, 3)), cast_like(self.bias, A))
        return A_in, bias

    def _backward_patches(self, P, input_shape):
        """Each row's window, transposed-convolved: it grows to
        ``(k - 1) * stride + kernel`` and lands on the input's grid."""
        batch, rows, kh, kw, co = P.coeffs.shape
        kernel = cast_like(self.kernel, P.coeffs)
        flat = ops.reshape(P.coeffs, (batch * rows, kh, kw, co))
        coeffs = window_conv_transpose(flat, kernel, self.strides)
        coeffs = ops.reshape(coeffs, (batch, rows, *coeffs.shape[1:]))
        (top, _), (left, _) = self._pads(tuple(input_shape[:2]))
        out = P.replace(
            coeffs,
            stride=(P.stride[0] * self.strides[0], P.stride[1] * self.strides[1]),
            offset=(
                P.offset[0] * self.strides[0] + top,
                P.offset[1] * self.strides[1] + left,
            ),
            shape=tuple(input_shape),
        )
        out = out.replace(out.coeffs * out.mask())  # zero the padding's entries
        bias = None
        if self.use_bias:
            bias = ops.matmul(
                ops.sum(P.coeffs, axis=(2, 3)), cast_like(self.bias, P.coeffs)
            )
        return out, bias

    def fold_affine(self, scale, shift) -> tuple[dict, list]:
        """``(config, weights)`` of this layer then ``y * scale + shift`` (one
        value per output channel), as in ``Dense.fold_affine``: the output
        channel is the kernel's last axis, ``(kh, kw, in, out)``."""
        return fold_last_axis(self, scale, shift)


def _from_stock(layer, config, input_shape):
    require_stock_channels_last(layer, config)
    if tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
        raise refuse(
            layer, f"dilation_rate={config['dilation_rate']!r}", "dilation_rate=1"
        )
    if config.get("groups", 1) != 1:
        raise refuse(layer, f"groups={config['groups']!r}", "groups=1")
    require_plain_kernel(layer, config)
    return with_fused_activation(Conv2D, layer, config)


register(
    Conv2D,
    converts_from=(keras.layers.Conv2D,),
    from_stock=_from_stock,
    onnx_export="verinet.onnx.emitters:emit_conv",
    onnx_import=("Conv",),
    folds_batch_norm=True,
)
