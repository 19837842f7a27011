"""2-D window ops for ``vn.from_onnx``: Conv, pooling and zero padding.

They take data in ONNX's ``(N, C, H, W)`` layout and run channels_last on a
permuted view (``NCHW_AS_NHWC``); explicit ONNX pads become Keras
``"same"``/``"valid"`` padding or a ``ZeroPadding2D`` layer in front. The
handlers share the signature of ``verinet.onnx.handlers``.
"""

from __future__ import annotations

import numpy as np

from verinet.layers import (
    AveragePooling2D,
    Conv2D,
    MaxPooling2D,
    ZeroPadding2D,
)
from verinet.layers._spatial import same_padding
from verinet.onnx.constants import const_input
from verinet.onnx.values import NCHW_AS_NHWC, Sym


def _spatial_pads(imp, attrs, hw, window, strides):
    """Explicit ``((top, bottom), (left, right))`` pads of a 2-D window op."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [same_padding(hw[i], window[i], strides[i]) for i in range(2)]
        if auto == "SAME_LOWER":
            pads = [(after, before) for before, after in pads]
        return tuple(pads)
    if auto == "VALID":
        return ((0, 0), (0, 0))
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    return ((p[0], p[2]), (p[1], p[3]))


def _check_2d(imp, sym, attrs):
    if not isinstance(sym, Sym) or sym.rank != 4:
        raise imp.unsupported(" on data other than 4-D (N, C, H, W)")
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise imp.unsupported(" with dilations")


def _padding_mode(pads, hw, window, strides):
    """``(padding, needs_zero_pad)``: Keras's padding argument for ``pads``."""
    if pads == ((0, 0), (0, 0)):
        return "valid", False
    same = tuple(same_padding(hw[i], window[i], strides[i]) for i in range(2))
    if pads == same:
        return "same", False
    return "valid", True


def _conv(imp, node, ins, attrs):
    x = ins[0]
    _check_2d(imp, x, attrs)
    w = np.asarray(const_input(imp, ins[1], "weights"), dtype=np.float64)
    bias = None if len(ins) < 3 or ins[2] is None else const_input(imp, ins[2], "bias")
    if attrs.get("group", 1) != 1:
        raise imp.unsupported(f" with group={attrs['group']}")
    if w.shape[1] != x.shape[1]:
        raise imp.fail(f"weights {w.shape} do not match {x.shape[1]} input channels.")
    window, strides = tuple(w.shape[2:]), tuple(attrs.get("strides", [1, 1]))
    hw = x.shape[2:]
    pads = _spatial_pads(imp, attrs, hw, window, strides)
    x = imp.to_perm(x, NCHW_AS_NHWC)
    padding, zero_pad = _padding_mode(pads, hw, window, strides)
    if padding == "same" and strides != (1, 1):
        padding, zero_pad = "valid", True
    if zero_pad:
        x = imp.apply(imp.layer(ZeroPadding2D, pads, suffix="_pad"), x)
    layer = imp.layer(Conv2D, w.shape[0], window, strides=strides, padding=padding)
    kernel = np.transpose(w, (2, 3, 1, 0))
    bias = np.zeros(w.shape[0]) if bias is None else bias
    return [imp.apply(layer, x, NCHW_AS_NHWC, weights=[kernel, bias])]


def _pool(imp, node, ins, attrs):
    x = ins[0]
    _check_2d(imp, x, attrs)
    if len(node.output) > 1 and node.output[1]:
        raise imp.unsupported(" with its indices output used")
    window = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", [1, 1]))
    hw = x.shape[2:]
    pads = _spatial_pads(imp, attrs, hw, window, strides)
    if attrs.get("ceil_mode", 0):
        for i in range(2):
            span = hw[i] + sum(pads[i]) - window[i]
            if span % strides[i]:
                raise imp.unsupported(" with ceil_mode=1 changing the output size")
    x = imp.to_perm(x, NCHW_AS_NHWC)
    padding, zero_pad = _padding_mode(pads, hw, window, strides)
    average = node.op_type == "AveragePool"
    if zero_pad or (padding == "same" and average and attrs.get("count_include_pad")):
        if not (average and attrs.get("count_include_pad", 0)):
            raise imp.unsupported(
                f" with pads {pads} (only none, Keras 'same' pads, or "
                "AveragePool with count_include_pad=1)"
            )
        x = imp.apply(imp.layer(ZeroPadding2D, pads, suffix="_pad"), x)
        padding = "valid"
    cls = AveragePooling2D if average else MaxPooling2D
    layer = imp.layer(cls, window, strides=strides, padding=padding)
    return [imp.apply(layer, x)]


def _global_average_pool(imp, node, ins, attrs):
    x = ins[0]
    _check_2d(imp, x, attrs)
    hw = tuple(x.shape[2:])
    x = imp.to_perm(x, NCHW_AS_NHWC)
    return [imp.apply(imp.layer(AveragePooling2D, hw, strides=hw), x)]


def _pad(imp, node, ins, attrs):
    x = ins[0]
    if not isinstance(x, Sym):
        raise imp.unsupported(" on a constant")
    if attrs.get("mode", "constant") != "constant":
        raise imp.unsupported(f" with mode={attrs['mode']!r}")
    if imp.opset < 11:
        pads, value = attrs["pads"], attrs.get("value", 0.0)
    else:
        pads = np.ravel(const_input(imp, ins[1], "pads")).tolist()
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            value = float(np.ravel(const_input(imp, ins[2], "value"))[0])
        if len(ins) > 3 and ins[3] is not None:
            raise imp.unsupported(" with an axes input")
    per_axis = [(int(pads[a]), int(pads[a + x.rank])) for a in range(x.rank)]
    padded = {a for a, p in enumerate(per_axis) if any(p)}
    if not padded:
        return [x]
    refuse = " other than zero padding of two spatial axes of 4-D data"
    if value != 0.0 or min(pads) < 0 or x.rank != 4 or 0 in padded:
        raise imp.unsupported(refuse)
    if not {k for k, a in enumerate(x.perm) if a in padded} <= {1, 2}:
        if padded <= {2, 3}:  # (N, C, H, W)
            x = imp.to_perm(x, NCHW_AS_NHWC)
        elif padded <= {1, 2}:  # (N, H, W, C)
            x = imp.ordered(x)
        else:
            raise imp.unsupported(refuse)
    layer = imp.layer(ZeroPadding2D, (per_axis[x.perm[1]], per_axis[x.perm[2]]))
    return [imp.apply(layer, x)]


#: The 2-D window and padding op types (part of ``handlers.HANDLERS``).
SPATIAL_HANDLERS = {
    "AveragePool": _pool,
    "Conv": _conv,
    "GlobalAveragePool": _global_average_pool,
    "MaxPool": _pool,
    "Pad": _pad,
}
