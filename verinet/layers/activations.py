"""Activation names understood by verinet, mapped to zoo layers.

Each activation layer states its Keras name when it registers
(``register(ReLU, activation="relu")``); this module looks it up.
"""

from verinet.errors import InvalidInputError
from verinet.layers import registry


def activation_layer(name: str):
    """Return a new zoo layer for an activation name.

    Args:
        name: a Keras activation name the zoo computes
            (``verinet.layers.registry.activation_names()``).

    Returns:
        A bound-aware Keras layer.

    Raises:
        InvalidInputError: for an unknown name.

    Example:
        >>> activation_layer("relu")
        <ReLU ...>
    """
    spec = registry.activation_spec(name)
    if spec is None:
        raise InvalidInputError(
            f"Unknown activation {name!r}; verinet supports "
            f"{registry.activation_names()}."
        )
    return spec.make_activation()


def __getattr__(name: str):
    if name == "ACTIVATIONS":  # the table this module kept before the registry
        import warnings

        warnings.warn(
            "verinet.layers.activations.ACTIVATIONS is deprecated; use "
            "activation_layer(name) or verinet.layers.registry.activation_names().",
            DeprecationWarning,
            stacklevel=2,
        )
        return {
            name: (lambda name=name: activation_layer(name))
            for name in registry.activation_names()
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
