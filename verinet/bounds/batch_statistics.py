"""Bounds in training mode: batch norm with the clean batch's statistics.

During robust training the clean forward pass normalizes with the batch's
own mean and variance; the bounds must describe that same function
(as CROWN-IBP does), so each BatchNormalization node is replaced by the
affine map of the clean batch's statistics at that node.
"""

from __future__ import annotations

import copy

from keras import ops

from verinet.bounds.graph import Node
from verinet.layers.batch_norm import BatchNormalization
from verinet.layers.elementwise_affine import ElementwiseAffineRule


class BatchAffine(ElementwiseAffineRule):
    """``y = x * scale + shift`` with per-channel tensors fixed for one batch."""

    def __init__(self, scale, shift):
        self.scale, self.shift = scale, shift

    def affine_params(self, reference):
        return ops.cast(self.scale, reference.dtype), ops.cast(
            self.shift, reference.dtype
        )


def _batch_affine(layer, values):
    axes = tuple(range(len(values.shape) - 1))
    mean = ops.mean(values, axis=axes)
    variance = ops.var(values, axis=axes)
    return BatchAffine(*layer.affine_for_statistics(mean, variance, values))


def with_batch_statistics(graph, x):
    """A copy of ``graph`` whose batch norms use the statistics of batch ``x``.

    Returns ``graph`` itself when it has no batch normalization.
    """
    if not any(isinstance(n.rule, BatchNormalization) for n in graph.nodes):
        return graph
    values = [x]
    nodes = list(graph.nodes)
    for i, node in enumerate(graph.nodes[1:], start=1):
        inputs = [values[j] for j in node.inputs]
        rule = node.rule
        if isinstance(rule, BatchNormalization):
            rule = _batch_affine(rule, inputs[0])
            nodes[i] = Node(rule, node.inputs, node.name)
        values.append(rule.bound_interval([(v, v) for v in inputs])[0])
    new = copy.copy(graph)
    new.nodes = nodes
    return new
