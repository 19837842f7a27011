"""``vn.convert``: map a stock Keras model onto verinet's zoo layers."""

from __future__ import annotations

import keras

from verinet import layers as zoo
from verinet.bounds.graph import unsupported
from verinet.errors import InvalidInputError
from verinet.layers.activations import ACTIVATIONS

# Stock Keras class -> zoo class with the same config and weights.
_SAME_CONFIG = {
    keras.layers.Dense: zoo.Dense,
    keras.layers.Conv2D: zoo.Conv2D,
    keras.layers.BatchNormalization: zoo.BatchNormalization,
    keras.layers.LeakyReLU: zoo.LeakyReLU,
    keras.layers.Flatten: zoo.Flatten,
    keras.layers.Reshape: zoo.Reshape,
    keras.layers.Dropout: zoo.Dropout,
    keras.layers.AveragePooling2D: zoo.AveragePooling2D,
    keras.layers.MaxPooling2D: zoo.MaxPooling2D,
    keras.layers.Add: zoo.Add,
    keras.layers.Rescaling: zoo.Rescaling,
    keras.layers.Normalization: zoo.Normalization,
}
_FUSED = (keras.layers.Dense, keras.layers.Conv2D)


def _activation_name(fn) -> str | None:
    name = keras.activations.serialize(fn) if callable(fn) else fn
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return None if name in (None, "linear") else name


def _activation(name, layer):
    if name not in ACTIVATIONS:
        raise unsupported(
            layer,
            f" for activation {name!r} (verinet bounds "
            f"{', '.join(sorted(ACTIVATIONS))})",
        )
    return ACTIVATIONS[name]()


def _convert_layer(layer) -> list:
    """Zoo layers computing the same function as ``layer`` (unbuilt)."""
    config = layer.get_config()
    config.pop("name", None)
    if type(layer) in (zoo.ResidualBlock,) or type(layer).__module__.startswith(
        "verinet"
    ):
        return [type(layer).from_config(config)]
    if isinstance(layer, keras.layers.ReLU):
        if config.get("max_value") is None and config.get("threshold", 0.0) == 0.0:
            slope = config.get("negative_slope", 0.0)
            return [zoo.ReLU() if slope == 0.0 else zoo.LeakyReLU(slope)]
        raise unsupported(layer, " for max_value or threshold")
    if isinstance(layer, keras.layers.Activation):
        name = _activation_name(layer.activation)
        return [] if name is None else [_activation(name, layer)]
    for stock, target in _SAME_CONFIG.items():
        if type(layer) is stock:
            fused = None
            if stock in _FUSED:
                fused = _activation_name(config.pop("activation", None))
                config["activation"] = None
            out = [target.from_config(config)]
            if fused is not None:
                out.append(_activation(fused, layer))
            return out
    raise unsupported(layer)


def _apply(layer, tensors):
    """Call the converted layers of ``layer`` and copy its weights."""
    converted = _convert_layer(layer)
    if not converted:
        return tensors[0] if len(tensors) == 1 else tensors
    x = converted[0](tensors if len(tensors) > 1 else tensors[0])
    converted[0].set_weights(layer.get_weights())
    for extra in converted[1:]:
        x = extra(x)
    return x


def _convert_graph(model, x):
    """Rebuild ``model`` on the symbolic tensor ``x`` with zoo layers."""
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = (
                _convert_graph(layer, x)
                if isinstance(layer, keras.Model)
                else _apply(layer, [x])
            )
        return x
    tensors = {id(model.inputs[0]): x}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            inputs = [tensors[id(t)] for t in node.input_tensors]
            if isinstance(layer, keras.Model):
                out = _convert_graph(layer, inputs[0])
            else:
                out = _apply(layer, inputs)
            tensors[id(node.output_tensors[0])] = out
    return tensors[id(model.outputs[0])]


def convert(model):
    """Map a stock Keras model onto verinet layers with identical weights.

    Dense, Conv2D, BatchNormalization, ReLU, LeakyReLU, Activation
    ('relu', 'gelu', 'sigmoid', 'tanh', 'linear'), Flatten, Reshape, Dropout,
    pooling, Add, Rescaling and Normalization are mapped; fused activations
    (``Dense(64, activation="relu")``) become a separate activation layer.

    Args:
        model: a built Keras ``Sequential`` or functional ``Model`` with one
            input and one output.

    Returns:
        A ``vn.Model`` computing the same function.

    Raises:
        UnsupportedLayerError: naming the first layer verinet cannot bound.

    Example:
        >>> robust = vn.convert(keras_model)
        >>> report = robust.certify(x_test, y_test, epsilon=0.05)
    """
    from verinet.models.model import Model

    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise InvalidInputError(
            "vn.convert takes a built Keras model with an Input "
            f"(got {type(model).__name__})."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidInputError(
            "vn.convert takes models with one input and one output."
        )
    inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    outputs = _convert_graph(model, inputs)
    return Model(inputs, outputs, name=f"{model.name}_verinet")
