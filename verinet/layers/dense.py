"""Bound-aware fully connected layer."""

import keras
from keras import ops

from verinet.errors import InvalidInputError
from verinet.layers._checks import require_linear_activation
from verinet.layers._fold import fold_last_axis
from verinet.layers._stock import require_plain_kernel, with_fused_activation
from verinet.layers.base import AffineRule, cast_like, center_radius, sum_spec
from verinet.layers.initializers import resolve_kernel_initializer
from verinet.layers.registry import register


@keras.saving.register_keras_serializable(package="verinet")
class Dense(keras.layers.Dense, AffineRule):
    """``keras.layers.Dense`` with IBP and CROWN bound rules.

    Activations are separate layers (``layers.ReLU()``...), so ``activation``
    must be ``None``. ``kernel_initializer="ibp"`` selects the IBP
    initialization (recommended for certified training). Every other argument
    is Keras's.

    Example:
        >>> from verinet import layers
        >>> layer = layers.Dense(10)
    """

    def __init__(self, units, activation=None, **kwargs):  # pragma: no mutate block
        require_linear_activation("Dense", activation)
        if kwargs.get("lora_rank"):
            raise InvalidInputError(
                "verinet.layers.Dense does not support LoRA (lora_rank): its bound "
                "rules use the full kernel."
            )
        if "kernel_initializer" in kwargs:
            kwargs["kernel_initializer"] = resolve_kernel_initializer(
                kwargs["kernel_initializer"]
            )
        super().__init__(units, activation=None, **kwargs)

    def _bias(self, ref):
        return cast_like(self.bias, ref) if self.use_bias else None

    def interval(self, lower, upper):
        center, radius = center_radius(lower, upper)
        kernel = cast_like(self.kernel, lower)
        mid = ops.matmul(center, kernel)
        if self.use_bias:
            mid = mid + self._bias(lower)
        rad = ops.matmul(radius, ops.abs(kernel))
        return mid - rad, mid + rad

    def backward_affine(self, A, input_shape):
        kernel = cast_like(self.kernel, A)
        A_in = ops.matmul(A, ops.transpose(kernel))
        # A Dense on (..., features) sums the bias over the leading positions too.
        bias = sum_spec(ops.matmul(A, self._bias(A))) if self.use_bias else None
        return A_in, bias

    def fold_affine(self, scale, shift) -> tuple[dict, list]:
        """This layer followed by ``y * scale + shift``, as one ``Dense``.

        The output unit is the kernel's last axis (``(in, units)``).

        Args:
            scale: one factor per unit, e.g. a batch norm's inference scale.
            shift: one offset per unit.

        Returns:
            ``(config, weights)`` of the folded layer (with a bias).

        Example:
            >>> config, weights = dense.fold_affine(scale, shift)
        """
        return fold_last_axis(self, scale, shift)


def _from_stock(layer, config, input_shape):
    require_plain_kernel(layer, config)
    return with_fused_activation(Dense, layer, config)


register(
    Dense,
    converts_from=(keras.layers.Dense,),
    from_stock=_from_stock,
    onnx_export="verinet.onnx.emitters:emit_dense",
    onnx_import=("Gemm", "MatMul"),
    folds_batch_norm=True,
)
