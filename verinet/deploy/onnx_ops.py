"""ONNX operators for ``vn.from_onnx``: one handler per op type.

A handler takes ``(importer, node, inputs, attributes)`` and returns the
node's output values: numpy arrays when every input is constant (folded),
else ``Sym`` values built from bound-aware layers.
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from verinet.deploy.onnx_values import BATCH, NCHW_AS_NHWC, Sym, identity
from verinet.layers import (
    Add,
    AveragePooling2D,
    Conv2D,
    Dense,
    Flatten,
    GeLU,
    LeakyReLU,
    MaxPooling2D,
    ReLU,
    Reshape,
    Sigmoid,
    Tanh,
    ZeroPadding2D,
)
from verinet.layers._spatial import same_padding


def _const(imp, value, what="this input"):
    if isinstance(value, Sym):
        raise imp.unsupported(f" with data-dependent {what}")
    return value


def _all_const(values) -> bool:
    return all(not isinstance(v, Sym) for v in values if v is not None)


def _identity_op(imp, node, ins, attrs):
    return [ins[0]]


def _dropout(imp, node, ins, attrs):
    if len(node.output) > 1 and node.output[1]:
        raise imp.unsupported(" with its mask output used")
    return [ins[0]]


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


def _cast(imp, node, ins, attrs):
    target = helper.tensor_dtype_to_np_dtype(attrs["to"])
    if not isinstance(ins[0], Sym):
        return [np.asarray(ins[0]).astype(target)]
    if target != np.float32:
        raise imp.unsupported(f" casting the data to {target}")
    return [ins[0]]


def _shape(imp, node, ins, attrs):
    value = ins[0]
    if isinstance(value, Sym):
        shape = [BATCH if d is None else d for d in value.shape]
    else:
        shape = list(np.shape(value))
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return [np.asarray(shape[start:end], dtype=np.int64)]


def _gather(imp, node, ins, attrs):
    data = _const(imp, ins[0], "data")
    indices = _const(imp, ins[1], "indices")
    return [np.take(data, indices, axis=attrs.get("axis", 0))]


def _axes(imp, node, ins, attrs):
    if len(ins) > 1 and ins[1] is not None:
        return [int(a) for a in np.ravel(_const(imp, ins[1], "axes"))]
    return list(attrs.get("axes", []))


def _unsqueeze(imp, node, ins, attrs):
    data = np.asarray(_const(imp, ins[0], "data"))
    axes = _axes(imp, node, ins, attrs)
    rank = data.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        data = np.expand_dims(data, axis)
    return [data]


def _squeeze(imp, node, ins, attrs):
    data = np.asarray(_const(imp, ins[0], "data"))
    axes = _axes(imp, node, ins, attrs)
    if not axes:
        return [np.squeeze(data)]
    return [np.squeeze(data, axis=tuple(a % data.ndim for a in axes))]


def _concat(imp, node, ins, attrs):
    parts = [np.asarray(_const(imp, v, "inputs")) for v in ins if v is not None]
    return [np.concatenate(parts, axis=attrs["axis"])]


def _slice(imp, node, ins, attrs):
    data = np.asarray(_const(imp, ins[0], "data"))
    if imp.opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends = (np.ravel(_const(imp, v, "bounds")) for v in ins[1:3])
        axes = None if len(ins) < 4 or ins[3] is None else np.ravel(ins[3])
        steps = None if len(ins) < 5 or ins[4] is None else np.ravel(ins[4])
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * data.ndim
    for s, e, a, k in zip(starts, ends, axes, steps, strict=True):
        index[int(a)] = slice(int(s), int(e), int(k))
    return [data[tuple(index)]]


def _constant_of_shape(imp, node, ins, attrs):
    shape = np.ravel(_const(imp, ins[0], "shape")).astype(np.int64)
    fill = attrs.get("value")
    fill = np.zeros(1, np.float32) if fill is None else numpy_helper.to_array(fill)
    return [np.full(tuple(shape), fill.ravel()[0], dtype=fill.dtype)]


def _onnx_reshape_target(shape, data_shape, allowzero):
    target = [int(d) for d in shape]
    if not allowzero:
        target = [data_shape[i] if d == 0 else d for i, d in enumerate(target)]
    return target


def _reshape(imp, node, ins, attrs):
    data, shape = ins[0], np.ravel(_const(imp, ins[1], "target shape"))
    allowzero = attrs.get("allowzero", 0)
    if not isinstance(data, Sym):
        data = np.asarray(data)
        return [data.reshape(_onnx_reshape_target(shape, data.shape, allowzero))]
    if len(shape) == 0:
        raise imp.fail("reshaping the data to a scalar drops the batch axis.")
    batch = int(shape[0])
    if not (
        batch in (BATCH, -1)
        or (batch == 0 and not allowzero)
        or (imp.static_batch is not None and batch == imp.static_batch)
    ):
        raise imp.fail(
            f"the target shape {shape.tolist()} does not keep the batch axis first."
        )
    sample = data.shape[1:]
    rest = [int(d) for d in shape[1:]]
    rest = [
        sample[i] if d == 0 and not allowzero and i < len(sample) else d
        for i, d in enumerate(rest)
    ]
    if any(d < -1 or d == 0 for d in rest) or rest.count(-1) > 1:
        raise imp.fail(
            f"the target shape {shape.tolist()} is not a fixed per-sample shape."
        )
    size = int(np.prod(sample))
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        if known == 0 or size % known:
            raise imp.fail(f"cannot reshape {data.shape} to {shape.tolist()}.")
        rest[rest.index(-1)] = size // known
    if int(np.prod(rest)) != size:
        raise imp.fail(f"cannot reshape {data.shape} to {shape.tolist()}.")
    data = imp.ordered(data)
    if tuple(rest) == tuple(sample):
        return [data]
    layer = imp.layer(Flatten) if len(rest) == 1 else imp.layer(Reshape, tuple(rest))
    return [imp.apply(layer, data, identity(len(rest) + 1))]


def _flatten(imp, node, ins, attrs):
    data, axis = ins[0], attrs.get("axis", 1)
    if not isinstance(data, Sym):
        data = np.asarray(data)
        axis %= max(data.ndim, 1)
        return [data.reshape(int(np.prod(data.shape[:axis])), -1)]
    if axis % data.rank != 1:
        raise imp.fail(f"only axis=1 keeps the batch axis (got axis={axis}).")
    if data.rank == 2:
        return [data]
    data = imp.ordered(data)
    return [imp.apply(imp.layer(Flatten), data, (0, 1))]


def _transpose(imp, node, ins, attrs):
    data = ins[0]
    if not isinstance(data, Sym):
        data = np.asarray(data)
        return [np.transpose(data, attrs.get("perm"))]
    perm = list(attrs.get("perm", reversed(range(data.rank))))
    if perm[0] != 0:
        raise imp.fail(
            f"perm={perm} moves the batch axis; only layout changes are supported."
        )
    inverse = [0] * data.rank
    for i, p in enumerate(perm):
        inverse[p] = i
    new_perm = tuple(inverse[axis] for axis in data.perm)
    return [Sym(data.tensor, new_perm, data.pending)]


_NUMPY_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
}


def _binary(imp, node, ins, attrs):
    a, b = ins
    op = node.op_type
    if _all_const(ins):
        a, b = np.asarray(a), np.asarray(b)
        if op == "Div":
            if np.issubdtype(a.dtype, np.integer):
                return [np.trunc(a / b).astype(a.dtype)]
            return [a / b]
        return [_NUMPY_BINARY[op](a, b)]
    if isinstance(a, Sym) and isinstance(b, Sym):
        if op not in ("Add", "Sub"):
            raise imp.unsupported(" of two data-dependent tensors")
        a, b = imp.data(a), imp.data(imp.to_perm(b, a.perm))
        if a.shape != b.shape:
            raise imp.fail(f"adding shapes {a.shape} and {b.shape} would broadcast.")
        if op == "Sub":
            b = imp.data(imp.affine(b, -1.0, 0.0))
        layer = imp.layer(Add)
        return [Sym(layer([a.tensor, b.tensor]), a.perm)]
    sym_first = isinstance(a, Sym)
    sym, c = (a, b) if sym_first else (b, a)
    source = node.input[0 if sym_first else 1]
    c = np.asarray(c, dtype=np.float64)
    if op == "Add":
        return [imp.affine(sym, 1.0, c, source)]
    if op == "Sub":
        scale, shift = (1.0, -c) if sym_first else (-1.0, c)
        return [imp.affine(sym, scale, shift, source)]
    if op == "Mul":
        return [imp.affine(sym, c, 0.0, source)]
    if not sym_first:
        raise imp.unsupported(" dividing a constant by the data")
    if np.any(c == 0):
        raise imp.fail("division by a constant that holds zeros.")
    return [imp.affine(sym, 1.0 / c, 0.0, source)]


def _dense(imp, sym, kernel, bias):
    kernel = np.asarray(kernel, dtype=np.float64)
    units = kernel.shape[1]
    if sym.shape[-1] != kernel.shape[0]:
        raise imp.fail(
            f"the data's last axis ({sym.shape[-1]}) does not match the weight "
            f"matrix {kernel.shape}."
        )
    sym = imp.ordered(sym)
    # Always with a bias, so that a following Add can be folded into it.
    layer = imp.layer(Dense, units)
    bias = np.zeros(units) if bias is None else bias
    return imp.apply(layer, sym, weights=[kernel, bias])


def _matmul(imp, node, ins, attrs):
    a, b = ins
    if _all_const(ins):
        return [np.matmul(a, b)]
    if not isinstance(a, Sym) or isinstance(b, Sym):
        raise imp.unsupported(" other than data @ constant matrix")
    if np.ndim(b) != 2:
        raise imp.fail(f"the constant operand has shape {np.shape(b)}; need 2-D.")
    return [_dense(imp, a, b, None)]


def _gemm(imp, node, ins, attrs):
    a, b = ins[0], np.asarray(_const(imp, ins[1], "B"), dtype=np.float64)
    c = ins[2] if len(ins) > 2 else None
    if not isinstance(a, Sym) or a.rank != 2 or attrs.get("transA", 0):
        raise imp.unsupported(
            " other than (batch, features) data @ constant, A untransposed"
        )
    kernel = attrs.get("alpha", 1.0) * (b.T if attrs.get("transB", 0) else b)
    bias = None
    if c is not None:
        c = np.asarray(_const(imp, c, "C"), dtype=np.float64) * attrs.get("beta", 1.0)
        if c.ndim == 2 and c.shape[0] != 1:
            raise imp.fail(f"a per-row bias C of shape {c.shape} is not supported.")
        bias = np.broadcast_to(c.reshape(-1) if c.ndim else c, (kernel.shape[1],))
    return [_dense(imp, a, kernel, bias)]


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
    w = np.asarray(_const(imp, ins[1], "weights"), dtype=np.float64)
    bias = None if len(ins) < 3 or ins[2] is None else _const(imp, ins[2], "bias")
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


def _batch_norm(imp, node, ins, attrs):
    x = ins[0]
    if not isinstance(x, Sym) or x.rank < 2:
        raise imp.unsupported(" on constant or 1-D data")
    if attrs.get("training_mode", 0) or any(node.output[1:]):
        raise imp.unsupported(" in training mode")
    scale, bias, mean, var = (
        np.asarray(_const(imp, v, "statistics"), dtype=np.float64) for v in ins[1:5]
    )
    factor = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
    shift = bias - mean * factor
    shape = (1, -1) + (1,) * (x.rank - 2)
    return [imp.affine(x, factor.reshape(shape), shift.reshape(shape), node.input[0])]


def _activation(cls, **fixed):
    def handler(imp, node, ins, attrs):
        x = ins[0]
        if not isinstance(x, Sym):
            raise imp.unsupported(" on a constant")
        kwargs = {key: read(attrs) for key, read in fixed.items()}
        return [imp.apply(imp.layer(cls, **kwargs), x)]

    return handler


def _leaky_relu(imp, node, ins, attrs):
    alpha = float(attrs.get("alpha", 0.01))
    if not 0.0 <= alpha <= 1.0:
        raise imp.unsupported(f" with alpha={alpha} outside [0, 1]")
    return _activation(LeakyReLU, negative_slope=lambda a: alpha)(imp, node, ins, attrs)


def _gelu(imp, node, ins, attrs):
    mode = attrs.get("approximate", "none")
    return _activation(GeLU, approximate=lambda a: mode == "tanh")(
        imp, node, ins, attrs
    )


def _erf(imp, node, ins, attrs):
    raise imp.unsupported(" outside the GELU pattern 0.5 * x * (1 + erf(x / sqrt(2)))")


def _pad(imp, node, ins, attrs):
    x = ins[0]
    if not isinstance(x, Sym):
        raise imp.unsupported(" on a constant")
    if attrs.get("mode", "constant") != "constant":
        raise imp.unsupported(f" with mode={attrs['mode']!r}")
    if imp.opset < 11:
        pads, value = attrs["pads"], attrs.get("value", 0.0)
    else:
        pads = np.ravel(_const(imp, ins[1], "pads")).tolist()
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            value = float(np.ravel(_const(imp, ins[2], "value"))[0])
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


HANDLERS = {
    "Add": _binary,
    "AveragePool": _pool,
    "BatchNormalization": _batch_norm,
    "Cast": _cast,
    "Concat": _concat,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Conv": _conv,
    "Div": _binary,
    "Dropout": _dropout,
    "Erf": _erf,
    "Flatten": _flatten,
    "Gather": _gather,
    "Gelu": _gelu,
    "Gemm": _gemm,
    "GlobalAveragePool": _global_average_pool,
    "Identity": _identity_op,
    "LeakyRelu": _leaky_relu,
    "MatMul": _matmul,
    "MaxPool": _pool,
    "Mul": _binary,
    "Pad": _pad,
    "Relu": _activation(ReLU),
    "Reshape": _reshape,
    "Shape": _shape,
    "Sigmoid": _activation(Sigmoid),
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Sub": _binary,
    "Tanh": _activation(Tanh),
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
}

#: Handlers that take symbolic inputs with a pending affine map as they are.
LAZY = {_binary, _identity_op, _dropout, _cast, _transpose, _shape}

#: ONNX op types ``from_onnx`` understands (Erf only inside the GELU pattern;
#: Shape, Gather, Concat... only on constants and shapes).
SUPPORTED_OPS = tuple(sorted(HANDLERS))
