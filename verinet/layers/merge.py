"""Bound-aware elementwise sum of several inputs (skip connections)."""

import keras

from verinet.layers.base import BoundRule
from verinet.layers.registry import register


class AddRule(BoundRule):
    """Bound rule of ``y = x_1 + ... + x_n``."""

    supports_patches = True

    def bound_interval(self, inputs):
        lower = sum(low for low, _ in inputs)
        upper = sum(up for _, up in inputs)
        return lower, upper

    def bound_backward(self, lA, uA, inputs):
        return [(lA, uA) for _ in inputs], None, None


@keras.saving.register_keras_serializable(package="verinet")
class Add(keras.layers.Add, AddRule):
    """``keras.layers.Add`` with bound rules, for functional skip connections.

    Example:
        >>> import keras
        >>> from verinet import layers
        >>> x = keras.Input((4,))
        >>> y = layers.Add()([x, layers.Dense(4)(x)])
    """


register(
    Add,
    converts_from=(keras.layers.Add,),
    onnx_export="verinet.onnx.emitters:emit_add",
    onnx_import=("Add", "Sub"),
)
