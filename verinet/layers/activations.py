"""Activation names understood by verinet, mapped to zoo layers."""

import functools

from verinet.errors import InvalidInputError
from verinet.layers.relu import LeakyReLU, ReLU
from verinet.layers.smooth import GeLU, Sigmoid, Tanh

ACTIVATIONS = {
    "relu": ReLU,
    # Keras's "leaky_relu" activation uses slope 0.2 (the layer's default is 0.3).
    "leaky_relu": functools.partial(LeakyReLU, negative_slope=0.2),
    "gelu": GeLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}


def activation_layer(name: str):
    """Return a new zoo layer for an activation name.

    Args:
        name: one of ``verinet.layers.activations.ACTIVATIONS``.

    Returns:
        A bound-aware Keras layer.

    Raises:
        InvalidInputError: for an unknown name.
    """
    if name not in ACTIVATIONS:
        raise InvalidInputError(
            f"Unknown activation {name!r}; verinet supports {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]()
