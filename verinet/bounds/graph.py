"""The one adapter over Keras's layer graph.

It turns a Keras model (Sequential or Functional, nested models and composite
zoo layers included) into a flat list of bound-rule nodes in topological
order. Nothing else in verinet touches Keras's graph internals.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from verinet.errors import InvalidInputError, UnsupportedLayerError
from verinet.layers.augmentation import is_inference_identity
from verinet.layers.base import BoundRule
from verinet.layers.merge import AddRule
from verinet.layers.residual import ResidualBlock


@dataclass(frozen=True)
class Node:
    """One step of the bound graph.

    Attributes:
        rule: the bound rule (a zoo layer), or ``None`` for the model input.
        inputs: indices of the nodes this one reads.
        name: the Keras layer name, for messages.
    """

    rule: BoundRule | None
    inputs: tuple[int, ...]
    name: str


def supported_layers() -> list[str]:
    """Names of the layers that carry bound rules: every registered layer
    (``vn.layers.registered()``, users' own included)."""
    from verinet.layers.registry import registered

    return [spec.name for spec in registered()]


def unsupported(layer, detail: str = "") -> UnsupportedLayerError:
    """Build the error for a layer without a bound rule."""
    return UnsupportedLayerError(
        f"Layer {layer.name!r} ({type(layer).__module__}.{type(layer).__name__}) has "
        f"no bound rule{detail}. Supported verinet layers: "
        f"{', '.join(supported_layers())}. Stock Keras models can be mapped onto "
        "them with vn.convert(model); stock augmentation and noise layers "
        "(RandomFlip, GaussianNoise, ...) are accepted as the identity they are "
        "at inference."
    )


class BoundGraph:
    """A model's layers as bound-rule nodes; node 0 is the model input.

    Args:
        model: a built Keras model made of verinet layers.

    Raises:
        UnsupportedLayerError: naming the first layer without a bound rule.
    """

    def __init__(self, model):
        self.model = model
        self.nodes: list[Node] = [Node(None, (), "input")]
        if not model.built or not getattr(model, "inputs", None):
            raise InvalidInputError(
                f"Model {model.name!r} is not built: give it an Input layer "
                "(layers.Input(shape)) or call it on data first."
            )
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise InvalidInputError(
                "verinet bounds models with one input and one output; "
                f"{model.name!r} has {len(model.inputs)} and {len(model.outputs)}."
            )
        self.input_shape = tuple(model.inputs[0].shape[1:])
        self.output = self._expand_model(model, 0)

    def _append(self, rule, inputs, name) -> int:
        self.nodes.append(Node(rule, tuple(inputs), name))
        return len(self.nodes) - 1

    def _expand(self, layer, inputs: list[int]) -> int:
        if isinstance(layer, keras.layers.InputLayer) or is_inference_identity(layer):
            return inputs[0]  # augmentation and noise: inference passes through
        if isinstance(layer, keras.Model):
            if len(inputs) != 1:
                raise unsupported(layer, " for several inputs")
            return self._expand_model(layer, inputs[0])
        if isinstance(layer, ResidualBlock):
            x = inputs[0]
            for inner in layer.inner:
                x = self._expand(inner, [x])
            return self._append(AddRule(), [inputs[0], x], layer.name)
        if isinstance(layer, BoundRule):
            return self._append(layer, inputs, layer.name)
        raise unsupported(layer)

    def _expand_model(self, model, input_id: int) -> int:
        return trace(model, input_id, self._expand)

    def consumers(self) -> list[list[int]]:
        """For each node, the indices of the nodes that read it."""
        out = [[] for _ in self.nodes]
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                out[j].append(i)
        return out


def trace(model, start, visit):
    """Walk ``model``'s layers in topological order: the one walk over
    Keras's layer graph (Sequential or Functional).

    Args:
        model: a built Keras model with one input and one output.
        start: what stands for the model's input (a node index, a tensor).
        visit: ``visit(layer, inputs) -> output``, called once per layer
            call with what stands for its inputs; it recurses into nested
            models itself.

    Returns:
        What ``visit`` returned for the model's output.

    Raises:
        UnsupportedLayerError: for a layer call with several outputs.
    """
    if isinstance(model, keras.Sequential):
        x = start
        for layer in model.layers:
            x = visit(layer, [x])
        return x
    values = {id(model.inputs[0]): start}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if len(node.output_tensors) != 1:
                raise unsupported(layer, " for several outputs")
            inputs = [values[id(t)] for t in node.input_tensors]
            values[id(node.output_tensors[0])] = visit(layer, inputs)
    return values[id(model.outputs[0])]


def bound_model(model) -> tuple[keras.Model, BoundGraph]:
    """The one adapter from any Keras model to a bound graph.

    A model of verinet layers is used as it is; a stock Keras model is
    mapped onto the zoo once (``vn.convert``, identical weights).

    Args:
        model: a built Keras model.

    Returns:
        ``(bounded, graph)``: the model whose layers the graph holds (``model``
        itself, or its converted twin) and its ``BoundGraph``.

    Raises:
        InvalidInputError: when ``model`` is not a built Keras model.
        UnsupportedLayerError: naming a layer neither verinet nor
            ``vn.convert`` can bound.

    Example:
        >>> bounded, graph = bound_model(keras_model)
    """
    if not isinstance(model, keras.Model):
        raise InvalidInputError(
            f"Expected a built Keras model, got {type(model).__name__}."
        )
    try:
        return model, BoundGraph(model)
    except UnsupportedLayerError:
        from verinet.models.convert import convert

        converted = convert(model)
        return converted, BoundGraph(converted)
