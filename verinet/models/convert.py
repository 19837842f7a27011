"""``vn.convert``: map a stock Keras model onto verinet's zoo layers."""

from __future__ import annotations

import keras

from verinet import layers as zoo
from verinet.bounds.graph import trace, unsupported
from verinet.errors import InvalidInputError
from verinet.layers.activations import ACTIVATIONS
from verinet.layers.augmentation import is_inference_identity

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
    keras.layers.Permute: zoo.Permute,
    keras.layers.ZeroPadding2D: zoo.ZeroPadding2D,
}
_FUSED = (keras.layers.Dense, keras.layers.Conv2D)
# Stock layers whose zoo version computes in the channels_last layout only.
_CHANNELS_LAST = (
    keras.layers.Conv2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling2D,
    keras.layers.ZeroPadding2D,
)


def _refuse(layer, setting: str, supported: str, hint: str = ""):
    """The error for a stock setting that verinet cannot reproduce exactly."""
    return unsupported(
        layer,
        f" for {setting}: vn.convert maps {type(layer).__name__} with {supported} "
        f"only{hint}",
    )


def _check_settings(layer, config: dict, input_shape) -> None:
    """Refuse stock settings a zoo layer would not compute the same way.

    Edits ``config`` in place where an equivalent zoo setting exists.
    """
    kind = type(layer)
    if kind in _CHANNELS_LAST and config.get("data_format") not in (
        None,
        "channels_last",
    ):
        raise _refuse(
            layer,
            f"data_format={config['data_format']!r}",
            "data_format='channels_last'",
            "; build the model channels_last (inputs (H, W, C)) and transpose the data",
        )
    if kind is keras.layers.Conv2D:
        if tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
            raise _refuse(
                layer, f"dilation_rate={config['dilation_rate']!r}", "dilation_rate=1"
            )
        if config.get("groups", 1) != 1:
            raise _refuse(layer, f"groups={config['groups']!r}", "groups=1")
    if kind in _FUSED:
        if getattr(layer, "quantization_mode", None) is not None:
            raise _refuse(
                layer,
                f"quantization mode {layer.quantization_mode!r}",
                "float weights (convert the model before quantizing it)",
            )
        if getattr(layer, "lora_enabled", False) or config.get("lora_rank"):
            raise _refuse(
                layer, "LoRA (lora_rank set)", "plain kernels (no LoRA adapters)"
            )
    if kind is keras.layers.BatchNormalization:
        axis = config.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if isinstance(axis, int) and axis == len(input_shape) - 1:
            axis = -1
        if axis != -1:
            raise _refuse(
                layer,
                f"axis={config['axis']!r}",
                "axis=-1 (the last, channels_last axis)",
            )
        if config.get("renorm"):
            raise _refuse(layer, "renorm=True", "renorm=False")
        config["axis"] = -1
        config.pop("synchronized", None)  # training only; inference is the same


def _flatten_channels_first(input_shape) -> list:
    """Zoo layers for ``Flatten(data_format="channels_first")``.

    Keras moves the channel axis last before flattening such an input.
    """
    rank = len(input_shape)
    return [zoo.Permute((*range(2, rank), 1)), zoo.Flatten()]


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


def _convert_layer(layer, input_shape=()) -> list:
    """Zoo layers computing the same function as ``layer`` (unbuilt).

    ``input_shape`` is the shape (batch axis included) of the layer's first
    input in the model being converted.
    """
    config = layer.get_config()
    config.pop("name", None)
    if (
        type(layer) in (zoo.ResidualBlock,)
        or type(layer).__module__.startswith("verinet")
        or is_inference_identity(layer)  # kept: it augments in training
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
    if type(layer) is keras.layers.Flatten and len(input_shape) > 2:
        if config.get("data_format") == "channels_first":
            return _flatten_channels_first(input_shape)
    for stock, target in _SAME_CONFIG.items():
        if type(layer) is stock:
            _check_settings(layer, config, input_shape)
            fused = None
            if stock in _FUSED:
                fused = _activation_name(config.pop("activation", None))
                config["activation"] = None
            try:
                out = [target.from_config(config)]
            except Exception as exc:  # noqa: BLE001 - a setting the zoo refuses
                reason = exc.__cause__ or exc
                raise unsupported(layer, f" for its configuration: {reason}") from exc
            if fused is not None:
                out.append(_activation(fused, layer))
            return out
    raise unsupported(layer)


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
    ('relu', 'gelu', 'sigmoid', 'tanh', 'linear'), Flatten, Reshape, Dropout,
    pooling, Add, Rescaling, Normalization, Permute and ZeroPadding2D are
    mapped; fused activations (``Dense(64, activation="relu")``) become a
    separate activation layer. Augmentation and noise layers (``RandomFlip``,
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
