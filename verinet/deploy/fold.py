"""``vn.deploy``: the inference model, batch norm folded and dropout removed."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from verinet.bounds.graph import BoundGraph, bound_model
from verinet.layers import registry
from verinet.layers.affine import ElementwiseAffine
from verinet.layers.batch_norm import BatchNormalization
from verinet.layers.merge import Add
from verinet.layers.reshaping import Dropout


def bound_graph(model: keras.Model) -> BoundGraph:
    """The model's ``BoundGraph``, converting a stock Keras model first
    (see ``verinet.bounds.graph.bound_model``).

    Raises:
        InvalidInputError: when ``model`` is not a built Keras model.
        UnsupportedLayerError: naming a layer neither verinet nor
            ``vn.convert`` can bound.
    """
    return bound_model(model)[1]


def bn_affine(bn: BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """The inference ``(scale, shift)`` of a batch normalization, in float64."""
    reference = ops.zeros((1,), dtype="float64")
    scale, shift = bn.affine_params(reference)
    return ops.convert_to_numpy(scale), ops.convert_to_numpy(shift)


def fold_batch_norm(linear, bn) -> tuple[dict, list[np.ndarray]]:
    """Config and weights of ``linear`` followed by ``bn`` as one layer.

    The layer folds the batch norm's inference scale and shift itself
    (``linear.fold_affine``): it knows which kernel axis is its output.

    Args:
        linear: a built layer whose spec says ``folds_batch_norm`` (``Dense``,
            ``Conv2D``).
        bn: the ``BatchNormalization`` normalizing its output.

    Returns:
        ``(config, weights)`` for a layer of ``linear``'s type with a bias.

    Example:
        >>> config, weights = fold_batch_norm(dense, bn)
    """
    scale, shift = bn_affine(bn)
    return linear.fold_affine(scale, shift)


def folds_batch_norm(layer) -> bool:
    """Whether a batch norm after ``layer`` folds into it (its registry spec)."""
    spec = registry.spec_for(layer)
    return spec is not None and spec.folds_batch_norm


class UniqueNames:
    """Unique layer names for a rebuilt model (nested models may repeat)."""

    def __init__(self):
        self.taken = set()

    def base(self, name: str) -> str:
        """The name before any ``_2``, ``_3`` suffix is added."""
        return name

    def __call__(self, name: str) -> str:
        name = self.base(name)
        candidate, k = name, 1
        while candidate in self.taken:
            k += 1
            candidate = f"{name}_{k}"
        self.taken.add(candidate)
        return candidate


def _clone(layer, name: str, config=None):
    config = dict(layer.get_config() if config is None else config)
    config["name"] = name
    return type(layer).from_config(config)


def _plan(graph):
    """Resolve dropout away and find the (foldable layer) -> BN pairs to fold.

    Returns:
        ``(alias, fold)``: ``alias[i]`` is the node a dropout node stands for;
        ``fold`` maps a linear node index to the index of its BN node.
    """
    alias = {}

    def resolve(i):
        return alias.get(i, i)

    readers = {i: 0 for i in range(len(graph.nodes))}
    uses = {}
    for i, node in enumerate(graph.nodes[1:], start=1):
        uses[id(node.rule)] = uses.get(id(node.rule), 0) + 1
        if isinstance(node.rule, Dropout):
            alias[i] = resolve(node.inputs[0])
            continue
        for j in node.inputs:
            readers[resolve(j)] += 1
    readers[resolve(graph.output)] += 1
    fold = {}
    for i, node in enumerate(graph.nodes[1:], start=1):
        if not isinstance(node.rule, BatchNormalization):
            continue
        j = resolve(node.inputs[0])
        prev = graph.nodes[j].rule
        if (
            folds_batch_norm(prev)
            and readers[j] == 1
            and uses[id(prev)] == 1
            and uses[id(node.rule)] == 1
        ):
            fold[j] = i
    return alias, fold


def deploy(model: keras.Model) -> keras.Model:
    """Return the inference architecture of ``model`` as a new ``vn.Model``.

    Each ``BatchNormalization`` is folded into the ``Dense``/``Conv2D`` that
    feeds it (any layer whose registry spec says ``folds_batch_norm``, when
    that layer feeds nothing else); one with nothing foldable
    before it becomes an ``ElementwiseAffine`` layer with its inference scale
    and shift. ``Dropout`` is removed. Every other layer is copied with its
    weights; composite layers (``ResidualBlock``) are expanded into their
    parts. The original model is not modified.

    Args:
        model: a built Keras model of verinet layers, or a stock Keras model
            that ``vn.convert`` can map.

    Returns:
        A functional ``vn.Model`` computing the same function as ``model`` in
        inference (to float rounding) and bounded the same way.

    Raises:
        UnsupportedLayerError: naming a layer without a bound rule.

    Example:
        >>> deployed = vn.deploy(model)
        >>> deployed.predict(x_test[:4])
    """
    from verinet.models.model import Model

    graph = bound_graph(model)
    alias, fold = _plan(graph)
    folded_bn = set(fold.values())
    names = UniqueNames()
    inputs = keras.Input(graph.input_shape, dtype=model.inputs[0].dtype)
    tensors = {0: inputs}
    for i, node in enumerate(graph.nodes[1:], start=1):
        rule = node.rule
        if i in alias or i in folded_bn:
            source = alias[i] if i in alias else node.inputs[0]
            tensors[i] = tensors[alias.get(source, source)]
            continue
        args = [tensors[alias.get(j, j)] for j in node.inputs]
        x = args if len(args) > 1 else args[0]
        if i in fold:
            bn = graph.nodes[fold[i]].rule
            config, weights = fold_batch_norm(rule, bn)
            layer = _clone(rule, names(rule.name), config)
            tensors[i] = layer(x)
            layer.set_weights(weights)
        elif isinstance(rule, BatchNormalization):
            layer = ElementwiseAffine(name=names(rule.name), dtype=rule.dtype_policy)
            tensors[i] = layer(x)
            scale, shift = bn_affine(rule)
            dtype = ops.convert_to_numpy(rule.moving_mean).dtype
            layer.set_weights([scale.astype(dtype), shift.astype(dtype)])
        elif isinstance(rule, keras.layers.Layer):
            layer = _clone(rule, names(rule.name))
            tensors[i] = layer(x)
            layer.set_weights(rule.get_weights())
        else:  # the sum closing a ResidualBlock
            tensors[i] = Add(name=names(f"{node.name}_add"))(args)
    output = tensors[alias.get(graph.output, graph.output)]
    return Model(inputs, output, name=f"{model.name}_deployed")
