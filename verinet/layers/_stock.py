"""Shared checks for the ``from_stock`` conversion hooks of the registry.

A hook refuses a stock Keras setting the zoo would not compute the same way
(``UnsupportedLayerError`` naming the layer and the setting), never drops it.
The bound graph's error builder is imported when a hook runs: the layer
modules load before ``verinet.bounds.graph`` can.
"""

from __future__ import annotations

import keras

from verinet.layers import registry


def refuse(layer, setting: str, supported: str, hint: str = ""):
    """The error for a stock setting that verinet cannot reproduce exactly."""
    return unsupported(
        layer,
        f" for {setting}: vn.convert maps {type(layer).__name__} with {supported} "
        f"only{hint}",
    )


def unsupported(layer, detail: str = ""):
    """``verinet.bounds.graph.unsupported``, imported on first use."""
    from verinet.bounds.graph import unsupported as error

    return error(layer, detail)


def require_stock_channels_last(layer, config: dict) -> None:
    """Refuse a stock layer computing in the channels_first layout."""
    if config.get("data_format") not in (None, "channels_last"):
        raise refuse(
            layer,
            f"data_format={config['data_format']!r}",
            "data_format='channels_last'",
            "; build the model channels_last (inputs (H, W, C)) and transpose the data",
        )


def channels_last(zoo_class: type):
    """A ``from_stock`` hook: refuse channels_first, else copy the config.

    Example:
        >>> register(MaxPooling2D, from_stock=channels_last(MaxPooling2D), ...)
    """

    def hook(layer, config: dict, input_shape: tuple) -> list:
        require_stock_channels_last(layer, config)
        return [from_config(zoo_class, layer, config)]

    return hook


def require_plain_kernel(layer, config: dict) -> None:
    """Refuse a quantized kernel or LoRA adapters (Dense, Conv2D)."""
    if getattr(layer, "quantization_mode", None) is not None:
        raise refuse(
            layer,
            f"quantization mode {layer.quantization_mode!r}",
            "float weights (convert the model before quantizing it)",
        )
    if getattr(layer, "lora_enabled", False) or config.get("lora_rank"):
        raise refuse(layer, "LoRA (lora_rank set)", "plain kernels (no LoRA adapters)")


def from_config(zoo_class: type, layer, config: dict) -> keras.layers.Layer:
    """``zoo_class.from_config(config)``; a setting the zoo refuses names ``layer``."""
    try:
        return zoo_class.from_config(config)
    except Exception as exc:  # noqa: BLE001 - a setting the zoo refuses
        reason = exc.__cause__ or exc
        raise unsupported(layer, f" for its configuration: {reason}") from exc


def activation_name(fn) -> str | None:
    """The Keras name of an activation (function or name); ``None`` for linear."""
    name = keras.activations.serialize(fn) if callable(fn) else fn
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return None if name in (None, "linear") else name


def activation_for(name: str, layer) -> keras.layers.Layer:
    """The zoo layer computing activation ``name`` (found for ``layer``)."""
    spec = registry.activation_spec(name)
    if spec is None:
        raise unsupported(
            layer,
            f" for activation {name!r} (verinet bounds "
            f"{', '.join(registry.activation_names())})",
        )
    return spec.make_activation()


def with_fused_activation(zoo_class: type, layer, config: dict) -> list:
    """The zoo layer without activation, then its activation as a layer.

    ``Dense(64, activation="relu")`` becomes ``Dense(64)`` and ``ReLU()``.
    """
    fused = activation_name(config.pop("activation", None))
    config["activation"] = None
    out = [from_config(zoo_class, layer, config)]
    if fused is not None:
        out.append(activation_for(fused, layer))
    return out
