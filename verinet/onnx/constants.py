"""Constant folding for ``vn.from_onnx``: ONNX ops evaluated with numpy.

Weights and the shape arithmetic exporters emit (``Shape``, ``Gather``,
``Unsqueeze``, ``Concat``...) depend only on initializers, so they are
evaluated at import time and never become layers. ``CONSTANT_HANDLERS``
holds the op types that only ever fold; the ``fold_*`` functions are the
constant branches of the op types that otherwise build layers
(``verinet.onnx.handlers``). A handler takes ``(importer, node, inputs,
attributes)`` and returns the node's output values.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from verinet.onnx.values import BATCH, Sym


def const_input(imp, value, what="this input"):
    """``value``, which must be a constant (refused if data-dependent)."""
    if isinstance(value, Sym):
        raise imp.unsupported(f" with data-dependent {what}")
    return value


def all_const(values) -> bool:
    """Whether every given input is a constant (a missing one counts)."""
    return all(not isinstance(v, Sym) for v in values if v is not None)


def _constant(imp, node, ins, attrs):
    if "value" in attrs:
        return [numpy_helper.to_array(attrs["value"])]
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return [np.asarray(attrs[key], dtype=dtype)]
    raise imp.unsupported(f" with attributes {sorted(attrs)}")


def _shape(imp, node, ins, attrs):
    value = ins[0]
    if isinstance(value, Sym):
        shape = [BATCH if d is None else d for d in value.shape]
    else:
        shape = list(np.shape(value))
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return [np.asarray(shape[start:end], dtype=np.int64)]


def _gather(imp, node, ins, attrs):
    data = const_input(imp, ins[0], "data")
    indices = const_input(imp, ins[1], "indices")
    return [np.take(data, indices, axis=attrs.get("axis", 0))]


def _axes(imp, node, ins, attrs):
    if len(ins) > 1 and ins[1] is not None:
        return [int(a) for a in np.ravel(const_input(imp, ins[1], "axes"))]
    return list(attrs.get("axes", []))


def _unsqueeze(imp, node, ins, attrs):
    data = np.asarray(const_input(imp, ins[0], "data"))
    axes = _axes(imp, node, ins, attrs)
    rank = data.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        data = np.expand_dims(data, axis)
    return [data]


def _squeeze(imp, node, ins, attrs):
    data = np.asarray(const_input(imp, ins[0], "data"))
    axes = _axes(imp, node, ins, attrs)
    if not axes:
        return [np.squeeze(data)]
    return [np.squeeze(data, axis=tuple(a % data.ndim for a in axes))]


def _concat(imp, node, ins, attrs):
    parts = [np.asarray(const_input(imp, v, "inputs")) for v in ins if v is not None]
    return [np.concatenate(parts, axis=attrs["axis"])]


def _slice(imp, node, ins, attrs):
    data = np.asarray(const_input(imp, ins[0], "data"))
    if imp.opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends = (np.ravel(const_input(imp, v, "bounds")) for v in ins[1:3])
        axes = None if len(ins) < 4 or ins[3] is None else np.ravel(ins[3])
        steps = None if len(ins) < 5 or ins[4] is None else np.ravel(ins[4])
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * data.ndim
    for s, e, a, k in zip(starts, ends, axes, steps, strict=True):
        index[int(a)] = slice(int(s), int(e), int(k))
    return [data[tuple(index)]]


def _constant_of_shape(imp, node, ins, attrs):
    shape = np.ravel(const_input(imp, ins[0], "shape")).astype(np.int64)
    fill = attrs.get("value")
    fill = np.zeros(1, np.float32) if fill is None else numpy_helper.to_array(fill)
    return [np.full(tuple(shape), fill.ravel()[0], dtype=fill.dtype)]


#: Op types evaluated only on constants (``Shape`` also reads the fixed shape
#: of data-dependent values).
CONSTANT_HANDLERS = {
    "Concat": _concat,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Gather": _gather,
    "Shape": _shape,
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
}


def fold_cast(value, target) -> np.ndarray:
    """A constant ``Cast`` to the numpy dtype ``target``."""
    return np.asarray(value).astype(target)


def _onnx_reshape_target(shape, data_shape, allowzero):
    target = [int(d) for d in shape]
    if not allowzero:
        target = [data_shape[i] if d == 0 else d for i, d in enumerate(target)]
    return target


def fold_reshape(data, shape, allowzero) -> np.ndarray:
    """A constant ``Reshape`` (a ``0`` copies the axis unless ``allowzero``)."""
    data = np.asarray(data)
    return data.reshape(_onnx_reshape_target(shape, data.shape, allowzero))


def fold_flatten(data, axis) -> np.ndarray:
    """A constant ``Flatten`` to 2-D at ``axis``."""
    data = np.asarray(data)
    axis %= max(data.ndim, 1)
    return data.reshape(int(np.prod(data.shape[:axis])), -1)


def fold_transpose(data, perm) -> np.ndarray:
    """A constant ``Transpose`` (``perm=None`` reverses the axes)."""
    return np.transpose(np.asarray(data), perm)


_NUMPY_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
}


def fold_binary(op: str, a, b) -> np.ndarray:
    """A constant ``Add``, ``Sub``, ``Mul`` or ``Div`` (integer ``Div`` truncates)."""
    a, b = np.asarray(a), np.asarray(b)
    if op == "Div":
        if np.issubdtype(a.dtype, np.integer):
            return np.trunc(a / b).astype(a.dtype)
        return a / b
    return _NUMPY_BINARY[op](a, b)


def fold_matmul(a, b) -> np.ndarray:
    """A constant ``MatMul``."""
    return np.matmul(a, b)
