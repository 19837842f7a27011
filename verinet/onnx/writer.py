"""Keras to ONNX: the graph ``vn.export_onnx`` writes, node by node.

The graph is written from the zoo layers with ``onnx.helper``. The ONNX input
keeps the Keras layout (channels_last, e.g. ``(N, H, W, C)``) so the same
arrays feed both; convolutions and pooling run in NCHW between ``Transpose``
nodes, and consecutive transposes are never emitted.
"""

from __future__ import annotations

import numpy as np
import onnx
from keras import ops
from onnx import TensorProto, helper, numpy_helper

from verinet.deploy.fold import bound_graph
from verinet.errors import OnnxExportError
from verinet.layers._spatial import paddings
from verinet.layers.base import IdentityRule
from verinet.layers.conv import Conv2D
from verinet.layers.dense import Dense
from verinet.layers.elementwise_affine import ElementwiseAffineRule
from verinet.layers.merge import AddRule
from verinet.layers.padding import ZeroPadding2D
from verinet.layers.permute import Permute
from verinet.layers.pooling import AveragePooling2D, MaxPooling2D
from verinet.layers.relu import LeakyReLU, ReLU
from verinet.layers.reshaping import Flatten, Reshape
from verinet.layers.smooth import GeLU, Sigmoid, Tanh

INPUT_NAME = "input"
OUTPUT_NAME = "output"

_TO_NCHW = (0, 3, 1, 2)
_TO_NHWC = (0, 2, 3, 1)


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
        perm = _TO_NCHW if want == "NCHW" else _TO_NHWC
        return self.node("Transpose", [name], hint, perm=list(perm))


def _np(tensor, dtype=np.float32):
    return np.asarray(ops.convert_to_numpy(tensor), dtype=dtype)


def _pads(layer, hw, window):
    (top, bottom), (left, right) = paddings(hw, window, layer.strides, layer.padding)
    return [top, left, bottom, right]


def _dense(w, layer, value, shape, hint):
    kernel, rank = _np(layer.kernel), len(shape) + 1
    x = w.layout(value, "NHWC", hint)
    if rank == 2:
        inputs = [x, w.const(f"{hint}_kernel", kernel)]
        if layer.use_bias:
            inputs.append(w.const(f"{hint}_bias", _np(layer.bias)))
        return w.node("Gemm", inputs, hint)
    out = w.node("MatMul", [x, w.const(f"{hint}_kernel", kernel)], hint)
    if layer.use_bias:
        out = w.node("Add", [out, w.const(f"{hint}_bias", _np(layer.bias))], hint)
    return out


def _conv(w, layer, value, shape, hint):
    x = w.layout(value, "NCHW", hint)
    kernel = np.transpose(_np(layer.kernel), (3, 2, 0, 1))
    inputs = [x, w.const(f"{hint}_kernel", kernel)]
    if layer.use_bias:
        inputs.append(w.const(f"{hint}_bias", _np(layer.bias)))
    return w.node(
        "Conv",
        inputs,
        hint,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.strides),
        pads=_pads(layer, shape[:2], layer.kernel_size),
    )


def _pool(w, layer, value, shape, hint):
    x = w.layout(value, "NCHW", hint)
    attrs = dict(
        kernel_shape=list(layer.pool_size),
        strides=list(layer.strides),
        pads=_pads(layer, shape[:2], layer.pool_size),
    )
    if isinstance(layer, AveragePooling2D):
        return w.node("AveragePool", [x], hint, count_include_pad=0, **attrs)
    return w.node("MaxPool", [x], hint, **attrs)


def _affine(w, layer, value, shape, hint):
    """``x * scale + shift`` with parameters laid out like the value."""
    rank = len(shape) + 1
    reference = ops.zeros((1,), dtype="float32")
    name, layout = value
    out = name
    for op, param in zip(("Mul", "Add"), layer.affine_params(reference), strict=True):
        array = _np(param)
        array = array.reshape((1,) * (rank - array.ndim) + array.shape)
        if layout == "NCHW":
            array = np.transpose(array, _TO_NCHW)
        out = w.node(op, [out, w.const(f"{hint}_{op.lower()}", array)], hint)
    return out


def _gelu(w, layer, value, shape, hint):
    x = value[0]
    if w.opset >= 20:
        mode = "tanh" if layer.approximate else "none"
        return w.node("Gelu", [x], hint, approximate=mode)
    if layer.approximate:
        raise OnnxExportError(
            f"Layer {layer.name!r}: the tanh-approximate GeLU needs opset >= 20 "
            f"(the ONNX Gelu operator); got opset={w.opset}."
        )
    # 0.5 * x * (1 + erf(x / sqrt(2))), the pattern PyTorch exporters emit.
    scaled = w.node(
        "Div", [x, w.const(f"{hint}_sqrt2", np.float32(np.sqrt(2.0)))], hint
    )
    erf = w.node("Erf", [scaled], hint)
    one = w.node("Add", [erf, w.const(f"{hint}_one", np.float32(1.0))], hint)
    prod = w.node("Mul", [x, one], hint)
    return w.node("Mul", [prod, w.const(f"{hint}_half", np.float32(0.5))], hint)


def _activation(op, **attrs):
    def emit(w, layer, value, shape, hint):
        return w.node(op, [value[0]], hint, **attrs)

    return emit


def _flatten(w, layer, value, shape, hint):
    return w.node("Flatten", [w.layout(value, "NHWC", hint)], hint, axis=1)


def _reshape(w, layer, value, shape, hint):
    target = np.asarray([0, *layer.target_shape], dtype=np.int64)
    x = w.layout(value, "NHWC", hint)
    return w.node("Reshape", [x, w.const(f"{hint}_shape", target)], hint)


def _permute(w, layer, value, shape, hint):
    x = w.layout(value, "NHWC", hint)
    return w.node("Transpose", [x], hint, perm=[0, *layer.dims])


def _zero_pad(w, layer, value, shape, hint):
    (top, bottom), (left, right) = layer.padding
    name, layout = value
    if layout == "NCHW":
        pads = [0, 0, top, left, 0, 0, bottom, right]
    else:
        pads = [0, top, left, 0, 0, bottom, right, 0]
    return w.node(
        "Pad", [name, w.const(f"{hint}_pads", np.asarray(pads, np.int64))], hint
    )


# (layer class, emitter, output layout: "same" keeps the input's, else fixed).
_EMITTERS = (
    (Dense, _dense, "NHWC"),
    (Conv2D, _conv, "NCHW"),
    (AveragePooling2D, _pool, "NCHW"),
    (MaxPooling2D, _pool, "NCHW"),
    (ElementwiseAffineRule, _affine, "same"),
    (ReLU, _activation("Relu"), "same"),
    (Sigmoid, _activation("Sigmoid"), "same"),
    (Tanh, _activation("Tanh"), "same"),
    (GeLU, _gelu, "same"),
    (Flatten, _flatten, "NHWC"),
    (Reshape, _reshape, "NHWC"),
    (Permute, _permute, "NHWC"),
    (ZeroPadding2D, _zero_pad, "same"),
)


def _emit(w, layer, value, shape, hint):
    if isinstance(layer, Permute) and value[1] is not None:
        # NHWC <-> NCHW permutes only relabel the layout: no node needed.
        swap = {((2, 3, 1), "NHWC"): "NCHW", ((3, 1, 2), "NCHW"): "NHWC"}
        relabel = swap.get((tuple(layer.dims), value[1]))
        if relabel is not None:
            return value[0], relabel
    if isinstance(layer, LeakyReLU):
        alpha = float(layer.negative_slope)
        return w.node("LeakyRelu", [value[0]], hint, alpha=alpha), value[1]
    for cls, emitter, layout in _EMITTERS:
        if isinstance(layer, cls):
            out = emitter(w, layer, value, shape, hint)
            return out, value[1] if layout == "same" else layout
    supported = sorted(
        {cls.__name__ for cls, _, _ in _EMITTERS} | {"LeakyReLU", "Add", "Dropout"}
    )
    raise OnnxExportError(
        f"Layer {layer.name!r} ({type(layer).__name__}) has no ONNX export rule. "
        f"Exportable verinet layers: {', '.join(supported)}."
    )


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
        rule, hint = node.rule, node.name
        ins = [values[j] for j in node.inputs]
        shapes[i] = _out_shape(rule, [shapes[j] for j in node.inputs])
        if isinstance(rule, AddRule):
            layouts = {layout for _, layout in ins}
            layout = layouts.pop() if len(layouts) == 1 else "NHWC"
            names = [w.layout(v, layout, hint) for v in ins]
            out = names[0]
            for other in names[1:]:
                out = w.node("Add", [out, other], hint)
        elif isinstance(rule, IdentityRule):
            out, layout = ins[0]
        else:
            out, layout = _emit(w, rule, ins[0], shapes[node.inputs[0]], hint)
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
