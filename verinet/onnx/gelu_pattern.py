"""Recognise the exact GELU that ONNX exporters spell out with ``Erf``.

PyTorch (opset < 20) and other exporters write ``gelu(x)`` as
``0.5 * x * (1 + erf(x / sqrt(2)))`` in one of a few node orders:
``((x * (1 + erf)) * 0.5``, ``(x * 0.5) * (1 + erf)`` or
``x * (0.5 * (1 + erf))``, with ``x / sqrt(2)`` or ``x * (1 / sqrt(2))``. The
pattern is replaced by a single ``Gelu`` node so it imports as one
bound-aware ``GeLU`` layer (whose relaxation is far tighter than any
composition of the pieces would be).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper, numpy_helper

_SQRT2 = math.sqrt(2.0)


def _scalar(name, consts, producers):
    """The float value of a constant scalar input, or ``None``."""
    if name in consts:
        value = np.asarray(consts[name])
    else:
        node = producers.get(name)
        if node is None or node.op_type != "Constant":
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if "value" in attrs:
            value = numpy_helper.to_array(attrs["value"])
        elif "value_float" in attrs:
            value = np.asarray(attrs["value_float"])
        else:
            return None
    if value.size != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return float(value.ravel()[0])


def _close(value, target) -> bool:
    return value is not None and abs(value - target) <= 1e-5 * abs(target)


def _split(node, consts, producers):
    """``(data input, constant value)`` of a binary node with one constant."""
    a, b = node.input
    vb, va = _scalar(b, consts, producers), _scalar(a, consts, producers)
    if vb is not None and va is None:
        return a, vb
    if va is not None and vb is None and node.op_type in ("Mul", "Add"):
        return b, va
    return None, None


def fuse_gelu(nodes, consts, graph_outputs):
    """Return ``nodes`` with every exact-GELU ``Erf`` pattern fused to ``Gelu``.

    Args:
        nodes: the graph's nodes in topological order.
        consts: initializer values by name.
        graph_outputs: names of the graph outputs (never fused away).

    Returns:
        A new node list.
    """
    producers = {out: n for n in nodes for out in n.output}
    readers = {}
    for n in nodes:
        for name in n.input:
            readers.setdefault(name, []).append(n)

    def only_reader(name):
        found = readers.get(name, [])
        if len(found) != 1 or name in graph_outputs:
            return None
        return found[0]

    drop, replace = set(), {}
    for erf in nodes:
        if erf.op_type != "Erf" or id(erf) in drop:
            continue
        match = _match(erf, consts, producers, only_reader)
        if match is None:
            continue
        x, group, out = match
        last = max(group, key=nodes.index)
        for n in group:
            drop.add(id(n))
        replace[id(last)] = helper.make_node(
            "Gelu", [x], [out], name=f"{erf.name or 'gelu'}_fused"
        )
    result = []
    for n in nodes:
        if id(n) in replace:
            result.append(replace[id(n)])
        elif id(n) not in drop:
            result.append(n)
    return result


def _match(erf, consts, producers, only_reader):
    scale = producers.get(erf.input[0])
    if scale is None or scale.op_type not in ("Div", "Mul"):
        return None
    x, c = _split(scale, consts, producers)
    target = _SQRT2 if scale.op_type == "Div" else 1.0 / _SQRT2
    if x is None or not _close(c, target) or only_reader(scale.output[0]) is not erf:
        return None
    plus = only_reader(erf.output[0])
    if plus is None or plus.op_type != "Add":
        return None
    _, one = _split(plus, consts, producers)
    if not _close(one, 1.0):
        return None
    times = only_reader(plus.output[0])
    if times is None or times.op_type != "Mul":
        return None
    data, value = _split(times, consts, producers)
    if data == plus.output[0] and _close(value, 0.5):
        # x * (0.5 * (1 + erf(...)))
        last = only_reader(times.output[0])
        if (
            last is None
            or last.op_type != "Mul"
            or set(last.input)
            != {
                x,
                times.output[0],
            }
        ):
            return None
        return x, [scale, erf, plus, times, last], last.output[0]
    other = [n for n in times.input if n != plus.output[0]]
    if len(other) != 1:
        return None
    if other[0] == x:
        half = only_reader(times.output[0])
        if half is None or half.op_type != "Mul":
            return None
        data, value = _split(half, consts, producers)
        if data != times.output[0] or not _close(value, 0.5):
            return None
        return x, [scale, erf, plus, times, half], half.output[0]
    half = producers.get(other[0])
    if (
        half is None
        or half.op_type != "Mul"
        or only_reader(half.output[0]) is not times
    ):
        return None
    data, value = _split(half, consts, producers)
    if data != x or not _close(value, 0.5):
        return None
    return x, [half, scale, erf, plus, times], times.output[0]
