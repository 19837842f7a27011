"""ONNX graph to Keras: the walk behind ``vn.from_onnx``.

Every ONNX value is either a constant (a numpy array, folded at import time:
weights and shape arithmetic) or a symbolic Keras tensor. The Keras model
takes inputs in the ONNX input's own layout (e.g. ``(C, H, W)``); a symbolic
value remembers how its Keras axes relate to the ONNX axes (``perm``), so a
``Transpose`` costs nothing and convolutions run channels_last on a permuted
view. A ``Permute`` layer is inserted only where a layout-sensitive op
(``Flatten``, ``Reshape``, ``MatMul``...) needs the ONNX order back.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import onnx
from onnx import helper, numpy_helper

from verinet.deploy.fold import UniqueNames
from verinet.errors import OnnxImportError
from verinet.layers import Conv2D, Dense, ElementwiseAffine, Permute
from verinet.onnx.gelu_pattern import fuse_gelu
from verinet.onnx.handlers import HANDLERS, LAZY, SUPPORTED_OPS
from verinet.onnx.values import Sym, identity


class _Names(UniqueNames):
    """Unique Keras layer names from ONNX node names (any characters)."""

    def base(self, name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip("_.") or "node"


def _attrs(node) -> dict:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        out[attr.name] = value
    return out


class Importer:
    """Walks the ONNX nodes in order, building Keras layers or folding."""

    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        graph = proto.graph
        self.opset = next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1
        )
        self.env = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        inputs = [v for v in graph.input if v.name not in self.env]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise OnnxImportError(
                "verinet imports ONNX graphs with one input and one output; this "
                f"one has {len(inputs)} inputs and {len(graph.output)} outputs."
            )
        self.input_info, self.output_name = inputs[0], graph.output[0].name
        self.input_shape, self.static_batch = graph_input_shape(self.input_info)
        self.names = _Names()
        self.nodes = fuse_gelu(list(graph.node), self.env, {self.output_name})
        self.node = None
        self.alias, self.readers = _alias_readers(self.nodes, self.output_name)
        self.linear = {}  # id(tensor) -> the Dense/Conv2D that produced it
        self.materialized = {}

    # -- errors ------------------------------------------------------------

    def fail(self, detail: str) -> OnnxImportError:
        node = self.node
        return OnnxImportError(
            f"ONNX node {node.name or '(unnamed)'!r} (op type {node.op_type}): {detail}"
        )

    def unsupported(self, detail: str = "") -> OnnxImportError:
        node = self.node
        return OnnxImportError(
            f"ONNX node {node.name or '(unnamed)'!r} (op type {node.op_type!r})"
            f"{detail} is not supported by vn.from_onnx. Supported op types: "
            f"{', '.join(SUPPORTED_OPS)}."
        )

    # -- building blocks ---------------------------------------------------

    def layer(self, cls, *args, suffix="", **kwargs):
        label = (self.node.name or self.node.op_type) + suffix
        return cls(*args, name=self.names(label), **kwargs)

    def to_perm(self, sym: Sym, perm: tuple) -> Sym:
        """``sym`` with its Keras axes in the order ``perm`` of ONNX axes."""
        if sym.perm == perm:
            return sym
        sym = self.data(sym)
        where = {axis: k for k, axis in enumerate(sym.perm)}
        dims = tuple(where[axis] for axis in perm[1:])
        layer = self.layer(Permute, dims, suffix="_permute")
        return Sym(layer(sym.tensor), perm)

    def ordered(self, sym: Sym) -> Sym:
        return self.to_perm(sym, identity(sym.rank))

    def affine(self, sym: Sym, scale, shift, source=None) -> Sym:
        """``sym * scale + shift`` with ONNX-broadcast constants (lazily).

        ``source`` is the ONNX name ``sym`` was read from; the map may later
        be folded into the layer before it only if every value on the way
        has a single reader.
        """
        sample = tuple(1 if d is None else d for d in sym.shape)
        params = []
        for c in (scale, shift):
            c = np.asarray(c, dtype=np.float64)
            try:
                grown = c.ndim > sym.rank or np.broadcast_shapes(c.shape, sample) != (
                    sample
                )
            except ValueError:
                grown = True
            if grown:
                raise self.fail(
                    f"a constant of shape {c.shape} does not broadcast onto the "
                    f"data of shape {sym.shape} without enlarging it."
                )
            c = c.reshape((1,) * (sym.rank - c.ndim) + c.shape)
            params.append(np.transpose(c, sym.perm)[0])
        new_scale, new_shift = params
        if sym.pending is not None:
            old_scale, old_shift = sym.pending
            new_scale, new_shift = (
                old_scale * new_scale,
                old_shift * new_scale + (new_shift),
            )
        single = sym.single and source is not None and self.read_once(source)
        return Sym(sym.tensor, sym.perm, (new_scale, new_shift), single)

    def read_once(self, name) -> bool:
        return self.readers.get(self._root(name), 0) == 1

    def data(self, sym: Sym, fold: bool = False) -> Sym:
        """``sym`` with its pending affine map applied (made a layer once).

        With ``fold`` (the caller is the value's only reader) a per-channel
        map right after a Dense/Conv2D of this import is folded into it.
        """
        if sym.pending is None:
            return sym
        key = (id(sym.tensor), id(sym.pending))
        if key not in self.materialized:
            tensor = self._apply_pending(sym, fold and sym.single)
            self.materialized[key] = Sym(tensor, sym.perm)
        return self.materialized[key]

    def _apply_pending(self, sym: Sym, fold: bool):
        scale, shift = sym.pending
        if np.all(scale == 1.0) and np.all(shift == 0.0):
            return sym.tensor
        channels = sym.tensor.shape[-1]
        shape = np.broadcast_shapes(scale.shape, shift.shape)
        per_channel = all(d == 1 for d in shape[:-1])
        layer = self.linear.get(id(sym.tensor))
        if fold and layer is not None and per_channel:
            # The linear layer's output feeds only this map: fold it in.
            kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
            s = np.broadcast_to(scale.reshape(-1), (channels,))
            t = np.broadcast_to(shift.reshape(-1), (channels,))
            layer.set_weights(
                [(kernel * s).astype(np.float32), (bias * s + t).astype(np.float32)]
            )
            return sym.tensor
        layer = self.layer(ElementwiseAffine, shape, suffix="_affine")
        out = layer(sym.tensor)
        layer.set_weights(
            [np.broadcast_to(p, shape).astype(np.float32) for p in (scale, shift)]
        )
        return out

    def apply(self, layer, sym: Sym, perm=None, weights=None) -> Sym:
        out = layer(self.data(sym).tensor)
        if weights is not None:
            layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
        if isinstance(layer, (Dense, Conv2D)):
            self.linear[id(out)] = layer
        return Sym(out, sym.perm if perm is None else perm)

    # -- the walk ----------------------------------------------------------

    def build(self):
        from verinet.models.model import Model

        inputs = keras.Input(
            self.input_shape, dtype="float32", name=self.names(self.input_info.name)
        )
        self.env[self.input_info.name] = Sym(
            inputs, identity(len(self.input_shape) + 1)
        )
        for node in self.nodes:
            self.node = node
            if node.domain not in ("", "ai.onnx"):
                raise self.unsupported(f" in domain {node.domain!r}")
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise self.unsupported()
            values = []
            for name in node.input:
                if name and name not in self.env:
                    raise self.fail(f"input {name!r} is not defined before it is used.")
                value = self.env[name] if name else None
                if isinstance(value, Sym) and handler not in LAZY:
                    value = self.data(value, fold=self.read_once(name))
                values.append(value)
            outputs = handler(self, node, values, _attrs(node))
            for name, value in zip(node.output, outputs, strict=False):
                if name:
                    self.env[name] = value
        out = self.env.get(self.output_name)
        if not isinstance(out, Sym):
            raise OnnxImportError(
                f"The graph output {self.output_name!r} does not depend on the input."
            )
        out = self.ordered(self.data(out, fold=self.read_once(self.output_name)))
        name = self.proto.graph.name or "onnx_model"
        return Model(inputs, out.tensor, name=self.names(name))

    def _root(self, name):
        while name in self.alias:
            name = self.alias[name]
        return name


_RELABEL_OPS = ("Identity", "Dropout", "Cast", "Transpose")


def _alias_readers(nodes, output_name):
    """Map relabelling outputs to their input, and count each root's readers.

    ``Identity``/``Dropout``/``Cast``/``Transpose`` pass data through, so
    their outputs are aliases of their input; ``readers[root]`` counts the
    other nodes (and the graph output) reading any alias of ``root``.
    """
    alias = {}
    for node in nodes:
        if node.op_type in _RELABEL_OPS and node.input and node.input[0]:
            alias[node.output[0]] = node.input[0]

    def root(name):
        while name in alias:
            name = alias[name]
        return name

    readers = {}
    for node in nodes:
        if node.op_type in _RELABEL_OPS or node.op_type == "Shape":
            continue
        for name in node.input:
            if name:
                readers[root(name)] = readers.get(root(name), 0) + 1
    readers[root(output_name)] = readers.get(root(output_name), 0) + 1
    return alias, readers


def graph_input_shape(info):
    """``(per-sample shape, static batch size or None)`` of a float32 graph input.

    Raises:
        OnnxImportError: for another element type, a rank below 2, or a
            non-batch axis without a fixed size.
    """
    tensor_type = info.type.tensor_type
    if tensor_type.elem_type not in (onnx.TensorProto.FLOAT,):
        raise OnnxImportError(
            f"The graph input {info.name!r} has element type "
            f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}; verinet "
            "imports float32 inputs."
        )
    dims = list(tensor_type.shape.dim)
    if len(dims) < 2:
        raise OnnxImportError(
            f"The graph input {info.name!r} needs a batch axis and at least one "
            f"more axis; it has rank {len(dims)}."
        )
    shape = []
    for i, dim in enumerate(dims[1:], start=1):
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            raise OnnxImportError(
                f"Axis {i} of the graph input {info.name!r} has no fixed size "
                f"({dim.dim_param or '?'}); only the batch axis may be dynamic."
            )
        shape.append(int(dim.dim_value))
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    return tuple(shape), batch
