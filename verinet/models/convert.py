"""``vn.convert``: map a stock Keras model onto verinet's zoo layers."""

from __future__ import annotations

import keras

from verinet.bounds.graph import trace, unsupported
from verinet.errors import InvalidInputError
from verinet.layers import registry
from verinet.layers._stock import activation_for, activation_name
from verinet.layers.augmentation import is_inference_identity


def _convert_layer(layer, input_shape=()) -> list:
    """Zoo layers computing the same function as ``layer`` (unbuilt).

    A registered zoo layer is copied; a stock one is mapped by the layer
    whose spec lists its class in ``converts_from`` (see
    ``verinet.layers.registry``). ``input_shape`` is the shape (batch axis
    included) of the layer's first input in the model being converted.
    """
    config = layer.get_config()
    config.pop("name", None)
    if registry.spec_for(layer) is not None or is_inference_identity(layer):
        return [type(layer).from_config(config)]  # augmentation: kept for training
    if isinstance(layer, keras.layers.Activation):
        name = activation_name(layer.activation)
        return [] if name is None else [activation_for(name, layer)]
    spec = registry.converter_for(type(layer))
    if spec is None:
        raise unsupported(
            layer,
            " and vn.convert has no mapping for it (it maps keras.layers "
            f"{', '.join(registry.convertible_names())} and Activation)",
        )
    return spec.convert(layer, config, input_shape)


def _apply(layer, tensors):
    """Call the converted layers of ``layer`` and copy its weights."""
    converted = _convert_layer(layer, tuple(tensors[0].shape))
    if not converted:
        return tensors[0] if len(tensors) == 1 else tensors
    x = converted[0](tensors if len(tensors) > 1 else tensors[0])
    converted[0].set_weights(layer.get_weights())
    for extra in converted[1:]:
        x = extra(x)
    return x


def _convert_graph(model, x):
    """Rebuild ``model`` on the symbolic tensor ``x`` with zoo layers."""

    def visit(layer, inputs):
        if isinstance(layer, keras.Model):
            return _convert_graph(layer, inputs[0])
        return _apply(layer, inputs)

    return trace(model, x, visit)


def convert(model):
    """Map a stock Keras model onto verinet layers with identical weights.

    Dense, Conv2D, BatchNormalization, ReLU, LeakyReLU, Activation
    ('relu', 'leaky_relu', 'gelu', 'sigmoid', 'tanh', 'linear'), Flatten,
    Reshape, Dropout, pooling, Add, Rescaling, Normalization, Permute and
    ZeroPadding2D are mapped (each zoo layer's ``converts_from`` in
    ``vn.layers.registered()``, with the hook that checks its settings);
    fused activations (``Dense(64, activation="relu")``) become a separate
    activation layer. Augmentation and noise layers (``RandomFlip``,
    ``GaussianNoise``, ...; see ``verinet.layers.augmentation``) are kept as
    they are: the bound graph reads them as the identity they are at
    inference. A setting the zoo cannot compute the same way
    is refused, never dropped: Conv2D with ``dilation_rate`` or ``groups``
    other than 1, ``data_format="channels_first"`` in convolution, pooling
    and padding, batch norm over an axis other than the last or with
    ``renorm``, quantized or LoRA Dense/Conv2D. ``Flatten`` with
    ``data_format="channels_first"`` becomes ``Permute`` + ``Flatten``, as
    Keras computes it.

    Args:
        model: a built Keras ``Sequential`` or functional ``Model`` with one
            input and one output.

    Returns:
        A ``vn.Model`` computing the same function.

    Raises:
        UnsupportedLayerError: naming the first layer verinet cannot bound, and
            the setting it cannot reproduce.

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
