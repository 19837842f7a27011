"""Argument checks shared by zoo layers."""

from verinet.errors import InvalidInputError

_LINEAR = (None, "linear")


def require_linear_activation(layer_name: str, activation) -> None:
    """Refuse a fused activation: zoo layers keep activations separate."""
    if callable(activation):
        import keras

        activation = keras.activations.serialize(activation)
    if activation not in _LINEAR:
        raise InvalidInputError(
            f"verinet.layers.{layer_name} takes no fused activation (got "
            f"{activation!r}): add it as its own layer so it can be bounded, e.g. "
            f"layers.{layer_name}(...) followed by layers.ReLU(). "
            "vn.convert() splits fused activations of stock Keras models for you."
        )


def require_channels_last(layer_name: str, data_format) -> None:
    """verinet's spatial layers use the channels_last layout."""
    if data_format not in (None, "channels_last"):
        raise InvalidInputError(
            f"verinet.layers.{layer_name} supports data_format='channels_last' "
            f"only (got {data_format!r})."
        )
