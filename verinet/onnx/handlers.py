"""ONNX operators for ``vn.from_onnx``: one handler per op type.

A handler takes ``(importer, node, inputs, attributes)`` and returns the
node's output values: numpy arrays when every input is constant (folded by
``verinet.onnx.constants``), else ``Sym`` values built from bound-aware
layers (2-D window ops in ``verinet.onnx.spatial``).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from verinet.layers import (
    Add,
    Dense,
    Flatten,
    GeLU,
    LeakyReLU,
    ReLU,
    Reshape,
    Sigmoid,
    Tanh,
)
from verinet.onnx.constants import (
    CONSTANT_HANDLERS,
    all_const,
    const_input,
    fold_binary,
    fold_cast,
    fold_flatten,
    fold_matmul,
    fold_reshape,
    fold_transpose,
)
from verinet.onnx.spatial import SPATIAL_HANDLERS
from verinet.onnx.values import BATCH, Sym, identity


def _identity_op(imp, node, ins, attrs):
    return [ins[0]]


def _dropout(imp, node, ins, attrs):
    if len(node.output) > 1 and node.output[1]:
        raise imp.unsupported(" with its mask output used")
    return [ins[0]]


def _cast(imp, node, ins, attrs):
    target = helper.tensor_dtype_to_np_dtype(attrs["to"])
    if not isinstance(ins[0], Sym):
        return [fold_cast(ins[0], target)]
    if target != np.float32:
        raise imp.unsupported(f" casting the data to {target}")
    return [ins[0]]


def _reshape(imp, node, ins, attrs):
    data, shape = ins[0], np.ravel(const_input(imp, ins[1], "target shape"))
    allowzero = attrs.get("allowzero", 0)
    if not isinstance(data, Sym):
        return [fold_reshape(data, shape, allowzero)]
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
        return [fold_flatten(data, axis)]
    if axis % data.rank != 1:
        raise imp.fail(f"only axis=1 keeps the batch axis (got axis={axis}).")
    if data.rank == 2:
        return [data]
    data = imp.ordered(data)
    return [imp.apply(imp.layer(Flatten), data, (0, 1))]


def _transpose(imp, node, ins, attrs):
    data = ins[0]
    if not isinstance(data, Sym):
        return [fold_transpose(data, attrs.get("perm"))]
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


def _binary(imp, node, ins, attrs):
    a, b = ins
    op = node.op_type
    if all_const(ins):
        return [fold_binary(op, a, b)]
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
    if all_const(ins):
        return [fold_matmul(a, b)]
    if not isinstance(a, Sym) or isinstance(b, Sym):
        raise imp.unsupported(" other than data @ constant matrix")
    if np.ndim(b) != 2:
        raise imp.fail(f"the constant operand has shape {np.shape(b)}; need 2-D.")
    return [_dense(imp, a, b, None)]


def _gemm(imp, node, ins, attrs):
    a, b = ins[0], np.asarray(const_input(imp, ins[1], "B"), dtype=np.float64)
    c = ins[2] if len(ins) > 2 else None
    if not isinstance(a, Sym) or a.rank != 2 or attrs.get("transA", 0):
        raise imp.unsupported(
            " other than (batch, features) data @ constant, A untransposed"
        )
    kernel = attrs.get("alpha", 1.0) * (b.T if attrs.get("transB", 0) else b)
    bias = None
    if c is not None:
        c = np.asarray(const_input(imp, c, "C"), dtype=np.float64) * attrs.get(
            "beta", 1.0
        )
        if c.ndim == 2 and c.shape[0] != 1:
            raise imp.fail(f"a per-row bias C of shape {c.shape} is not supported.")
        bias = np.broadcast_to(c.reshape(-1) if c.ndim else c, (kernel.shape[1],))
    return [_dense(imp, a, kernel, bias)]


def _batch_norm(imp, node, ins, attrs):
    x = ins[0]
    if not isinstance(x, Sym) or x.rank < 2:
        raise imp.unsupported(" on constant or 1-D data")
    if attrs.get("training_mode", 0) or any(node.output[1:]):
        raise imp.unsupported(" in training mode")
    scale, bias, mean, var = (
        np.asarray(const_input(imp, v, "statistics"), dtype=np.float64)
        for v in ins[1:5]
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


HANDLERS = {
    **CONSTANT_HANDLERS,
    **SPATIAL_HANDLERS,
    "Add": _binary,
    "BatchNormalization": _batch_norm,
    "Cast": _cast,
    "Div": _binary,
    "Dropout": _dropout,
    "Erf": _erf,
    "Flatten": _flatten,
    "Gelu": _gelu,
    "Gemm": _gemm,
    "Identity": _identity_op,
    "LeakyRelu": _leaky_relu,
    "MatMul": _matmul,
    "Mul": _binary,
    "Relu": _activation(ReLU),
    "Reshape": _reshape,
    "Sigmoid": _activation(Sigmoid),
    "Sub": _binary,
    "Tanh": _activation(Tanh),
    "Transpose": _transpose,
}

#: Handlers that take symbolic inputs with a pending affine map as they are.
LAZY = {_binary, _identity_op, _dropout, _cast, _transpose, HANDLERS["Shape"]}

#: ONNX op types ``from_onnx`` understands (Erf only inside the GELU pattern;
#: Shape, Gather, Concat... only on constants and shapes).
SUPPORTED_OPS = tuple(sorted(HANDLERS))
