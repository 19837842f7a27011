"""ONNX emitters: the nodes each zoo layer becomes in ``vn.export_onnx``.

An emitter is ``emit(w, layer, inputs, shapes, hint) -> (name, layout)``:
``w`` is the graph writer (``verinet.onnx.writer``: ``w.node``, ``w.const``,
``w.layout``), ``inputs`` the layer's input values as ``(name, layout)``
pairs, ``shapes`` their shapes without the batch axis, ``hint`` a name
prefix. It returns its output's name and layout: ``"NHWC"`` (Keras's order),
``"NCHW"``, or its input's layout when it keeps it. Layers name their emitter
when they register (``onnx_export="verinet.onnx.emitters:emit_dense"``), so
the layer package never imports ONNX.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from verinet.errors import OnnxExportError
from verinet.layers._spatial import paddings

TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def _np(tensor, dtype=np.float32):
    return np.asarray(ops.convert_to_numpy(tensor), dtype=dtype)


def _pads(layer, hw, window):
    (top, bottom), (left, right) = paddings(hw, window, layer.strides, layer.padding)
    return [top, left, bottom, right]


def emit_dense(w, layer, inputs, shapes, hint):
    """``Gemm`` on vectors, ``MatMul`` + ``Add`` on the last axis of others."""
    kernel, rank = _np(layer.kernel), len(shapes[0]) + 1
    x = w.layout(inputs[0], "NHWC", hint)
    if rank == 2:
        operands = [x, w.const(f"{hint}_kernel", kernel)]
        if layer.use_bias:
            operands.append(w.const(f"{hint}_bias", _np(layer.bias)))
        return w.node("Gemm", operands, hint), "NHWC"
    out = w.node("MatMul", [x, w.const(f"{hint}_kernel", kernel)], hint)
    if layer.use_bias:
        out = w.node("Add", [out, w.const(f"{hint}_bias", _np(layer.bias))], hint)
    return out, "NHWC"


def emit_conv(w, layer, inputs, shapes, hint):
    """``Conv`` in NCHW with explicit pads."""
    x = w.layout(inputs[0], "NCHW", hint)
    kernel = np.transpose(_np(layer.kernel), (3, 2, 0, 1))
    operands = [x, w.const(f"{hint}_kernel", kernel)]
    if layer.use_bias:
        operands.append(w.const(f"{hint}_bias", _np(layer.bias)))
    out = w.node(
        "Conv",
        operands,
        hint,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.strides),
        pads=_pads(layer, shapes[0][:2], layer.kernel_size),
    )
    return out, "NCHW"


def _pool(w, layer, inputs, shapes, hint, op, **extra):
    x = w.layout(inputs[0], "NCHW", hint)
    out = w.node(
        op,
        [x],
        hint,
        kernel_shape=list(layer.pool_size),
        strides=list(layer.strides),
        pads=_pads(layer, shapes[0][:2], layer.pool_size),
        **extra,
    )
    return out, "NCHW"


def emit_average_pool(w, layer, inputs, shapes, hint):
    """``AveragePool`` in NCHW, padding not counted (as Keras averages)."""
    return _pool(w, layer, inputs, shapes, hint, "AveragePool", count_include_pad=0)


def emit_max_pool(w, layer, inputs, shapes, hint):
    """``MaxPool`` in NCHW."""
    return _pool(w, layer, inputs, shapes, hint, "MaxPool")


def emit_affine(w, layer, inputs, shapes, hint):
    """``x * scale + shift`` (``Mul``, ``Add``) with parameters laid out like
    the value; for every ``ElementwiseAffineRule`` layer."""
    rank = len(shapes[0]) + 1
    reference = ops.zeros((1,), dtype="float32")
    out, layout = inputs[0]
    for op, param in zip(("Mul", "Add"), layer.affine_params(reference), strict=True):
        array = _np(param)
        array = array.reshape((1,) * (rank - array.ndim) + array.shape)
        if layout == "NCHW":
            array = np.transpose(array, TO_NCHW)
        out = w.node(op, [out, w.const(f"{hint}_{op.lower()}", array)], hint)
    return out, layout


def emit_gelu(w, layer, inputs, shapes, hint):
    """``Gelu`` from opset 20, else the erf pattern PyTorch exporters emit."""
    x, layout = inputs[0]
    if w.opset >= 20:
        mode = "tanh" if layer.approximate else "none"
        return w.node("Gelu", [x], hint, approximate=mode), layout
    if layer.approximate:
        raise OnnxExportError(
            f"Layer {layer.name!r}: the tanh-approximate GeLU needs opset >= 20 "
            f"(the ONNX Gelu operator); got opset={w.opset}."
        )
    # 0.5 * x * (1 + erf(x / sqrt(2)))
    scaled = w.node(
        "Div", [x, w.const(f"{hint}_sqrt2", np.float32(np.sqrt(2.0)))], hint
    )
    erf = w.node("Erf", [scaled], hint)
    one = w.node("Add", [erf, w.const(f"{hint}_one", np.float32(1.0))], hint)
    prod = w.node("Mul", [x, one], hint)
    half = w.node("Mul", [prod, w.const(f"{hint}_half", np.float32(0.5))], hint)
    return half, layout


def activation(op: str, **attrs):
    """The emitter of an elementwise op with fixed attributes.

    Args:
        op: the ONNX op type (``"Relu"``).
        **attrs: its attributes.

    Returns:
        An emitter that keeps its input's layout.

    Example:
        >>> emit_relu = activation("Relu")
    """

    def emit(w, layer, inputs, shapes, hint):
        x, layout = inputs[0]
        return w.node(op, [x], hint, **attrs), layout

    return emit


emit_relu = activation("Relu")
emit_sigmoid = activation("Sigmoid")
emit_tanh = activation("Tanh")


def emit_leaky_relu(w, layer, inputs, shapes, hint):
    """``LeakyRelu`` with the layer's slope."""
    x, layout = inputs[0]
    alpha = float(layer.negative_slope)
    return w.node("LeakyRelu", [x], hint, alpha=alpha), layout


def emit_identity(w, layer, inputs, shapes, hint):
    """No node: the value passes through (dropout at inference)."""
    return inputs[0]


def emit_add(w, layer, inputs, shapes, hint):
    """A chain of ``Add`` nodes, in the inputs' common layout (else NHWC)."""
    layouts = {layout for _, layout in inputs}
    layout = layouts.pop() if len(layouts) == 1 else "NHWC"
    names = [w.layout(v, layout, hint) for v in inputs]
    out = names[0]
    for other in names[1:]:
        out = w.node("Add", [out, other], hint)
    return out, layout


def emit_flatten(w, layer, inputs, shapes, hint):
    """``Flatten`` in Keras's (channels_last) order."""
    return w.node("Flatten", [w.layout(inputs[0], "NHWC", hint)], hint, axis=1), "NHWC"


def emit_reshape(w, layer, inputs, shapes, hint):
    """``Reshape`` in Keras's order, the batch axis kept (``0``)."""
    target = np.asarray([0, *layer.target_shape], dtype=np.int64)
    x = w.layout(inputs[0], "NHWC", hint)
    return w.node("Reshape", [x, w.const(f"{hint}_shape", target)], hint), "NHWC"


def emit_permute(w, layer, inputs, shapes, hint):
    """``Transpose``; an NHWC <-> NCHW permutation only relabels the layout."""
    name, layout = inputs[0]
    if layout is not None:
        swap = {((2, 3, 1), "NHWC"): "NCHW", ((3, 1, 2), "NCHW"): "NHWC"}
        relabel = swap.get((tuple(layer.dims), layout))
        if relabel is not None:
            return name, relabel
    x = w.layout(inputs[0], "NHWC", hint)
    return w.node("Transpose", [x], hint, perm=[0, *layer.dims]), "NHWC"


def emit_zero_pad(w, layer, inputs, shapes, hint):
    """``Pad`` with zeros on the two spatial axes, in the input's layout."""
    (top, bottom), (left, right) = layer.padding
    name, layout = inputs[0]
    if layout == "NCHW":
        pads = [0, 0, top, left, 0, 0, bottom, right]
    else:
        pads = [0, top, left, 0, 0, bottom, right, 0]
    pads_name = w.const(f"{hint}_pads", np.asarray(pads, np.int64))
    return w.node("Pad", [name, pads_name], hint), layout
