"""A residual block ``x + f(x)`` as one composite, bound-aware layer."""

import keras

from verinet.errors import InvalidInputError
from verinet.layers.conv import Conv2D
from verinet.layers.dense import Dense
from verinet.layers.registry import register


def _activation(name):
    from verinet.layers.activations import activation_layer

    return activation_layer(name)


@keras.saving.register_keras_serializable(package="verinet")
class ResidualBlock(keras.layers.Layer):
    """``x + f(x)`` with ``f`` = linear → activation → linear.

    On image inputs ``(H, W, C)`` the linear maps are 'same' ``Conv2D`` layers
    (``filters`` then ``C`` channels); on vectors ``(n,)`` they are ``Dense``
    (``filters`` then ``n`` units). The bound engine expands the block into
    its parts, so CROWN sees every activation inside it.

    Args:
        filters: width of the hidden layer of ``f``.
        kernel_size: convolution kernel size on image inputs.
        activation: name of the activation inside ``f`` ('relu', 'gelu', ...).

    Example:
        >>> from verinet import layers
        >>> block = layers.ResidualBlock(32)
    """

    def __init__(
        self, filters: int, kernel_size=3, activation="relu", **kwargs
    ):  # pragma: no mutate block
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = kernel_size
        self.activation_name = activation
        _activation(activation)  # fail early on an unknown name
        self.inner = []

    def build(self, input_shape):
        if len(input_shape) == 4:
            first = Conv2D(self.filters, self.kernel_size, padding="same")
            last = Conv2D(input_shape[-1], self.kernel_size, padding="same")
        elif len(input_shape) == 2:
            first, last = Dense(self.filters), Dense(input_shape[-1])
        else:
            raise InvalidInputError(
                f"ResidualBlock takes (batch, H, W, C) or (batch, n) inputs, got "
                f"shape {tuple(input_shape)}."
            )
        self.inner = [first, _activation(self.activation_name), last]
        shape = input_shape
        for layer in self.inner:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs):
        x = inputs
        for layer in self.inner:
            x = layer(x)
        return inputs + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "activation": self.activation_name,
        }


# The bound graph expands the block into its Dense/Conv2D, activation and sum.
register(ResidualBlock, composite=True)
