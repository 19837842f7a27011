"""Keras to ONNX: the graph ``vn.export_onnx`` writes, node by node.

The graph is written from the zoo layers with ``onnx.helper``. The ONNX input
keeps the Keras layout (channels_last, e.g. ``(N, H, W, C)``) so the same
arrays feed both; convolutions and pooling run in NCHW between ``Transpose``
nodes, and consecutive transposes are never emitted. Each layer's nodes come
from the emitter its registry spec names (``verinet.onnx.emitters``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from verinet.deploy.fold import bound_graph
from verinet.errors import OnnxExportError
from verinet.layers import registry
from verinet.layers.merge import AddRule
from verinet.layers.permute import Permute
from verinet.onnx.emitters import TO_NCHW, TO_NHWC, emit_add

INPUT_NAME = "input"
OUTPUT_NAME = "output"


class _Writer:
    """Collects ONNX nodes and initializers; tracks each value's layout.

    4-D values are ``"NHWC"`` (Keras's order) or ``"NCHW"``; others are
    always in Keras's order.
    """

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.count = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, array) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs, hint: str, **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(
            helper.make_node(
                op, list(inputs), [out], name=f"{hint}/{op}_{self.count}", **attrs
            )
        )
        return out

    def layout(self, value, want: str, hint: str):
        """``value`` (a ``(name, layout)`` pair) in layout ``want``."""
        name, have = value
        if have == want or have is None:
            return name
        perm = TO_NCHW if want == "NCHW" else TO_NHWC
        return self.node("Transpose", [name], hint, perm=list(perm))


def _emitter(rule):
    """The ONNX emitter of a bound-graph node's rule, from the registry."""
    if type(rule) is AddRule:  # the sum closing a ResidualBlock
        return emit_add
    spec = registry.spec_for(rule)
    emitter = None if spec is None else spec.emitter()
    if emitter is None:
        hint = ""
        base = next(
            (c for c in type(rule).__mro__[1:] if registry.spec_for(c) is not None),
            None,
        )
        if spec is None and base is not None:
            hint = (
                f" It subclasses {base.__name__}; if it computes the same "
                f"function, register it: vn.layers.register({type(rule).__name__}, "
                f"onnx_export=vn.layers.registry.spec_for({base.__name__})"
                ".onnx_export, ...)."
            )
        raise OnnxExportError(
            f"Layer {rule.name!r} ({type(rule).__name__}) has no ONNX export rule. "
            f"Exportable verinet layers: {', '.join(registry.exportable_names())}."
            + hint
        )
    return emitter


def build_graph(deployed, opset: int) -> onnx.ModelProto:
    """The ONNX model of ``deployed`` at ``opset``, before metadata and checks.

    Raises:
        OnnxExportError: when a layer has no ONNX rule.
    """
    graph = bound_graph(deployed)
    w = _Writer(opset)
    values = {0: (INPUT_NAME, "NHWC" if len(graph.input_shape) == 3 else None)}
    shapes = {0: graph.input_shape}
    for i, node in enumerate(graph.nodes[1:], start=1):
        rule = node.rule
        ins = [values[j] for j in node.inputs]
        in_shapes = [shapes[j] for j in node.inputs]
        shapes[i] = _out_shape(rule, in_shapes)
        out, layout = _emitter(rule)(w, rule, ins, in_shapes, node.name)
        values[i] = (out, layout if len(shapes[i]) == 3 else None)
    out = w.layout(values[graph.output], "NHWC", "output")
    w.nodes.append(
        helper.make_node("Identity", [out], [OUTPUT_NAME], name="output/Identity")
    )
    onnx_graph = helper.make_graph(
        w.nodes,
        deployed.name,
        [_value_info(INPUT_NAME, graph.input_shape)],
        [_value_info(OUTPUT_NAME, shapes[graph.output])],
        w.initializers,
    )
    opset_id = helper.make_opsetid("", opset)
    return helper.make_model(
        onnx_graph,
        opset_imports=[opset_id],
        ir_version=helper.find_min_ir_version_for([opset_id]),
        producer_name="verinet",
    )


def input_layout(graph) -> str:
    """``"NHWC"`` for images, ``"NCHW"`` where the model itself permutes its
    input to channels_last (models imported from NCHW ONNX), ``"NC"`` for
    vectors."""
    rank = len(graph.input_shape)
    if rank != 3:
        return {1: "NC"}.get(rank, f"rank-{rank + 1}, channels_last")
    readers = [node.rule for node in graph.nodes[1:] if 0 in node.inputs]
    if readers and all(
        isinstance(r, Permute) and tuple(r.dims) == (2, 3, 1) for r in readers
    ):
        return "NCHW"
    return "NHWC"


def _out_shape(rule, in_shapes):
    if isinstance(rule, AddRule):
        return in_shapes[0]
    return tuple(rule.compute_output_shape((None, *in_shapes[0]))[1:])


def _value_info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])
