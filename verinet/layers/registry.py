"""What each zoo layer can do: the one table ``convert``, ``deploy`` and ONNX ask.

Each zoo layer registers itself at the bottom of its own module with
``register(Dense, converts_from=(keras.layers.Dense,), ...)``, stating the
stock Keras classes ``vn.convert`` maps onto it (and the hook that checks
their settings), its ONNX export emitter and the ONNX op types that import
into it, whether a following batch norm folds into it, and the Keras
activation name it computes. ``vn.convert``, ``vn.deploy`` and the ONNX
writer read these specs instead of keeping lists of their own.

Lookups are by exact class: a subclass may compute something else, so it is
unknown here until it is registered itself (its bound rules, which it
inherits, still let the bound graph take it).

Import cycles: this module imports only Keras and ``verinet.errors``, so
every layer module can import it. What lives outside the layer package is
named, not imported: ``onnx_export`` may be a ``"module:function"`` string,
imported the first time an export needs it (``LayerSpec.emitter``), because
``verinet.onnx`` imports the layers and not the reverse. The conversion hooks
live beside their layers (shared checks in ``verinet.layers._stock``) and
import the bound graph's error only when they run.

Example:
    >>> from verinet import layers
    >>> layers.registry.spec_for(layers.Dense).folds_batch_norm
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import keras

from verinet.errors import InvalidInputError

#: ``hook(stock_layer, config, input_shape) -> [zoo layers]``: check the stock
#: layer's settings (raising ``UnsupportedLayerError`` for one the zoo cannot
#: reproduce) and build the unbuilt zoo layers computing the same function.
FromStock = Callable[[keras.layers.Layer, dict, tuple], list]


@dataclass(frozen=True)
class LayerSpec:
    """What one zoo layer class can do.

    Attributes:
        layer: the zoo layer class.
        converts_from: stock Keras classes (exact types) ``vn.convert`` maps
            onto ``layer``, copying their weights.
        from_stock: the conversion hook (see ``FromStock``); ``None`` builds
            ``layer.from_config(stock_config)`` (a setting it refuses raises
            ``UnsupportedLayerError`` naming the stock layer).
        onnx_export: the ONNX emitter ``emit(writer, layer, inputs, shapes,
            hint) -> (name, layout)`` (see ``verinet.onnx.emitters``), or a
            ``"module:function"`` reference to one, or ``None``.
        onnx_import: ONNX op types ``vn.from_onnx`` turns into this layer.
        folds_batch_norm: whether ``vn.deploy`` folds a following batch
            normalization into it (through ``layer.fold_affine``).
        activation: the Keras activation name the layer computes (``"relu"``)
            when built with ``activation_config``, for ``Activation`` layers
            and fused activations; ``None`` for other layers.
        activation_config: constructor arguments for that activation.
        composite: the bound graph expands the layer into registered parts
            (``ResidualBlock``), which are exported and bounded as themselves.
    """

    layer: type
    converts_from: tuple[type, ...] = ()
    from_stock: FromStock | None = None
    onnx_export: Callable | str | None = None
    onnx_import: tuple[str, ...] = ()
    folds_batch_norm: bool = False
    activation: str | None = None
    activation_config: tuple[tuple[str, Any], ...] = ()
    composite: bool = False

    @property
    def name(self) -> str:
        """The layer's class name."""
        return self.layer.__name__

    def convert(self, stock, config: dict, input_shape: tuple) -> list:
        """Unbuilt zoo layers computing what the stock layer ``stock`` does.

        Args:
            stock: a layer of one of ``converts_from``.
            config: its config without ``name`` (hooks may edit it).
            input_shape: the shape of its first input, batch axis included.

        Returns:
            A list of zoo layers, ``stock``'s weights going to the first.
        """
        if self.from_stock is not None:
            return self.from_stock(stock, config, input_shape)
        from verinet.layers._stock import from_config

        return [from_config(self.layer, stock, config)]

    def emitter(self) -> Callable | None:
        """The ONNX emitter, importing a ``"module:function"`` reference."""
        if not isinstance(self.onnx_export, str):
            return self.onnx_export
        module, _, attribute = self.onnx_export.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def make_activation(self) -> keras.layers.Layer:
        """A new layer computing ``activation``."""
        return self.layer(**dict(self.activation_config))


_SPECS: dict[type, LayerSpec] = {}


def _check_class(value, what: str) -> type:
    if not (isinstance(value, type) and issubclass(value, keras.layers.Layer)):
        raise InvalidInputError(
            f"{what} must be a Keras layer class (a subclass of "
            f"keras.layers.Layer), got {value!r}."
        )
    return value


def _check_bound_rules(layer_class: type, composite: bool) -> None:
    from verinet.layers.base import BoundRule

    if not (composite or issubclass(layer_class, BoundRule)):
        raise InvalidInputError(
            f"register({layer_class.__name__}): the class has no bound rules. "
            "Subclass a zoo layer or verinet.layers.base.BoundRule (e.g. "
            "AffineRule or ElementwiseRule) and implement them, or pass "
            "composite=True for a layer the bound graph expands into parts."
        )


def _check_onnx_export(layer_class: type, onnx_export) -> None:
    ok = onnx_export is None or callable(onnx_export)
    if isinstance(onnx_export, str):
        module, colon, attribute = onnx_export.partition(":")
        ok = bool(module and colon and attribute)
    if not ok:
        raise InvalidInputError(
            f"register({layer_class.__name__}): onnx_export must be None, an "
            "emitter function or a 'module:function' reference, got "
            f"{onnx_export!r}."
        )


def _check_unclaimed(layer_class: type, stock: tuple, activation) -> None:
    for spec in _SPECS.values():
        taken = set(stock) & set(spec.converts_from)
        if taken:
            names = ", ".join(sorted(cls.__name__ for cls in taken))
            raise InvalidInputError(
                f"register({layer_class.__name__}): vn.convert already maps "
                f"{names} onto {spec.name}; a stock class converts to one layer."
            )
        if activation is not None and activation == spec.activation:
            raise InvalidInputError(
                f"register({layer_class.__name__}): the activation "
                f"{activation!r} is already computed by {spec.name}."
            )


def register(
    layer_class: type,
    *,
    converts_from: Iterable[type] = (),
    from_stock: FromStock | None = None,
    onnx_export: Callable | str | None = None,
    onnx_import: Iterable[str] = (),
    folds_batch_norm: bool = False,
    activation: str | None = None,
    activation_config: Mapping[str, Any] | None = None,
    composite: bool = False,
) -> LayerSpec:
    """Declare what a zoo (or user) layer class can do.

    Args:
        layer_class: a Keras layer class with bound rules (a subclass of a
            zoo layer or of ``verinet.layers.base.BoundRule``).
        converts_from: stock Keras layer classes ``vn.convert`` maps onto it
            (exact types, each claimed by one layer only).
        from_stock: the conversion hook ``hook(stock, config, input_shape) ->
            [layers]`` that checks a stock layer's settings; by default
            ``layer_class.from_config(config)``.
        onnx_export: its ONNX emitter (see ``verinet.onnx.emitters``) or a
            ``"module:function"`` reference to one.
        onnx_import: ONNX op types that ``vn.from_onnx`` imports into it.
        folds_batch_norm: ``vn.deploy`` folds a following batch norm into it;
            the class must define ``fold_affine(scale, shift)``.
        activation: the Keras activation name it computes, if any.
        activation_config: constructor arguments for that activation.
        composite: the bound graph expands it into registered parts.

    Returns:
        The new ``LayerSpec``.

    Raises:
        InvalidInputError: for a class that is not a Keras layer with bound
            rules, one already registered, a stock class or activation name
            another layer claims, or ``folds_batch_norm`` without
            ``fold_affine``.

    Example:
        >>> class Scaled(layers.Dense):
        ...     ...
        >>> vn.layers.register(Scaled, converts_from=(MyStockScaled,))
    """
    _check_class(layer_class, "register() takes a layer class; layer_class")
    if layer_class in _SPECS:
        raise InvalidInputError(
            f"{layer_class.__name__} is already registered; a layer class is "
            "registered once."
        )
    _check_bound_rules(layer_class, composite)
    stock = tuple(_check_class(cls, "converts_from entries") for cls in converts_from)
    if from_stock is not None and not callable(from_stock):
        raise InvalidInputError(
            f"register({layer_class.__name__}): from_stock must be callable, "
            f"got {from_stock!r}."
        )
    _check_onnx_export(layer_class, onnx_export)
    if folds_batch_norm and not callable(getattr(layer_class, "fold_affine", None)):
        raise InvalidInputError(
            f"register({layer_class.__name__}, folds_batch_norm=True): the class "
            "needs a fold_affine(scale, shift) method returning (config, weights)."
        )
    _check_unclaimed(layer_class, stock, activation)
    spec = LayerSpec(
        layer=layer_class,
        converts_from=stock,
        from_stock=from_stock,
        onnx_export=onnx_export,
        onnx_import=tuple(onnx_import),
        folds_batch_norm=bool(folds_batch_norm),
        activation=activation,
        activation_config=tuple(sorted((activation_config or {}).items())),
        composite=bool(composite),
    )
    _SPECS[layer_class] = spec
    return spec


def registered() -> tuple[LayerSpec, ...]:
    """Every registered layer's spec, by class name.

    Returns:
        A tuple of ``LayerSpec``.

    Example:
        >>> [spec.name for spec in vn.layers.registered()][:2]
        ['Add', 'AveragePooling2D']
    """
    return tuple(sorted(_SPECS.values(), key=lambda spec: spec.name))


def spec_for(layer) -> LayerSpec | None:
    """The spec of a layer or layer class (exact class), or ``None``.

    Args:
        layer: a layer instance or class.

    Returns:
        Its ``LayerSpec``; ``None`` when its exact class is not registered
        (a subclass registers itself).

    Example:
        >>> spec_for(layers.ReLU()).activation
        'relu'
    """
    return _SPECS.get(layer if isinstance(layer, type) else type(layer))


def converter_for(stock_class: type) -> LayerSpec | None:
    """The spec whose ``converts_from`` holds ``stock_class`` exactly, or ``None``.

    Args:
        stock_class: a stock Keras layer class.

    Returns:
        The ``LayerSpec`` of the zoo layer ``vn.convert`` maps it onto.

    Example:
        >>> converter_for(keras.layers.Dense).name
        'Dense'
    """
    for spec in _SPECS.values():
        if stock_class in spec.converts_from:
            return spec
    return None


def activation_spec(name: str) -> LayerSpec | None:
    """The spec of the layer computing the Keras activation ``name``, or ``None``.

    Args:
        name: a Keras activation name (``"relu"``).

    Returns:
        The ``LayerSpec`` whose ``activation`` is ``name``.

    Example:
        >>> activation_spec("gelu").name
        'GeLU'
    """
    for spec in _SPECS.values():
        if spec.activation == name:
            return spec
    return None


def activation_names() -> list[str]:
    """The Keras activation names the zoo computes, sorted.

    Example:
        >>> "gelu" in activation_names()
        True
    """
    return sorted(spec.activation for spec in _SPECS.values() if spec.activation)


def convertible_names() -> list[str]:
    """The stock Keras class names ``vn.convert`` maps by class, sorted.

    Example:
        >>> "Conv2D" in convertible_names()
        True
    """
    return sorted({cls.__name__ for s in _SPECS.values() for cls in s.converts_from})


def exportable_names() -> list[str]:
    """The registered layers with an ONNX emitter, sorted.

    Example:
        >>> "Dense" in exportable_names()
        True
    """
    return [spec.name for spec in registered() if spec.onnx_export is not None]


def _cell(items) -> str:
    return ", ".join(f"`{item}`" for item in items) or "—"


def _onnx_cell(spec: LayerSpec) -> str:
    if spec.composite:
        return "as its parts"
    parts = ["export"] if spec.onnx_export is not None else []
    if spec.onnx_import:
        parts.append(f"import from {_cell(spec.onnx_import)}")
    return "; ".join(parts) or "—"


def support_table() -> str:
    """A Markdown table of the registered layers and what each can do.

    The README's layer list is this table (a test keeps them equal).

    Returns:
        The table: layer, the stock Keras classes it converts from, ONNX
        export and import, whether batch norm folds into it.

    Example:
        >>> print(support_table().splitlines()[0])
        | layer | converts from (`keras.layers`) | ONNX | folds batch norm |
    """
    rows = [
        "| layer | converts from (`keras.layers`) | ONNX | folds batch norm |",
        "| --- | --- | --- | --- |",
    ]
    for spec in registered():
        stock = [cls.__name__ for cls in spec.converts_from]
        if spec.activation:
            stock.append(f'Activation("{spec.activation}")')
        folds = "yes" if spec.folds_batch_norm else "no"
        rows.append(
            f"| `{spec.name}` | {_cell(stock)} | {_onnx_cell(spec)} | {folds} |"
        )
    return "\n".join(rows) + "\n"
